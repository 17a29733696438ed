from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from pipelines.data import sources
from pipelines.data.sources import HFSource, TextSource, tokenize
from plugins.errors import DataError
from tokenizers_ar import CharTokenizer, PixelTokenizer


def test_text_source_splits_the_end_off(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcdefghij")
    splits = TextSource(path=str(f), val_fraction=0.2).load()
    assert list(splits["train"]["example"]) == ["abcdefgh"]
    assert list(splits["validation"]["example"]) == ["ij"]


def test_text_source_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nope.txt"):
        TextSource(path=str(tmp_path / "nope.txt")).load()
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        TextSource(path=str(tmp_path / "empty.txt")).load()


def test_tokenized_cache_is_keyed_by_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path / "cache"))
    splits = datasets.DatasetDict(train=datasets.Dataset.from_dict({"example": ["hello", "world"]}),
                                  validation=datasets.Dataset.from_dict({"example": ["low"]}))
    a = CharTokenizer()
    a.fit(["helowrd"])
    first = tokenize(splits, a)
    files = sorted((tmp_path / "cache" / "tokenized").glob("*.arrow"))
    assert len(files) == 2
    assert first["train"].tokens.tolist() == a.encode("helloworld").tolist()
    assert first["train"].n_units == 10 and first["validation"].n_tokens == 3

    calls = []
    original = a.encode
    monkeypatch.setattr(a, "encode", lambda x: calls.append(x) or original(x))
    again = tokenize(splits, a)  # same tokenizer and data: read from the cache
    assert calls == [] and np.array_equal(again["train"].tokens, first["train"].tokens)

    b = CharTokenizer(unk=True)  # a different tokenizer never reuses those ids
    b.fit(["helowrd"])
    tokenize(splits, b)
    assert len(sorted((tmp_path / "cache" / "tokenized").glob("*.arrow"))) == 4


def hf_text_files(tmp_path):
    d = tmp_path / "txt"
    d.mkdir()
    (d / "a.txt").write_text("first line\nsecond line\n")
    return d


def test_hf_source_text_builder(tmp_path):
    d = hf_text_files(tmp_path)
    src = HFSource(path="text", data_files=str(d / "a.txt"), val_fraction=0.5)
    splits = src.load()
    assert splits["train"].column_names == ["example"]
    lines = [*splits["train"]["example"], *splits["validation"]["example"]]
    assert sorted(lines) == ["first line", "second line"]


def test_hf_source_parquet_arrow_and_disk_with_labels(tmp_path):
    ds = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(10)], "y": list(range(10))})
    ds.to_parquet(str(tmp_path / "d.parquet"))
    got = HFSource(path="parquet", data_files=str(tmp_path / "d.parquet"), column="sentence",
                   label_column="y", val_fraction=0.2).load()
    assert len(got["train"]) == 8 and set(got["train"].column_names) == {"example", "label"}

    dd = datasets.DatasetDict(train=ds, test=ds.select(range(3)))
    dd.save_to_disk(str(tmp_path / "saved"))
    got = HFSource(path=str(tmp_path / "saved"), from_disk=True, column="sentence",
                   validation_split="test").load()
    assert len(got["train"]) == 10 and len(got["validation"]) == 3
    arrow = next((tmp_path / "saved" / "train").glob("*.arrow"))
    got = HFSource(path="arrow", data_files=str(arrow), column="sentence", val_fraction=0.1).load()
    assert len(got["train"]) == 9


def test_hf_source_imagefolder_feeds_the_pixel_tokenizer(tmp_path):
    root = tmp_path / "imgs"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 5), 40 * i, dtype=np.uint8)).save(root / label / f"{i}.png")
    splits = HFSource(path="imagefolder", data_dir=str(root), column="image",
                      label_column="label", val_fraction=0.0).load()
    tok = PixelTokenizer(levels=256)
    tok.fit(splits["train"]["example"])
    tokens = tokenize(splits, tok)["train"]
    assert tokens.tokens.shape == (6, 20) and sorted(set(tokens.labels.tolist())) == [0, 1]


def test_hf_source_errors(tmp_path):
    d = hf_text_files(tmp_path)
    with pytest.raises(DataError, match=r"column 'txt' not found; .*\['text'\]. Did you mean 'text'\?"):
        HFSource(path="text", data_files=str(d / "a.txt"), column="txt").load()
    with pytest.raises(DataError, match="could not load"):
        HFSource(path="text", data_files=str(tmp_path / "missing.txt")).load()
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="could not load 'text'"):
        HFSource(path="text", data_files=str(tmp_path / "empty.txt")).load()
    with pytest.raises(DataError, match="the data set is empty"):
        HFSource(path="text")._split(datasets.Dataset.from_dict({"example": []}))


def test_digits_source_is_embedded_and_labelled():
    splits = sources.DigitsSource(val_fraction=0.1).load()
    assert len(splits["train"]) + len(splits["validation"]) == 1797
    img = np.asarray(splits["train"][0]["example"])
    assert img.shape == (8, 8) and img.max() <= 16
