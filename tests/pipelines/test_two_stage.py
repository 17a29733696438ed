"""Two-stage image generation end to end on the tiny debug recipe: fit the VQ-VAE (stage 1),
check its health, encode the data once into cached code grids, train a class-conditional GPT on
the codes (stage 2), sample images, verify the cached codes, reuse the trained stage 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.training.stage1 import HEALTH_FILE, RECONSTRUCTIONS_FILE
from plugins.errors import RecipeError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/debug/vqvae_gpt.yaml"


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vq") / "run"
    assert main(["-q", "train", str(RECIPE), "--run-dir", str(run), "--no-progress"]) == 0
    return run


def test_stage1_health_is_written_before_stage2(vq_run):
    health = json.loads((vq_run / HEALTH_FILE).read_text())
    assert health["codebook_size"] == 32 and health["code_grid"] == [4, 4]
    assert health["codes_used"] + health["dead_codes"] == 32
    assert 0 < health["usage"] <= 1 and health["perplexity"] > 1
    assert 10 < health["psnr_db"] < 60 and health["examples"] == 180  # the validation split
    assert health["fit"]["steps"] == 40
    assert Image.open(vq_run / RECONSTRUCTIONS_FILE).size[0] > 8 * 8
    assert (vq_run / "tokenizer" / "tokenizer.safetensors").is_file()


def test_sample_decodes_codes_to_images_by_class(vq_run, tmp_path, capsys):
    pipe = Pipeline.load(vq_run)
    assert pipe.tokenizer.layout.shape == (4, 4) and pipe.prior.num_classes == 10
    imgs = pipe.sample(3, cond=5)
    assert all(isinstance(i, Image.Image) and i.size == (8, 8) for i in imgs)
    assert main(["sample", str(vq_run), "-n", "4", "--class", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8
    capsys.readouterr()
    assert main(["score", str(vq_run)]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["unit"] == "subpixel" and score["units"] == score["examples"] * 64


def test_codes_verify_decodes_the_cached_codes(vq_run, capsys):
    health = json.loads((vq_run / HEALTH_FILE).read_text())
    capsys.readouterr()
    assert main(["codes", "verify", str(vq_run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 180 and report["code_grid"] == [4, 4] and report["stale"] == 0
    # the same images and codes as the health check: the same error
    assert report["psnr_db"] == pytest.approx(health["psnr_db"], rel=1e-6)
    assert main(["codes", "verify", str(vq_run), "--split", "train", "--limit", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 50
    assert main(["codes", "verify", str(vq_run), "--split", "test"]) == 2
    assert "no (non-streamed, non-empty) split 'test'" in capsys.readouterr().err


def test_pretrained_stage1_is_reused_not_refitted(vq_run, tmp_path, capsys):
    first = Pipeline.load(vq_run).tokenizer
    run = tmp_path / "second"
    # a pixelcnn prior over the same codes; the run directory or its tokenizer/ folder both work
    assert main(["-q", "train", str(RECIPE), "--run-dir", str(run), "--no-progress",
                 f"tokenizer.pretrained={vq_run}", "prior={name: pixelcnn, n_layer: 2, "
                 "n_channels: 8, n_classes: 10}", "train.max_steps=4"]) == 0
    second = Pipeline.load(run)
    assert second.tokenizer.fingerprint() == first.fingerprint()
    recipe = (run / "recipe.yaml").read_text()
    assert f"pretrained: {vq_run}" in recipe and "codebook_size: 32" in recipe
    assert main(["validate", str(RECIPE), f"tokenizer.pretrained={vq_run / 'tokenizer'}"]) == 0


def test_pretrained_errors(vq_run, tmp_path, capsys):
    with pytest.raises(RecipeError, match="no saved tokenizer in"):
        Pipeline.from_recipe(RECIPE, [f"tokenizer.pretrained={tmp_path}"])
    with pytest.raises(RecipeError, match="recipe sets 64 but the pretrained tokenizer .* has 32"):
        Pipeline.from_recipe(RECIPE, [f"tokenizer.pretrained={vq_run}", "tokenizer.codebook_size=64"])
    with pytest.raises(RecipeError, match="holds a 'vqvae' tokenizer but the recipe names 'vqgan'"):
        Pipeline.from_recipe(RECIPE, [f"tokenizer.pretrained={vq_run}", "tokenizer.name=vqgan"])
    assert main(["validate", str(RECIPE), f"tokenizer.pretrained={tmp_path}"]) == 2
    assert "no saved tokenizer" in capsys.readouterr().err


def test_low_codebook_usage_warns(tmp_path, caplog):
    # 512 codes for 4x4 grids of 1,617 digits: most codes stay unused
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        Pipeline.from_recipe(RECIPE, ["tokenizer.codebook_size=512", "tokenizer.kmeans_init=false",
                                      "tokenizer.threshold_ema_dead_code=0", "train.max_steps=2",
                                      "train.eval_samples=0"]).train(run, progress=False)
    health = json.loads((run / HEALTH_FILE).read_text())
    assert health["usage"] < 0.5
    assert any("uses only" in r.message and "codebook_size" in r.message for r in caplog.records)
