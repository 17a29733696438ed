"""End to end through Pipeline and the CLI on the tiny debug recipes, and every bad input the
foundation issue lists: each gives a short error naming the problem and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.recipe.loader import load_raw
from plugins.errors import (
    CheckpointError,
    DataError,
    LayoutError,
    RecipeError,
    RunDirError,
    TokarError,
)
from tests.conftest import need_shakespeare

ROOT = Path(__file__).resolve().parents[2]
DEBUG_CHAR = ROOT / "recipes/debug/char_gpt.yaml"
DEBUG_PIXEL = ROOT / "recipes/debug/pixel_gpt.yaml"


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    need_shakespeare()
    run = tmp_path_factory.mktemp("char") / "run"
    assert main(["-q", "train", str(DEBUG_CHAR), "--run-dir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pixel") / "run"
    assert main(["-q", "train", str(DEBUG_PIXEL), "--run-dir", str(run), "--no-progress",
                 "train.max_steps=30"]) == 0
    return run


def test_run_directory_is_self_contained(char_run):
    for name in ("recipe.yaml", "run.json", "tokenizer/config.json", "prior/config.json",
                 "prior/model.safetensors", "metrics.jsonl", "samples/sample_000.txt"):
        assert (char_run / name).exists(), name
    assert json.loads((char_run / "run.json").read_text())["status"] == "complete"
    ckpts = sorted(p.name for p in (char_run / "checkpoints").iterdir())
    assert ckpts == ["step_0000010", "step_0000020"]
    records = [json.loads(l) for l in (char_run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [10, 20] and all("bits_per_char" in r for r in val)
    assert val[-1]["loss"] < 4.17  # below uniform over 65 characters: it learned something


def test_train_prints_run_dir(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["-q", "train", str(DEBUG_CHAR), "train.max_steps=2", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(run)


def test_load_sample_score_text(char_run, tmp_path, capsys):
    pipe = Pipeline.load(char_run)
    texts = pipe.sample(3, max_new_tokens=50, seed=1)
    assert len(texts) == 3 and all(len(t) == 50 for t in texts)
    assert texts == pipe.sample(3, max_new_tokens=50, seed=1)  # seeded
    assert main(["sample", str(char_run), "-n", "2", "--max-new-tokens", "20", "--top-k", "5",
                 "--temperature", "0.7", "--out", str(tmp_path / "s.txt")]) == 0
    assert (tmp_path / "s.txt").read_text().count("----------") == 1
    capsys.readouterr()
    assert main(["score", str(char_run)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["unit"] == "char" and 0 < score["bits_per_unit"] < 6.1
    assert score["units"] == score["tokens"] == 111540  # the last 10% of Tiny Shakespeare


def test_score_a_text_file_matches_the_api(char_run, tmp_path, capsys):
    f = tmp_path / "x.txt"
    f.write_text("To be, or not to be, that is the question:\n" * 5)
    assert main(["score", str(char_run), str(f)]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = Pipeline.load(char_run).score([f.read_text()])
    assert cli["bits_per_char"] == pytest.approx(api.bits_per_unit)
    assert cli["units"] == len(f.read_text())


def test_sliding_window_score_equals_exact_log_prob_when_it_fits(char_run):
    pipe = Pipeline.load(char_run)
    text = "Hello there, friend."  # shorter than block_size: one exact pass
    ids = pipe.tokenizer.encode(text)
    exact = -pipe.prior.log_prob(ids[None]).item()
    assert pipe.score([text]).nats_per_token * len(text) == pytest.approx(exact, rel=1e-5)


def test_image_run_with_classes(pixel_run, tmp_path, capsys):
    pipe = Pipeline.load(pixel_run)
    imgs = pipe.sample(4, cond=7)
    assert all(isinstance(i, Image.Image) and i.size == (8, 8) for i in imgs)
    assert main(["sample", str(pixel_run), "-n", "6", "--class", "3", "--out",
                 str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8
    capsys.readouterr()
    assert main(["score", str(pixel_run)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["unit"] == "subpixel" and score["units"] == score["examples"] * 64
    assert score["bits_per_unit"] < np.log2(17)  # better than uniform over 17 levels
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    with pytest.raises(DataError, match="class-conditional"):
        pipe.score([Image.open(tmp_path / "imgs" / "a.png")])


# -- bad input ---------------------------------------------------------------------------------
def test_validate_refuses_a_prior_without_a_training_window(capsys, tmp_path):
    """What training would refuse after claiming a run directory, `tokar validate` says first."""
    from pipelines.recipe.limits import window_problems
    from pipelines.recipe.loader import load_recipe
    from priors import GPT
    from tokenizers_ar import Layout

    class Unbounded(GPT):  # a prior with no block_size, as a plugin's may be
        max_length = property(lambda self: None)

    recipe = load_recipe(DEBUG_CHAR)
    prior = Unbounded(recipe.prior.config, 10, Layout.seq())
    assert "has no block_size" in window_problems(recipe, prior)[0]
    assert window_problems(load_recipe(DEBUG_CHAR, ["train.seq_len=16"]), prior) == []
    assert main(["validate", str(DEBUG_CHAR), "train.seq_len=4096"]) == 2
    err = capsys.readouterr().err
    assert "train.seq_len: 4096 is longer than prior 'gpt' accepts (block_size 32)" in err
    run_dir = tmp_path / "run"
    assert main(["train", str(DEBUG_CHAR), "--run-dir", str(run_dir), "train.seq_len=4096"]) == 2
    assert not (run_dir / "recipe.yaml").exists()  # no run was started: the folder takes a rerun


def test_unknown_component_name_cli(capsys):
    assert main(["validate", str(DEBUG_CHAR), "prior.name=transformer"]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'transformer'" in err
    assert re.search(r"Known priors: [a-z_, ]*\bgpt\b", err)
    assert "Traceback" not in err


def test_misspelled_key_and_wrong_type_cli(capsys):
    assert main(["validate", str(DEBUG_CHAR), "train.batchsize=4", "prior.n_head=two"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "Did you mean 'batch_size'?" in err
    assert "prior.n_head: Input should be a valid integer" in err


def test_layout_the_prior_cannot_model(tmp_path):
    pipe = Pipeline.from_recipe(DEBUG_PIXEL, ["prior.block_size=32"])
    with pytest.raises(LayoutError, match=r"makes 64 tokens per example \(grid 8x8\).*block_size=64"):
        pipe.train(tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "prior").exists()


def test_missing_data_file(tmp_path, capsys):
    assert main(["train", str(DEBUG_CHAR), "data.path=/nonexistent/tiny.txt", "--run-dir",
                 str(tmp_path / "run")]) == 2
    assert "file not found: /nonexistent/tiny.txt" in capsys.readouterr().err
    assert not (tmp_path / "run" / "prior").exists()


def test_empty_data_set(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        Pipeline.from_recipe(DEBUG_CHAR, [f"data.path={tmp_path / 'empty.txt'}"]).train(
            tmp_path / "run", progress=False)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc" * 5)
    with pytest.raises(DataError, match="too few for one training window"):
        Pipeline.from_recipe(DEBUG_CHAR, [f"data.path={tiny}"]).train(tmp_path / "run2", progress=False)


def test_corrupt_or_truncated_checkpoint(char_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(char_run, broken)
    weights = broken / "prior" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Pipeline.load(broken)
    (broken / "prior" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is truncated or corrupt"):
        Pipeline.load(broken)


def test_unfinished_run_falls_back_to_its_newest_complete_checkpoint(char_run, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(char_run, partial)
    shutil.rmtree(partial / "prior")
    (partial / "checkpoints" / ".tmp-step_0000030-999").mkdir()  # a save that died midway
    pipe = Pipeline.load(partial)
    final = Pipeline.load(char_run)
    for a, b in zip(pipe.prior.parameters(), final.prior.parameters(), strict=True):
        assert torch.equal(a, b)  # the step-20 checkpoint is the final weights


def test_sample_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["sample", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a tokar run directory" in err and "tokar train" in err
    with pytest.raises(RunDirError, match="does not exist"):
        Pipeline.load(tmp_path / "nope")


def test_existing_run_is_never_overwritten(char_run):
    before = (char_run / "prior" / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        Pipeline.from_recipe(DEBUG_CHAR).train(char_run, progress=False)
    assert (char_run / "prior" / "model.safetensors").read_bytes() == before


def test_recipe_errors_surface_before_any_work(tmp_path):
    with pytest.raises(RecipeError):
        Pipeline.from_recipe(DEBUG_CHAR, ["tokenizer.name=pixel"])  # text source, image tokenizer


def test_sample_cli_decoding_flags(char_run, tmp_path, capsys):
    out = tmp_path / "s.txt"
    assert main(["sample", str(char_run), "-n", "2", "--prompt", "ROMEO:", "--greedy",
                 "--max-new-tokens", "30", "--out", str(out)]) == 0
    texts = out.read_text()[:-1].split("\n\n----------\n\n")  # the writer ends with "\n"
    assert len(texts) == 2 and texts[0] == texts[1] and texts[0].startswith("ROMEO:")
    for flags in (["--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.3"],
                  ["--beam-size", "3", "--length-penalty", "0.5"]):
        assert main(["sample", str(char_run), "-n", "2", "--max-new-tokens", "12", *flags,
                     "--out", str(out)]) == 0
    assert main(["sample", str(char_run), "-n", "1", "--max-new-tokens", "40", "--stop", "\n",
                 "--prompt", "A", "--out", str(out)]) == 0
    sample = out.read_text()[:-1]
    assert sample.startswith("A") and "\n" not in sample[:-1]  # nothing after the stop token
    capsys.readouterr()
    # the run itself as draft: every draft token is accepted
    assert main(["sample", str(char_run), "--draft", str(char_run), "--max-new-tokens", "30",
                 "--out", str(out)]) == 0
    assert "draft tokens accepted (100.0%)" in capsys.readouterr().err
    assert main(["sample", str(char_run), "--stop", "ab", "--out", str(out)]) == 2
    assert "must be exactly one token" in capsys.readouterr().err


def test_speculative_needs_the_same_tokenizer(char_run, pixel_run, capsys):
    assert main(["sample", str(char_run), "--draft", str(pixel_run)]) == 2
    assert "different tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_inference(char_run, precision, capsys):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3
    full = Pipeline.load(char_run).score([text]).bits_per_unit
    small = Pipeline.load(char_run, precision=precision)
    assert small.score([text]).bits_per_unit == pytest.approx(full, abs=0.05)
    assert len(small.sample(2, max_new_tokens=20)[0]) == 20
    assert main(["sample", str(char_run), "-n", "1", "--precision", precision,
                 "--max-new-tokens", "5", "--greedy", "--out", str(char_run / "q.txt")]) == 0
    with pytest.raises(TokarError, match="precision must be one of"):
        Pipeline.load(char_run, precision="fp8")


def test_more_bad_input_gets_clear_errors(char_run, pixel_run, tmp_path, capsys):
    # a model config that cannot work is caught by validation, before anything runs
    assert main(["validate", str(DEBUG_CHAR), "prior.n_head=3"]) == 2
    assert "n_embd (32) must be divisible by n_head (3)" in capsys.readouterr().err
    # decoding settings out of range
    assert main(["sample", str(char_run), "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["sample", str(char_run), "-n", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    # empty data to score
    (tmp_path / "empty.txt").write_text("")
    assert main(["score", str(char_run), str(tmp_path / "empty.txt")]) == 2
    assert "the data is empty" in capsys.readouterr().err
    # a saved prior whose config no longer makes sense
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(char_run, broken)
    cfg = json.loads((broken / "prior" / "config.json").read_text())
    cfg["config"]["n_layer"] = "many"
    (broken / "prior" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not describe a valid 'gpt' prior"):
        Pipeline.load(broken)
    # tokenizer settings are validated however they are given
    from pydantic import ValidationError

    from tokenizers_ar import CharTokenizer
    with pytest.raises(ValidationError):
        CharTokenizer(CharTokenizer.Config(), unk="yes please")


def test_score_an_image_of_a_given_class(pixel_run, tmp_path, capsys):
    img = tmp_path / "three.png"
    Pipeline.load(pixel_run).sample(1, cond=3)[0].save(img)
    assert main(["score", str(pixel_run), str(img), "--class", "3"]) == 0
    three = json.loads(capsys.readouterr().out)["bits_per_unit"]
    assert main(["score", str(pixel_run), str(img), "--class", "7"]) == 0
    seven = json.loads(capsys.readouterr().out)["bits_per_unit"]
    assert three != seven  # the class changes the likelihood


@pytest.mark.parametrize("recipe", ["bpe_gpt", "char_lstm"])
def test_text_recipes_train_sample_and_score_per_char_and_byte(recipe, tmp_path, capsys):
    need_shakespeare()
    run = tmp_path / "run"
    assert main(["-q", "train", str(ROOT / f"recipes/debug/{recipe}.yaml"), "--run-dir", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["score", str(run)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["unit"] == "char" and score["units"] == 111540
    assert score["bits_per_char"] == score["bits_per_unit"] < 8.1
    assert score["bits_per_byte"] <= score["bits_per_char"]  # Tiny Shakespeare is ASCII: equal
    pipe = Pipeline.load(run)
    text = "Hello there, friend."  # within the debug GPT's 32-token context
    exact = -pipe.prior.log_prob(pipe.tokenizer.encode(text)[None]).item()
    assert pipe.score([text]).nats_per_token * pipe.tokenizer.encode(text).numel() == \
        pytest.approx(exact, rel=1e-4)
    texts = pipe.sample(2, prompt="ROMEO:", max_new_tokens=20)
    assert all(t.startswith("ROMEO:") for t in texts)


def test_pixelcnn_pipeline_trains_samples_by_class_and_scores(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["-q", "train", str(ROOT / "recipes/debug/pixel_pixelcnn.yaml"), "--run-dir",
                 str(run), "--no-progress"]) == 0
    assert main(["sample", str(run), "-n", "4", "--class", "5", "--out", str(tmp_path / "g.png")]) == 0
    capsys.readouterr()
    assert main(["score", str(run)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["unit"] == "subpixel" and score["bits_per_unit"] < np.log2(17)
    text_recipe = load_raw(DEBUG_CHAR)
    text_recipe["prior"] = {"name": "pixelcnn"}  # a text layout it cannot model: caught early
    with pytest.raises(RecipeError, match="'pixelcnn' models grid layouts but tokenizer 'char'"):
        Pipeline.from_recipe(text_recipe)


def test_rgb_pixelcnn_with_the_mixture_head_end_to_end(tmp_path):
    """Colour images from an imagefolder: the pixel tokenizer orders R, G, B within a pixel, the
    channel-masked PixelCNN with the logistic mixture head trains, scores and samples RGB PNGs."""
    rng = np.random.default_rng(0)
    for label in ("red", "blue"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            pixels[..., 0 if label == "red" else 2] = 255
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    recipe = {
        "data": {"source": "hf", "path": "imagefolder", "data_dir": str(tmp_path / "imgs"),
                 "column": "image", "label_column": "label", "val_fraction": 0.2},
        "tokenizer": {"name": "pixel", "levels": 256},
        "prior": {"name": "pixelcnn", "n_layer": 2, "n_channels": 12, "n_out": 6, "n_classes": 2,
                  "output": "logistic_mixture", "n_mixtures": 2},
        "train": {"batch_size": 4, "max_steps": 6, "eval_every": 3, "eval_batches": 1, "log_every": 3},
    }
    pipe = Pipeline.from_recipe(recipe)
    pipe.train(tmp_path / "run", progress=False)
    assert pipe.prior.layout.shape == (6, 5, 3)
    images = pipe.sample(2, seed=0, cond=torch.tensor([0, 1]))
    assert [im.mode for im in images] == ["RGB", "RGB"] and images[0].size == (5, 6)
    score = pipe.score()
    assert score.unit == "subpixel" and 0 < score.bits_per_unit < 8.5
    assert main(["sample", str(tmp_path / "run"), "-n", "2", "--class", "blue",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").mode == "RGB"
    loaded = Pipeline.load(tmp_path / "run")  # class names travel with the run
    assert loaded.class_names == ["blue", "red"] and loaded.class_index("Red") == 1
    with pytest.raises(TokarError, match="unknown class 'bleu'.*Did you mean 'blue'"):
        loaded.sample(1, cond="bleu")
