"""From tokenized splits to training and validation batches, in an order fixed by the seed alone.

Training order is a fresh permutation per epoch drawn from (seed, epoch), never from the global
RNG, so a run resumed at step s sees exactly the batches an uninterrupted run would, and every
process of a multi-process run agrees on it: Accelerate then hands process i the batches i,
i + P, i + 2P... of that order, which is why P processes with batch B train exactly like one
process with batch P * B.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from pipelines.data.sources import TokenData
from plugins.errors import DataError

logger = logging.getLogger(__name__)


class Windows(Dataset):
    """Windows of `seq_len` consecutive tokens of a stream (nanoGPT's random crops): every start
    position for training, or the fixed `starts` for evaluation."""

    def __init__(self, stream: np.ndarray, seq_len: int, starts: np.ndarray | None = None):
        self.stream = torch.from_numpy(stream)
        self.seq_len = seq_len
        self.starts = starts

    def __len__(self) -> int:
        if self.starts is not None:
            return len(self.starts)
        return max(0, len(self.stream) - self.seq_len + 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[i]) if self.starts is not None else i
        return {"ids": self.stream[start : start + self.seq_len]}


class DocWindows(Dataset):
    """Windows of `seq_len` tokens that lie inside one document of a labelled stream, each with
    its document's label: a window never mixes two clips, so its class is never wrong. Documents
    shorter than `seq_len` give no windows. Window w is the w-th (document, offset) pair in
    stream order; `windows` selects some of them (evaluation)."""

    def __init__(self, data: TokenData, seq_len: int, windows: np.ndarray | None = None):
        self.stream = torch.from_numpy(data.tokens)
        self.labels = torch.from_numpy(data.labels)
        self.seq_len = seq_len
        self.doc_starts = data.doc_starts
        counts = np.maximum(data.doc_lengths - seq_len + 1, 0)  # windows per document
        self.first = np.concatenate([[0], np.cumsum(counts)])  # first window of each document
        self.windows = windows

    @property
    def total(self) -> int:
        return int(self.first[-1])

    def __len__(self) -> int:
        return self.total if self.windows is None else len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w = int(self.windows[i]) if self.windows is not None else i
        doc = int(np.searchsorted(self.first, w, side="right")) - 1
        start = int(self.doc_starts[doc]) + w - int(self.first[doc])
        return {"ids": self.stream[start : start + self.seq_len], "label": self.labels[doc]}

    def covering(self) -> np.ndarray:
        """Non-overlapping windows that cover each document (as far as whole windows go)."""
        return np.concatenate([np.arange(a, b, self.seq_len) for a, b in
                               zip(self.first[:-1], self.first[1:], strict=True)] + [[]]).astype(np.int64)


class Rows(Dataset):
    """One fixed-length row of tokens per example (grids), with its class label if any; `rows`
    selects some examples (evaluation)."""

    def __init__(self, data: TokenData, rows: np.ndarray | None = None):
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])  # noqa: E731
        self.tokens = torch.from_numpy(np.ascontiguousarray(pick(data.tokens)))
        self.labels = torch.from_numpy(pick(data.labels)) if data.labels is not None else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"ids": self.tokens[i]}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


class EpochSampler(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _labelled_stream(data: TokenData) -> bool:
    return data.is_sequence and data.labels is not None and data.doc_starts is not None


def train_dataset(data: TokenData, seq_len: int) -> Dataset:
    if _labelled_stream(data):
        ds = DocWindows(data, seq_len)
        short = int((data.doc_lengths < seq_len).sum())
        if short and len(ds):
            logger.warning("%d of %d training documents are shorter than train.seq_len=%d and are "
                           "not trained on (windows stay inside one labelled document); lower "
                           "train.seq_len to use them.", short, len(data.doc_lengths), seq_len)
        if len(ds) == 0:
            raise DataError(
                f"no training document is {seq_len} tokens long, so there is no window of "
                f"train.seq_len={seq_len} inside one (labelled documents are not joined); lower "
                "train.seq_len."
            )
        return ds
    ds = Windows(data.tokens, seq_len) if data.is_sequence else Rows(data)
    if len(ds) == 0:
        raise DataError(
            f"the training split has {data.n_tokens} tokens: too few for one training window of "
            f"{seq_len}; use more data or a smaller train.seq_len / prior.block_size."
        )
    return ds


def eval_dataset(data: TokenData, seq_len: int, batch_size: int, batches: int | None,
                 num_processes: int = 1) -> Dataset:
    """A fixed validation set, the same at every evaluation so that numbers compare, and the
    same for any number of processes (`batches` counts global batches): evenly spread windows
    of a stream, a fixed-seed uniform sample of the rows of a grid split."""
    batch_size *= num_processes
    if _labelled_stream(data):
        docs = DocWindows(data, seq_len)
        if batches is None:
            return DocWindows(data, seq_len, docs.covering())
        n = min(docs.total, batches * batch_size)
        return DocWindows(data, seq_len, np.linspace(0, max(docs.total - 1, 0), num=n).astype(np.int64))
    if data.is_sequence:
        n_windows = max(0, len(data.tokens) - seq_len + 1)
        if batches is None:  # non-overlapping windows covering the split
            starts = np.arange(0, n_windows, seq_len)
        else:  # evenly spread windows
            starts = np.linspace(0, max(n_windows - 1, 0), num=min(n_windows, batches * batch_size))
        return Windows(data.tokens, seq_len, starts.astype(np.int64))
    if batches is None or batches * batch_size >= len(data):
        return Rows(data)
    return Rows(data, eval_rows(len(data), batches * batch_size))


EVAL_SEED = 0  # one fixed subsample for every run: validation figures compare across runs


def eval_rows(n_rows: int, n: int) -> np.ndarray:
    """A uniform sample of n of n_rows examples, drawn with a fixed seed and kept in data order.
    Never a prefix: held-out splits are often sorted (binarized MNIST's test set by digit), and
    the first rows would be a biased estimate."""
    return np.sort(np.random.default_rng(EVAL_SEED).choice(n_rows, size=n, replace=False))


def loader(ds: Dataset, batch_size: int, sampler: Sampler | None = None, workers: int = 0,
           drop_last: bool = False) -> DataLoader:
    # A private generator: creating an iterator then never draws from the global RNG, which
    # would shift dropout masks between an interrupted and an uninterrupted run.
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


class TrainBatches:
    """Training batches forever, epoch after epoch, starting after `consumed` batches."""

    def __init__(self, accelerator: Accelerator, prepared: DataLoader, sampler: EpochSampler):
        self.accelerator, self.loader, self.sampler = accelerator, prepared, sampler
        if len(prepared) == 0:
            raise DataError(
                "not one full training batch per process: lower train.batch_size or use more data."
            )

    @property
    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def iterate(self, consumed: int) -> Iterator[dict[str, torch.Tensor]]:
        epoch, offset = divmod(consumed, self.batches_per_epoch)
        while True:
            # Through the prepared loader: Accelerate's loader sets its sampler's epoch from its
            # own iteration count whenever it is iterated, which would override ours.
            batches = (self.accelerator.skip_first_batches(self.loader, offset) if offset
                       else self.loader)
            batches.set_epoch(epoch)
            yield from batches
            epoch, offset = epoch + 1, 0
