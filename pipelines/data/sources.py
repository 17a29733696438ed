"""Data sources and tokenized data.

A source turns the recipe's `data:` section into a `datasets.DatasetDict` with splits "train" and
"validation" and one column "example" (text, image or audio), plus "label" when the data has classes.
Hugging Face `datasets` is the container throughout: hub ids and local builders come in through the
`hf` source, and tokenizing is a `Dataset.map` cached on disk under a key made of the tokenizer's
fingerprint and the data's, so a second run with the same tokenizer skips the work and a changed
tokenizer never reuses stale ids. A cache file that cannot be read (truncated by a crash, damaged
on disk) is deleted and rebuilt, with a warning: it is derived data.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.data.augment import AugmentConfig
from pipelines.data.streaming import TokenStream
from pipelines.io.safe import check_regular_file, read_text, remove_quietly, writing
from plugins.errors import DataError, did_you_mean
from tokenizers_ar.base import Layout, Tokenizer

logger = logging.getLogger(__name__)

TOKENIZED_FORMAT = 2  # bump when the cached representation changes (2: transparent images composited)


def cache_dir() -> Path:
    """Where tokenized data is cached: $TOKAR_CACHE_DIR, else ~/.cache/tokar."""
    return Path(os.environ.get("TOKAR_CACHE_DIR") or Path.home() / ".cache" / "tokar")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share held out for validation")
    seed: int = Field(0, ge=0, lt=2**64, description="seed of the train/validation split")
    num_proc: int | None = Field(None, ge=1, description="processes that tokenize in parallel")
    augment: AugmentConfig | None = Field(None, description="perturb training batches, e.g. "
                                          "{mutate: 0.2} (pipelines/data/augment.py)")


class Source(ABC):
    """Base class of data sources. `load()` returns splits "train" and "validation"."""

    name: ClassVar[str]
    Config: ClassVar[type[SourceConfig]] = SourceConfig
    modality: ClassVar[str | None] = None  # "text", "image"...; None when it depends on the data

    def __init__(self, config: SourceConfig | None = None, **settings: Any):
        self.config = config if config is not None else self.Config(**settings)

    @abstractmethod
    def load(self) -> datasets.DatasetDict: ...

    def _split(self, dataset: datasets.Dataset) -> datasets.DatasetDict:
        """Carve a validation split of `val_fraction` out of `dataset`, reproducibly."""
        if len(dataset) == 0:
            raise DataError(f"{self.name} source: the data set is empty; check the data path.")
        if self.config.val_fraction == 0 or len(dataset) < 2:
            return datasets.DatasetDict(train=dataset, validation=dataset.select([]))
        parts = dataset.train_test_split(test_size=self.config.val_fraction, seed=self.config.seed)
        return datasets.DatasetDict(train=parts["train"], validation=parts["test"])


# -- built-in sources -----------------------------------------------------------------------------
class TextConfig(SourceConfig):
    path: str = Field(description="a UTF-8 text file")
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (Python's codecs know utf-8, "
                             "latin-1, cp1252, utf-16...)") from None
        return value


class TextSource(Source):
    """One local text file, modelled as one stream. Validation is the last `val_fraction` of the
    file (nanoGPT's split), so it never overlaps training text."""

    name = "text"
    Config = TextConfig
    modality = "text"

    def load(self) -> datasets.DatasetDict:
        path = Path(self.config.path)
        if not path.exists():
            hint = ""
            if "TOKAR_DATA_DIR" not in os.environ:
                hint = " Set TOKAR_DATA_DIR to the folder holding the data (it fills ${data_dir})."
            raise DataError(f"text source: file not found: {path}.{hint}")
        try:
            text = read_text(path, "text source: data file", DataError, self.config.encoding)
        except DataError as exc:
            if "cannot be decoded" not in str(exc):
                raise
            raise DataError(f"{exc} Or set data.encoding to the file's encoding.") from exc.__cause__
        if not text:
            raise DataError(f"text source: {path} is empty; there is nothing to train on.")
        cut = int(len(text) * (1 - self.config.val_fraction))
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict({"example": [text[:cut]]}),
            validation=datasets.Dataset.from_dict({"example": [text[cut:]] if text[cut:] else []}),
        )


class HFConfig(SourceConfig):
    path: str = Field(
        description="hub id, a builder (text, json, csv, parquet, arrow, imagefolder) or, with "
        "from_disk, a folder written by Dataset.save_to_disk"
    )
    name: str | None = Field(None, description="configuration name of a hub data set")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    data_dir: str | None = None
    split: str = "train"
    validation_split: str | None = Field(None, description="use this split for validation")
    column: str = Field("text", description="the column holding the examples")
    label_column: str | None = Field(None, description="integer class labels, for conditioning")
    from_disk: bool = False
    streaming: bool = Field(False, description="read the training split lazily (larger than memory)")
    val_examples: int = Field(1000, ge=1, description="streaming: examples held out for validation")
    shuffle_buffer: int = Field(10_000, ge=1, description="streaming: examples in the shuffle buffer")


class HFSource(Source):
    """Any data set Hugging Face `datasets` can load: hub ids, local builders, saved datasets."""

    name = "hf"
    Config = HFConfig

    def load(self) -> datasets.DatasetDict:
        c = self.config
        if c.streaming:
            return self._load_streaming()
        train = self._load_split(c.split)
        if c.validation_split is not None:
            splits = datasets.DatasetDict(train=train, validation=self._load_split(c.validation_split))
        else:
            splits = self._split(train)
        return datasets.DatasetDict({k: self._select_columns(v) for k, v in splits.items()})

    def _load_streaming(self) -> datasets.DatasetDict:
        """Train: a lazy IterableDataset. Validation: `val_examples` examples, materialised,
        from `validation_split` or else from the head of the training stream (then skipped)."""
        c = self.config
        if c.from_disk:
            raise DataError("hf source: streaming reads builders and hub ids, not from_disk folders; "
                            "set data.streaming=false.")
        train = self._select_columns(self._load_split(c.split, streaming=True))
        if c.validation_split is not None:
            held_out = self._select_columns(self._load_split(c.validation_split, streaming=True))
        else:
            held_out, train = train.take(c.val_examples), train.skip(c.val_examples)
        rows = list(held_out.take(c.val_examples))
        features = train.features
        validation = (datasets.Dataset.from_list(rows, features=features) if features
                      else datasets.Dataset.from_list(rows))
        return {"train": train, "validation": validation}

    def _load_split(self, split: str, streaming: bool = False):
        c = self.config
        refuse_special_files(c.data_dir, c.data_files, c.path, source=self.name)
        try:
            if c.from_disk:
                loaded = datasets.load_from_disk(c.path)
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise DataError(
                            f"hf source: {c.path} has splits {sorted(loaded)}, not '{split}'."
                            f"{did_you_mean(split, loaded)} Set data.split."
                        )
                    loaded = loaded[split]
                return loaded
            return datasets.load_dataset(
                c.path, c.name, data_files=c.data_files, data_dir=c.data_dir, split=split,
                streaming=streaming,
            )
        except DataError:
            raise
        except (FileNotFoundError, ValueError, ConnectionError, OSError,
                datasets.exceptions.DatasetGenerationError) as exc:
            cause = f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)
            raise DataError(
                f"hf source: could not load '{c.path}' (split '{split}'): {cause}. Check "
                "data.path / data.data_files; offline, hub ids work only if already cached."
            ) from exc

    def _select_columns(self, ds):
        c = self.config
        wanted = {c.column: "example"}
        if c.label_column:
            wanted[c.label_column] = "label"
        columns = ds.column_names
        if columns is None:  # a stream that does not know its columns yet: peek at one example
            columns = list(next(iter(ds.take(1)), {}).keys())
        for column in wanted:
            if column not in columns:
                raise DataError(
                    f"hf source: column '{column}' not found; the data set has columns "
                    f"{columns}.{did_you_mean(column, columns)} Set data.column "
                    "(and data.label_column)."
                )
        ds = ds.select_columns(list(wanted))
        return ds.rename_columns({k: v for k, v in wanted.items() if k != v})


class DigitsSource(Source):
    """scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16, labels 0..9). It ships
    inside scikit-learn, so it works offline: the embedded default behind `make demo`."""

    name = "sklearn_digits"
    modality = "image"

    def load(self) -> datasets.DatasetDict:
        from sklearn.datasets import load_digits

        digits = load_digits()
        ds = datasets.Dataset.from_dict(
            {"example": digits.images.astype(np.uint8), "label": digits.target.astype(np.int64)}
        )
        return self._split(ds)


# -- tokenized data ------------------------------------------------------------------------------
@dataclass
class TokenData:
    """One split, tokenized: a flat stream of ids for seq layouts (documents back to back, EOS
    between them if the tokenizer has one), or one row per example for grid layouts. Continuous
    layouts hold float32 values with a last axis of `layout.dims`."""

    tokens: np.ndarray  # (N,) stream or (N, L) rows, int64; continuous: (N, D) or (N, L, D) float32
    labels: np.ndarray | None  # (N,) class labels for rows, or for the documents of a stream
    n_units: int  # data units (chars, subpixels...) the split holds
    layout: Layout
    # Labelled streams only: where each document starts in `tokens` and how long it is, so
    # that training windows stay inside one document and carry its label (audio clips).
    doc_starts: np.ndarray | None = None
    doc_lengths: np.ndarray | None = None

    @property
    def is_sequence(self) -> bool:
        """Sequence layout: one flat stream, trained on in windows (else one row per example)."""
        return self.layout.kind == "seq"

    @property
    def n_tokens(self) -> int:
        """Positions (tokens), whatever each holds."""
        return int(self.tokens.size // max(1, self.layout.dims))

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize(splits: datasets.DatasetDict, tokenizer: Tokenizer, num_proc: int | None = None,
             shuffle_buffer: int = 10_000) -> dict[str, Any]:
    """Encode every split with `tokenizer`, reusing the on-disk cache when the key matches.
    A streamed split (an IterableDataset) becomes a TokenStream, encoded lazily while training."""

    root = cache_dir() / "tokenized"
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for name, ds in splits.items():
        if isinstance(ds, datasets.IterableDataset):
            out[name] = TokenStream(ds, tokenizer, tokenizer.layout, shuffle_buffer)
        else:
            out[name] = _tokenize_split(ds, name, tokenizer, root, num_proc)
    return out


def _tokenize_split(ds: datasets.Dataset, split: str, tokenizer: Tokenizer, root: Path,
                    num_proc: int | None = None) -> TokenData:
    layout = tokenizer.layout
    value_shape, dtype = ((layout.dims,), np.float32) if layout.continuous else ((), np.int64)
    if len(ds) == 0:
        empty = np.zeros((0, *value_shape) if layout.kind == "seq" else (0, layout.length, *value_shape),
                         dtype=dtype)
        return TokenData(empty, None, 0, layout)
    key = hashlib.sha256(
        f"{TOKENIZED_FORMAT}|{tokenizer.fingerprint()}|{ds._fingerprint}|{split}".encode()
    ).hexdigest()[:20]

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = [x.reshape(-1).numpy() for x in tokenizer.encode_batch(batch["example"])]
        units = [tokenizer.count_units(x) for x in batch["example"]]
        return {"ids": ids, "units": units}

    cache_file = root / f"{key}.arrow"

    def tokenize_once(reuse: bool) -> TokenData:
        mapped = ds.map(
            encode,
            batched=True,
            batch_size=256,
            remove_columns=["example"],
            cache_file_name=str(cache_file),
            new_fingerprint=key,
            load_from_cache_file=reuse,
            num_proc=num_proc if num_proc and num_proc > 1 and len(ds) >= num_proc else None,
            desc=f"tokenizing {split}",
        )
        return _token_data(mapped, tokenizer, split)

    if any(root.glob(f"{key}*.arrow")):
        try:
            return tokenize_once(reuse=True)
        except (pa.ArrowException, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            # Derived data: a cache file a crash cut short (or a damaged disk) is rebuilt, not fatal.
            logger.warning("tokenized cache %s is unreadable (%s: %.200s); rebuilding it", cache_file,
                           type(exc).__name__, exc)
            for stale in root.glob(f"{key}*"):
                remove_quietly(stale)
    with writing(cache_file):  # a full disk while caching: one error naming the cache file
        return tokenize_once(reuse=False)


def _token_data(mapped: datasets.Dataset, tokenizer: Tokenizer, split: str) -> TokenData:
    layout = tokenizer.layout
    value_shape, dtype = ((layout.dims,), np.float32) if layout.continuous else ((), np.int64)
    table = mapped.data
    flat = table.column("ids").combine_chunks().flatten().to_numpy().astype(dtype)
    if layout.continuous:
        if not np.isfinite(flat).all():  # the tokenizer names the example; this is a last guard
            raise DataError(f"the tokenized {split} split holds NaN or infinite values.")
        flat = flat.reshape(-1, layout.dims)
    n_units = int(np.sum(table.column("units").to_numpy()))
    labels = None
    if "label" in mapped.column_names:
        labels = table.column("label").to_numpy().astype(np.int64)
    if layout.kind == "seq":
        eos = tokenizer.eos_id
        lengths = table.column("ids").combine_chunks().value_lengths().to_numpy().astype(np.int64)
        lengths //= max(1, layout.dims)  # positions, not numbers
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if eos is not None and len(mapped) > 1:
            flat = np.insert(flat, starts[1:], eos)
            starts = starts + np.arange(len(starts))  # each later document follows an EOS
        if labels is None:
            return TokenData(flat, None, n_units, layout)
        return TokenData(flat, labels, n_units, layout, doc_starts=starts, doc_lengths=lengths)
    return TokenData(flat.reshape(len(mapped), layout.length, *value_shape), labels, n_units, layout)


def refuse_special_files(*locations: Any, source: str) -> None:
    """Refuse FIFOs, devices and sockets among local data paths (files, folders, lists of files)
    before a reader opens one: a FIFO blocks its reader forever, /dev/zero never ends."""
    for location in locations:
        if isinstance(location, dict):
            refuse_special_files(*location.values(), source=source)
            continue
        if isinstance(location, list | tuple):
            refuse_special_files(*location, source=source)
            continue
        if not isinstance(location, str) or not os.path.exists(location):
            continue  # hub ids, builder names, globs: nothing local to check here
        if os.path.isdir(location):
            for folder, _, names in os.walk(location):
                for name in names:
                    full = os.path.join(folder, name)
                    if os.path.exists(full) and not os.path.isfile(full):
                        check_regular_file(full, f"{source} source: data file")
        else:
            check_regular_file(location, f"{source} source: data file")


def class_names(split) -> list[str] | None:
    """The names of a split's classes, when its "label" column is a ClassLabel."""
    feature = (split.features or {}).get("label")
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
