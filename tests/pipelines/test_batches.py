"""Validation batches: a fixed-seed uniform subsample of the rows, never a prefix of the split."""

from __future__ import annotations

import numpy as np

from pipelines.data import batches
from pipelines.data.sources import TokenData
from plugins.shared import Layout

# binarized MNIST's test split is sorted by digit: 980 zeros, 1135 ones, ...
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def sorted_split() -> TokenData:
    labels = np.repeat(np.arange(10), MNIST_TEST_COUNTS)
    tokens = np.arange(len(labels))[:, None].repeat(4, 1)  # row i holds i: which rows were taken
    return TokenData(tokens, labels, tokens.size, Layout.grid(2, 2))


def test_the_validation_subsample_has_the_class_mix_of_a_sorted_split():
    data = sorted_split()
    ds = batches.eval_dataset(data, seq_len=4, batch_size=64, batches=20)
    assert len(ds) == 1280
    taken = np.array([int(ds[i]["ids"][0]) for i in range(len(ds))])
    assert len(set(taken.tolist())) == 1280 and taken.max() > 9000  # distinct rows, all over
    mix = np.bincount(ds.labels.numpy(), minlength=10) / len(ds)
    split_mix = np.array(MNIST_TEST_COUNTS) / sum(MNIST_TEST_COUNTS)
    assert np.abs(mix - split_mix).max() < 0.03, (mix, split_mix)  # 4 standard errors
    prefix = np.bincount(data.labels[:1280], minlength=10) / 1280  # what the first rows give
    assert np.abs(prefix - split_mix).max() > 0.3


def test_the_subsample_is_fixed_and_the_same_for_any_number_of_processes():
    data = sorted_split()
    one = batches.eval_dataset(data, 4, batch_size=64, batches=10)
    two = batches.eval_dataset(data, 4, batch_size=32, batches=10, num_processes=2)
    assert np.array_equal(one.tokens.numpy(), two.tokens.numpy())
    whole = batches.eval_dataset(data, 4, batch_size=64, batches=None)
    assert len(whole) == len(data)
    assert len(batches.eval_dataset(data, 4, batch_size=64, batches=1000)) == len(data)
