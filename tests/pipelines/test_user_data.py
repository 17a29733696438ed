"""A user's own data, as a new user would bring it: `tokar init` on a text file, an image folder
with classes and a WAV folder; transparent and 16-bit PNGs through detect and compress; class
names from folder names; `--threads` and `train.threads`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from pipelines.cli import main as cli
from pipelines.compression.lossless import to_tokens
from pipelines.data.audio import WavFolderSource
from pipelines.data.sources import HFSource, class_names
from pipelines.detection.data import read_data
from pipelines.io.safe import read_image
from pipelines.pipeline import Pipeline
from pipelines.recipe.loader import load_recipe
from plugins.errors import CompressionError, DataError, RecipeError, TokarError
from tokenizers_ar.pixel import PixelTokenizer


@pytest.fixture
def threads_restored():
    """Tests below change torch's thread count: put it back for the tests after them."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _image_folder(root, size=(4, 4)):
    """DATA/cat/*.png and DATA/dog/*.png: RGBA, LA and palette-with-transparency PNGs."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            rgba = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
            Image.fromarray(rgba, "RGBA").save(root / name / f"{i}.png")
    return root


def test_init_text_file_validates_and_trains(tmp_path, capsys, threads_restored):
    text = tmp_path / "notes.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 200, encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    assert cli.main(["init", str(text), "-o", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "5,400 characters" in err and "wrote" in err
    written = recipe.read_text()
    assert "max_seconds: 900" in written and "# " in written  # budgeted, and says why
    assert cli.main(["validate", str(recipe)]) == 0
    assert capsys.readouterr().out.startswith("ok:")
    run = tmp_path / "run"
    # the recipe key train.threads sets torch's threads for the training (3: not this machine's)
    assert cli.main(["-q", "train", str(recipe), "train.max_steps=2", "train.eval_every=2",
                     "train.eval_batches=1", "train.eval_samples=0", "train.threads=3",
                     "--run-dir", str(run)]) == 0
    assert (run / "recipe.yaml").exists() and torch.get_num_threads() == 3


def test_init_image_folder_with_classes(tmp_path, capsys):
    data = _image_folder(tmp_path / "pets")
    recipe = tmp_path / "pets.yaml"
    assert cli.main(["init", str(data), "-o", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "6 images, 4x4, colour" in err and "classes: cat, dog" in err and "transparency" in err
    loaded = load_recipe(recipe)
    assert loaded.data.config.label_column == "label" and loaded.prior.config.n_classes == 2
    assert loaded.tokenizer.config.background == "white"
    assert cli.main(["validate", str(recipe)]) == 0
    # the sub-folder names are the data's class names (classes.json of a run: --class cat)
    splits = HFSource(loaded.data.config).load()
    assert class_names(splits["train"]) == ["cat", "dog"]


def test_init_refuses_mixed_sizes_naming_the_file(tmp_path, capsys):
    data = _image_folder(tmp_path / "pets")
    Image.new("RGB", (5, 3)).save(data / "dog" / "big.png")
    assert cli.main(["init", str(data), "-o", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert "big.png: a 5x3 image" in err and "4x4" in err
    assert not (tmp_path / "r.yaml").exists()


def test_init_wav_folder(tmp_path, capsys):
    root = tmp_path / "voices"
    for name in ("female", "male"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            sf.write(root / name / f"{i}.wav", np.zeros(2205, np.float32), 22050)
    recipe = tmp_path / "voices.yaml"
    assert cli.main(["init", str(root), "-o", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "4 audio files" in err and "22050 Hz" in err and "classes: female, male" in err
    loaded = load_recipe(recipe)
    assert loaded.tokenizer.config.sample_rate == 16000  # capped: every second is a token each
    assert loaded.prior.config.n_classes == 2
    assert cli.main(["validate", str(recipe)]) == 0
    splits = WavFolderSource(loaded.data.config).load()
    assert class_names(splits["train"]) == ["female", "male"]


def test_init_never_overwrites_without_force(tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("hello world\n" * 10)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("# my own recipe\n")
    assert cli.main(["init", str(text), "-o", str(recipe)]) == 2
    assert "--force" in capsys.readouterr().err
    assert recipe.read_text() == "# my own recipe\n"
    assert cli.main(["init", str(text), "-o", str(recipe), "--force"]) == 0
    assert "tokenizer:" in recipe.read_text()
    assert cli.main(["init", str(tmp_path / "missing"), "-o", str(tmp_path / "x.yaml")]) == 2


@pytest.mark.parametrize("command", ["sample", "score", "decompress", "detect", "codes"])
def test_threads_flag_sets_torch_threads(monkeypatch, command, threads_restored):
    seen = []

    def record(args: argparse.Namespace) -> int:
        seen.append(torch.get_num_threads())
        return 0

    for name in ("cmd_sample", "cmd_score", "cmd_decompress", "cmd_codes_verify"):
        monkeypatch.setattr(cli, name, record)
    monkeypatch.setattr("pipelines.cli.detect.cmd_detect", record)
    argv = {"sample": ["sample", "RUN"], "score": ["score", "RUN"], "decompress": ["decompress", "RUN", "X"],
            "detect": ["detect", "RUN", "DATA"], "codes": ["codes", "verify", "RUN"]}[command]
    assert cli.main([*argv, "--threads", "3"]) == 0
    assert seen == [3]


def test_threads_must_be_positive(capsys):
    assert cli.main(["sample", "RUN", "--threads", "0"]) == 2
    assert "--threads must be a whole number of at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="train.threads: Input should be greater than or equal to 1"):
        load_recipe(cli.Path(__file__).parents[2] / "recipes/debug/char_gpt.yaml", ["train.threads=0"])


def test_detect_reads_transparent_and_deep_images(tmp_path):
    """LA and 16-bit PNGs are grayscale, RGBA colour; every one is read as its tokenizer reads it."""
    folder = tmp_path / "gray"
    folder.mkdir()
    Image.fromarray(np.full((4, 4, 2), (30, 0), np.uint8), "LA").save(folder / "la.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(folder / "deep.png")
    gray = PixelTokenizer(height=4, width=4, channels=1)
    ids, examples = read_data(folder, gray)
    assert [gray.encode(e).unique().tolist() for e in examples] == [[255], [255]]  # white, white
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(folder / "rgba.png")
    with pytest.raises(DataError, match=r"rgba.png: a colour \(RGB\) image, but the run models grayscale"):
        read_data(folder, gray)
    colour = PixelTokenizer(height=4, width=4, channels=3)
    image = read_image(folder / "rgba.png")
    assert colour.encode(image).unique().tolist() == [255]  # transparent black on white: white


def test_compress_refuses_a_transparent_image_naming_it(tmp_path):
    tok = PixelTokenizer(height=2, width=2, channels=3)
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(tmp_path / "glass.png")
    with pytest.raises(CompressionError, match="glass.png: a transparent RGBA image"):
        to_tokens(tok, read_image(tmp_path / "glass.png"))
    Image.new("RGBA", (2, 2), (255, 0, 0, 255)).save(tmp_path / "solid.png")
    assert to_tokens(tok, read_image(tmp_path / "solid.png")).length == 12  # opaque: lossless


def test_class_names_from_folders_work_with_sample_class(tmp_path):
    """`tokar sample RUN --class female` resolves a folder name; a typo lists the names and the
    close match (the names come from the source, as a run's classes.json stores them)."""
    root = tmp_path / "voices"
    for name in ("female", "male"):
        (root / name).mkdir(parents=True)
        sf.write(root / name / "a.wav", np.zeros(800, np.float32), 8000)
    splits = WavFolderSource(path=str(root), labels_from_folders=True, val_fraction=0.0).load()
    pipe = Pipeline.__new__(Pipeline)  # only the class names matter here, no model
    pipe.class_names = class_names(splits["train"])
    assert pipe.class_index("female") == 0 and pipe.class_index("Male") == 1
    with pytest.raises(TokarError, match="the classes are female, male. Did you mean 'female'"):
        pipe.class_index("femal")
