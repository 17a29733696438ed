"""Audio data sets as sources: each example is something the mulaw tokenizer reads.

- `fsdd`: the Free Spoken Digit Dataset (Jackson et al.), WAVs named {digit}_{speaker}_{index}.wav,
  with its official split (index 0-4 test, 5-49 train) and digit or speaker labels.
- `wav_folder`: every audio file under a folder (labels from sub-folder names, optionally).
- `hf_audio`: Hugging Face audio data sets, hub ids and the `audiofolder` builder. The Audio
  column is read undecoded ({"bytes", "path"}, or file paths for audiofolder) and decoded by
  soundfile in the tokenizer: datasets' own audio codec needs torchcodec and FFmpeg, which
  CPU-only installs often lack (datasets 5 needs it even to build an audiofolder split).

Examples are file paths (or undecoded dicts), not waveforms: splits stay small and the tokenized
cache does the decoding once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import datasets
from pydantic import Field

from pipelines.data.sources import HFConfig, HFSource, Source, SourceConfig, refuse_special_files
from pipelines.io.safe import check_regular_file
from plugins.errors import DataError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}  # what soundfile reads
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


def require_folder(root: Path, what: str, fix: str) -> None:
    """DataError "WHAT ROOT is a file, not a folder / not found; FIX" unless root is a folder."""
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "not found"
        raise DataError(f"{what} {root} {problem}; {fix}")


def _dataset(paths: list[Path], labels: list[int] | None,
             names: list[str] | None = None) -> datasets.Dataset:
    columns: dict[str, list] = {"example": [str(p) for p in paths]}
    features = {"example": datasets.Value("string")}
    if labels is not None:
        columns["label"] = labels
        # names travel with the labels into the run (classes.json): `tokar sample --class female`
        features["label"] = datasets.ClassLabel(names=names) if names else datasets.Value("int64")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


class FSDDConfig(SourceConfig):
    path: str = Field(description="the recordings folder, e.g. ${data_dir}/fsdd/recordings")
    label: Literal["digit", "speaker", "none"] = Field("digit", description="class label to carry")
    validation: Literal["test", "split"] = Field(
        "test", description="the official test split (index 0-4), or val_fraction of train")
    speakers: list[str] | None = Field(None, description="keep only these speakers")


class FSDDSource(Source):
    name = "fsdd"
    Config = FSDDConfig
    modality = "audio"

    def load(self) -> datasets.DatasetDict:
        c = self.config
        root = Path(c.path)
        require_folder(root, "fsdd source:", "set data.path to the FSDD folder of recordings (the "
                       "reference copy is ${data_dir}/fsdd/recordings).")
        rows = []
        for p in sorted(root.glob("*.wav")):
            check_regular_file(p, "fsdd source: recording")  # a FIFO would block the reader
            m = FSDD_NAME.match(p.stem)
            if m is None:
                raise DataError(f"fsdd source: {p.name} is not named {{digit}}_{{speaker}}_{{index}}"
                                ".wav; is data.path the FSDD recordings folder?")
            rows.append((p, int(m[1]), m[2], int(m[3])))
        if c.speakers is not None:
            rows = [r for r in rows if r[2] in c.speakers]
        if not rows:
            raise DataError(f"fsdd source: no recordings in {root}"
                            + (f" for speakers {c.speakers}." if c.speakers else "."))
        speakers = sorted({r[2] for r in rows})  # speaker label = index in sorted names

        def split(keep) -> datasets.Dataset:
            part = [r for r in rows if keep(r[3])]
            labels = None if c.label == "none" else \
                [r[1] if c.label == "digit" else speakers.index(r[2]) for r in part]
            names = [str(d) for d in range(10)] if c.label == "digit" else speakers
            return _dataset([r[0] for r in part], labels, names)

        if c.validation == "split":
            return self._split(split(lambda i: i >= 5))
        return datasets.DatasetDict(train=split(lambda i: i >= 5), validation=split(lambda i: i < 5))


class WavFolderConfig(SourceConfig):
    path: str = Field(description="a folder of audio files (.wav, .flac, .ogg), searched recursively")
    labels_from_folders: bool = Field(False, description="label = index of the sorted sub-folder name")


class WavFolderSource(Source):
    name = "wav_folder"
    Config = WavFolderConfig
    modality = "audio"

    def load(self) -> datasets.DatasetDict:
        root = Path(self.config.path)
        require_folder(root, "wav_folder source:", "set data.path to a folder of audio files.")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        for f in files:  # a FIFO or device among them would block (or never end) the reader
            check_regular_file(f, "wav_folder source: audio file")
        if not files:
            raise DataError(f"wav_folder source: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) "
                            f"under {root}.")
        labels, names = None, None
        if self.config.labels_from_folders:
            names = sorted({p.parent.relative_to(root).as_posix() for p in files})
            labels = [names.index(p.parent.relative_to(root).as_posix()) for p in files]
        return self._split(_dataset(files, labels, names))


class HFAudioConfig(HFConfig):
    path: str = Field(description="a hub id, or `audiofolder` with data_dir / data_files")
    column: str = Field("audio", description="the Audio column")


class HFAudioSource(HFSource):
    name = "hf_audio"
    Config = HFAudioConfig
    modality = "audio"

    def _load_split(self, split: str, streaming: bool = False):
        c = self.config
        if c.path != "audiofolder" or c.data_dir is None:
            return super()._load_split(split, streaming)
        # The audiofolder builder encodes every file through torchcodec while it builds the
        # split; declaring the audio column as plain paths (and the folder labels ourselves,
        # as the builder would infer them) skips that, and soundfile reads the paths later.
        root = Path(c.data_dir)
        require_folder(root, "hf_audio source: data_dir", "set data.data_dir.")
        refuse_special_files(c.data_dir, source=self.name)
        features = {c.column: datasets.Value("string")}
        if c.label_column:
            names = sorted({p.parent.name for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES})
            features[c.label_column] = datasets.ClassLabel(names=names)
        try:
            return datasets.load_dataset("audiofolder", data_dir=c.data_dir, split=split, streaming=streaming,
                                         features=datasets.Features(features),
                                         drop_labels=not c.label_column)
        except (FileNotFoundError, ValueError, OSError,
                datasets.exceptions.DatasetGenerationError) as exc:
            raise DataError(f"hf_audio source: could not load audiofolder {root} (split '{split}'): "
                            f"{exc}.") from exc

    def _select_columns(self, ds):
        column = self.config.column
        features = ds.features or {}
        feature = features.get(column)
        if feature is not None and not isinstance(feature, datasets.Audio) and \
                getattr(feature, "dtype", None) != "string":
            raise DataError(f"hf_audio source: column '{column}' holds {feature}, not audio or "
                            "audio file paths; set data.column to the Audio column.")
        if isinstance(feature, datasets.Audio):  # undecoded: soundfile reads the bytes, no torchcodec
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        return super()._select_columns(ds)
