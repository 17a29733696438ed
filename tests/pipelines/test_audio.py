"""Audio data: FSDD, WAV folders, HF audiofolder; labelled windows of clips of different length;
the whole mu-law pipeline (train, sample WAVs, score in bits per sample) for wavenet, lstm, gpt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pipelines.data import batches
from pipelines.data.audio import FSDDSource, HFAudioSource, WavFolderSource
from pipelines.data.sources import tokenize
from pipelines.pipeline import Pipeline
from plugins.errors import DataError
from tests.conftest import DATA_DIR, ROOT
from tokenizers_ar.mulaw import MuLawTokenizer

FSDD = DATA_DIR / "fsdd" / "recordings"
FILES = ["3_george_0.wav", "3_george_7.wav", "7_jackson_1.wav", "7_jackson_12.wav", "1_theo_30.wav"]


@pytest.fixture
def wav_dir(tmp_path):
    for name in FILES:
        digit = name[0]
        (tmp_path / "wavs" / digit).mkdir(parents=True, exist_ok=True)
        shutil.copy(FSDD / name, tmp_path / "wavs" / digit / name)
    return tmp_path / "wavs"


def test_fsdd_official_split_and_labels():
    splits = FSDDSource(path=str(FSDD)).load()
    assert (len(splits["train"]), len(splits["validation"])) == (2700, 300)
    names = [p.rsplit("/", 1)[1] for p in splits["validation"]["example"]]
    assert all(int(n.split("_")[2][:-4]) < 5 for n in names)
    assert splits["validation"]["label"] == [int(n[0]) for n in names]
    speakers = FSDDSource(path=str(FSDD), label="speaker", speakers=["george", "theo"]).load()
    assert set(speakers["train"]["label"]) == {0, 1} and len(speakers["train"]) == 900
    assert "label" not in FSDDSource(path=str(FSDD), label="none").load()["train"].column_names


def test_fsdd_errors(tmp_path):
    with pytest.raises(DataError, match="nope not found"):
        FSDDSource(path=str(tmp_path / "nope")).load()
    (tmp_path / "hello.wav").write_bytes(b"")
    with pytest.raises(DataError, match="hello.wav is a file, not a folder"):  # not "not found"
        FSDDSource(path=str(tmp_path / "hello.wav")).load()
    with pytest.raises(DataError, match=r"not named \{digit\}"):
        FSDDSource(path=str(tmp_path)).load()


def test_wav_folder_with_folder_labels(wav_dir):
    splits = WavFolderSource(path=str(wav_dir), val_fraction=0.0, labels_from_folders=True).load()
    assert len(splits["train"]) == 5
    by_name = dict(zip([p.rsplit("/", 1)[1] for p in splits["train"]["example"]],
                       splits["train"]["label"], strict=True))
    assert [by_name[n] for n in ("1_theo_30.wav", "3_george_0.wav", "7_jackson_1.wav")] == [0, 1, 2]
    tok = MuLawTokenizer(sample_rate=8000)
    ids = tok.encode(splits["train"]["example"][0])
    assert ids.numel() == sf.info(splits["train"]["example"][0]).frames


def test_wav_folder_empty(tmp_path):
    with pytest.raises(DataError, match="no audio files"):
        WavFolderSource(path=str(tmp_path)).load()


def test_hf_audiofolder_decoded_by_soundfile(wav_dir):
    """datasets' audiofolder builder; the Audio column is read undecoded (no torchcodec) and
    the tokenizer decodes it, to the same ids as the files themselves."""
    source = HFAudioSource(path="audiofolder", data_dir=str(wav_dir), label_column="label",
                           val_fraction=0.0)
    splits = source.load()
    train = splits["train"]
    assert len(train) == 5 and sorted(train["label"]) == [0, 1, 1, 2, 2]
    tok = MuLawTokenizer(sample_rate=8000)
    for example, label in zip(train["example"], train["label"], strict=True):
        name = example.rsplit("/", 1)[-1]
        assert label == "137".index(name[0])  # ClassLabel of the sorted folder names
        assert torch.equal(tok.encode(example), tok.encode(wav_dir / name[0] / name))


def test_hf_audio_column_read_undecoded(wav_dir, tmp_path):
    """A data set with a real Audio column (as from the hub): cast to undecoded bytes/path."""
    import datasets

    files = sorted(str(p) for p in wav_dir.rglob("*.wav"))
    rows = [{"bytes": Path(f).read_bytes(), "path": f} for f in files]
    # an Audio column without torchcodec: cast the stored struct (encoding would need it)
    ds = datasets.Dataset.from_dict({"audio": rows}).cast_column("audio", datasets.Audio())
    assert isinstance(ds.features["audio"], datasets.Audio)
    ds.save_to_disk(tmp_path / "saved")
    train = HFAudioSource(path=str(tmp_path / "saved"), from_disk=True, val_fraction=0.0).load()["train"]
    tok = MuLawTokenizer(sample_rate=8000)
    for example, f in zip(train["example"], files, strict=True):
        assert set(example) == {"bytes", "path"} and example["bytes"]
        assert torch.equal(tok.encode(example), tok.encode(f))


def test_hf_audio_rejects_non_audio_column(tmp_path):
    (tmp_path / "a.json").write_text('{"n": 1}\n{"n": 2}\n')
    with pytest.raises(DataError, match="column 'n' holds"):
        HFAudioSource(path="json", data_files=str(tmp_path / "a.json"), column="n").load()


def test_clips_of_different_length_train_in_labelled_windows(wav_dir):
    splits = WavFolderSource(path=str(wav_dir), val_fraction=0.0, labels_from_folders=True).load()
    tok = MuLawTokenizer(sample_rate=8000)
    data = tokenize(splits, tok)["train"]
    lengths = [tok.encode(x).numel() for x in splits["train"]["example"]]
    assert data.doc_lengths.tolist() == lengths and len(set(lengths)) == 5
    seq_len = 1500
    ds = batches.train_dataset(data, seq_len)
    assert len(ds) == sum(max(n - seq_len + 1, 0) for n in lengths)
    # every window lies inside one clip and carries that clip's label
    labels = splits["train"]["label"]
    for i in np.linspace(0, len(ds) - 1, 50).astype(int):
        item = ds[int(i)]
        doc = int(np.searchsorted(ds.first, i, side="right")) - 1
        offset = int(i) - int(ds.first[doc])  # where the window starts inside its clip
        assert offset + seq_len <= lengths[doc]
        clip = tok.encode(splits["train"]["example"][doc])
        assert torch.equal(item["ids"], clip[offset : offset + seq_len])
        assert int(item["label"]) == labels[doc]
    covering = batches.eval_dataset(data, seq_len, batch_size=4, batches=None)
    assert len(covering) == sum(-(-(n - seq_len + 1) // seq_len) for n in lengths if n >= seq_len)
    spread = batches.eval_dataset(data, seq_len, batch_size=4, batches=2)
    assert len(spread) == 8 and {int(spread[i]["label"]) for i in range(8)} <= set(labels)
    with pytest.raises(DataError, match="no training document"):
        batches.train_dataset(data, max(lengths) + 1)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mulaw_wavenet", "mulaw_lstm", "mulaw_gpt"])
def test_debug_recipe_end_to_end(recipe, tmp_path):
    """Train a few steps, sample WAVs, score in bits per audio sample: wavenet, and lstm and gpt
    through the same tokenizer."""
    pipe = Pipeline.from_recipe(ROOT / "recipes" / "debug" / f"{recipe}.yaml",
                                ["train.max_steps=4", "train.eval_every=4"])
    result = pipe.train(tmp_path / "run", progress=False)
    assert result.val.unit == "sample" and 0 < result.val.bits_per_unit < 8.5
    wavs = sorted((tmp_path / "run" / "samples").glob("sample_*.wav"))
    assert len(wavs) == 2 and (tmp_path / "run" / "samples" / "samples.png").is_file()
    info = sf.info(wavs[0])
    assert info.samplerate == 8000 and info.frames == 400
    score = Pipeline.load(tmp_path / "run").score(
        [str(FSDD / "3_george_0.wav"), str(FSDD / "5_george_1.wav")], labels=[3, 5])
    assert score.unit == "sample" and score.units == sum(sf.info(FSDD / f).frames
                                                          for f in ("3_george_0.wav", "5_george_1.wav"))
    assert 0 < score.bits_per_unit < 8.5


@pytest.mark.slow
def test_cli_sample_and_score(tmp_path):
    pipe = Pipeline.from_recipe(ROOT / "recipes" / "debug" / "mulaw_wavenet.yaml",
                                ["train.max_steps=2", "train.eval_every=2", "sample.max_new_tokens=50"])
    pipe.train(tmp_path / "run", progress=False)
    run = [sys.executable, "-m", "pipelines.cli.main"]
    out = subprocess.run([*run, "sample", str(tmp_path / "run"), "-n", "3", "--class", "4",
                          "--out", str(tmp_path / "s")], capture_output=True, text=True, check=True)
    assert len([line for line in out.stdout.splitlines() if line.endswith(".wav")]) == 3
    assert (tmp_path / "s" / "samples.png").is_file()
    # --compile (the native one-sample loop on a CPU) writes the very WAVs of the eager step;
    # greedy, so that float32 rounding (the two sum in different orders) cannot move a draw
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        subprocess.run([*run, "sample", str(tmp_path / "run"), "-n", "2", "--class", "4", "--greedy",
                        "--out", str(tmp_path / name), *flags], capture_output=True, text=True, check=True)
    eager, compiled = (sorted((tmp_path / name).glob("*.wav")) for name in ("eager", "compiled"))
    assert len(eager) == 2 and [f.read_bytes() for f in eager] == [f.read_bytes() for f in compiled]
    out = subprocess.run([*run, "score", str(tmp_path / "run"), str(FSDD / "4_theo_2.wav"), "--class", "4"],
                         capture_output=True, text=True, check=True)
    score = json.loads(out.stdout)
    assert score["unit"] == "sample" and "bits_per_sample" in score
    assert score["units"] == sf.info(FSDD / "4_theo_2.wav").frames
