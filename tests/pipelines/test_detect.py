"""Anomaly detection from exact likelihoods: mutation for background runs, the four scores,
conformal p-values and thresholds stored in the run, evaluation metrics, surprise maps, the
CLI, and clear errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.data.augment import Mutation, mutate
from pipelines.detection import detectors
from pipelines.detection.complexity import compressed_bits
from pipelines.detection.data import cut_passages, read_data
from pipelines.detection.evaluate import ood_metrics
from plugins.errors import DataError, RecipeError, TokarError

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "recipes" / "debug"
QUICK = ["train.eval_samples=0", "sample.n=1"]


def digits(n: int, offset: int = 0, eight_bit: bool = False) -> np.ndarray:
    """scikit-learn's 8x8 digits (the debug image runs' data): values 0..16 as the runs read
    arrays, or scaled to 8-bit images (what an .npz holds)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[offset : offset + n]
    return np.rint(images * (255 / 16)).astype(np.uint8) if eight_bit else images.astype(np.uint8)


def noise(n: int, seed: int) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).integers(0, 17, (n, 8, 8), dtype=np.uint8))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The class-conditional debug PixelCNN and its background (mutated inputs, L2)."""
    root = tmp_path_factory.mktemp("detect")
    recipe = DEBUG / "pixel_pixelcnn.yaml"
    Pipeline.from_recipe(recipe, QUICK).train(root / "run", progress=False)
    Pipeline.from_recipe(recipe, [*QUICK, "data.augment.mutate=0.2", "train.weight_decay=0.1"]).train(
        root / "bg", progress=False)
    np.savez(root / "noise.npz", x=np.random.default_rng(0).integers(0, 256, (25, 8, 8), dtype=np.uint8))
    np.savez(root / "digits.npz", x=digits(40, 1700, eight_bit=True))
    return root


# -- mutation (the background model's training data) ----------------------------------------------
def test_mutation_replaces_the_asked_share_deterministically():
    ids = torch.zeros(200, 100, dtype=torch.long)
    out = mutate(ids, 0.2, 50, torch.Generator().manual_seed(0))
    changed = (out != 0).float().mean().item()
    assert 0.2 * 49 / 50 - 0.01 < changed < 0.2 * 49 / 50 + 0.01  # a draw may equal the original
    assert out.max() < 50 and out.min() >= 0
    m = Mutation(0.2, 50, seed=3)
    batch = {"ids": ids[:4], "label": torch.arange(4)}
    assert torch.equal(m(batch, 7)["ids"], m(batch, 7)["ids"])  # a function of the batch number
    assert not torch.equal(m(batch, 7)["ids"], m(batch, 8)["ids"])
    assert not torch.equal(m(batch, 7)["ids"], Mutation(0.2, 50, seed=3, process_index=1)(batch, 7)["ids"])
    assert torch.equal(m(batch, 7)["label"], batch["label"])


def test_mutated_training_resumes_exactly(tmp_path, interrupt_at):
    from safetensors.torch import load_file

    overrides = ["data.augment.mutate=0.3", "train.eval_samples=0", "sample.n=1"]
    recipe = DEBUG / "char_gpt.yaml"
    Pipeline.from_recipe(recipe, overrides).train(tmp_path / "straight", progress=False)
    interrupt_at(10)
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_recipe(recipe, overrides).train(tmp_path / "resumed", progress=False)
    Pipeline.resume(tmp_path / "resumed", progress=False)
    a = load_file(tmp_path / "straight" / "prior" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "prior" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    clean = tmp_path / "clean"
    Pipeline.from_recipe(recipe, overrides[1:]).train(clean, progress=False)
    c = load_file(clean / "prior" / "model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # mutation did change the training


def test_mutation_of_real_values_is_a_recipe_error():
    with pytest.raises(RecipeError, match="data.augment.mutate: tokenizer 'waveform' produces real"):
        Pipeline.from_recipe(DEBUG / "real_wavenet.yaml", ["data.augment.mutate=0.2"])
    with pytest.raises(RecipeError, match="data.augment.mutate"):
        Pipeline.from_recipe(DEBUG / "char_gpt.yaml", ["data.augment.mutate=1.5"])


# -- p-values and thresholds -----------------------------------------------------------------------
def test_conformal_p_values_and_threshold_agree_and_keep_the_false_positive_rate():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=999)
    for fpr in (0.01, 0.05, 0.2):
        t = detectors.threshold_at(reference, fpr)
        scores = np.r_[rng.normal(size=5000), reference]  # ties with calibration scores too
        p = detectors.p_values(scores, reference)
        assert np.array_equal(p <= fpr, scores > t)
    # exchangeable data: over calibration sets, an in-distribution input is flagged with
    # probability floor(fpr (n + 1)) / (n + 1), here exactly fpr
    flagged = [detectors.p_values(rng.normal(size=1), rng.normal(size=99))[0] <= 0.05 for _ in range(4000)]
    assert abs(np.mean(flagged) - 0.05) < 0.015
    assert detectors.p_values(np.array([reference.max() + 1]), reference)[0] == 1 / 1000
    assert detectors.p_values(np.array([reference.min() - 1]), reference)[0] == 1.0
    with pytest.raises(DataError, match="needs at least 19"):
        detectors.threshold_at(reference[:10], 0.05)


def test_typicality_flags_groups_that_are_too_likely_as_well_as_too_unlikely():
    rng = np.random.default_rng(1)
    calib = rng.normal(3.0, 0.3, size=500)
    bits = np.r_[np.full(5, 3.0), np.full(5, 1.5), np.full(5, 4.5)]
    comp = detectors.Components([str(i) for i in range(15)], bits)
    scores, groups = detectors.method_scores("typicality", comp, calib.mean(), 5)
    assert groups.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    p = detectors.p_values(scores, detectors.typicality_reference(calib, 5))
    assert p[0] > 0.2 and p[5] < 0.01 and p[10] < 0.01


def test_ood_metrics_from_scikit_learn():
    m = ood_metrics(np.array([0.0, 1, 2, 3]), np.array([4.0, 5]))
    assert m == {"auroc": 1.0, "auprc": 1.0, "fpr_at_95_tpr": 0.0}
    m = ood_metrics(np.array([4.0, 5]), np.array([0.0, 1, 2, 3]))
    assert m["auroc"] == 0.0 and m["fpr_at_95_tpr"] == 1.0


def test_compressed_length_is_measured_on_what_the_prior_models():
    from tokenizers_ar.pixel import PixelTokenizer

    tok = PixelTokenizer(levels=2, max_value=1, height=28, width=28, channels=1)
    rng = np.random.default_rng(0)
    blank, noise = np.zeros((28, 28), np.uint8), (rng.random((28, 28)) < 0.5).astype(np.uint8)
    assert compressed_bits(blank, tok, "png") < compressed_bits(noise, tok, "png")
    # the same picture as a 0/1 array and as an 8-bit PIL image: the same bits
    assert compressed_bits(noise, tok, "png") == compressed_bits(Image.fromarray(noise * 255), tok, "png")
    with pytest.raises(DataError, match="compressor 'flac' does not compress image"):
        compressed_bits(noise, tok, "flac")


# -- detection on a trained run --------------------------------------------------------------------
def test_class_conditional_runs_are_scored_by_the_marginal_likelihood(runs):
    pipe = Pipeline.load(runs / "run")
    x = list(digits(3))
    bits, _ = detectors.example_bits(pipe, x, ["a", "b", "c"])
    per_class = np.array([[e.nats for e in pipe.score(x, labels=[c] * 3).per_example] for c in range(10)])
    expected = -(np.logaddexp.reduce(-per_class, axis=0) - math.log(10)) / 64 / math.log(2)
    np.testing.assert_allclose(bits, expected, rtol=1e-9)


def test_detect_calibrates_once_stores_the_calibration_and_reuses_it(runs, monkeypatch):
    pipe = Pipeline.load(runs / "run")
    random = noise(10, 2)
    result = pipe.detect(random)
    path = runs / "run" / "detect" / "calibration.json"
    saved = json.loads(path.read_text())
    assert result.calibration_examples == len(saved["ids"]) == 180  # the validation split
    assert saved["prior"] == pipe.prior.fingerprint()
    assert all(d.anomalous and d.p_value <= 0.05 for d in result.detections)  # noise
    assert result.threshold == detectors.threshold_at(np.array(saved["bits"]), 0.05)
    calls = []
    original = detectors.example_bits
    monkeypatch.setattr(detectors, "example_bits", lambda *a, **k: calls.append(1) or original(*a, **k))
    pipe.detect(random, fpr=0.1)  # another rate: the stored scores, no rescoring of validation
    assert len(calls) == 1  # only the inputs
    # validation images themselves: about fpr of them flagged
    val = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
    flagged = pipe.detect(list(val["example"]), fpr=0.2).anomalous
    assert len(flagged) <= 0.2 * 181


def test_every_method_scores_higher_is_more_anomalous(runs):
    pipe = Pipeline.load(runs / "run")
    normal = list(digits(10, 1700))
    for method, options in (("likelihood", {}), ("ratio", {"background": runs / "bg"}),
                            ("typicality", {"group_size": 5}), ("complexity", {})):
        result = pipe.detect(normal + noise(10, 3), method, **options)
        scores = np.array([d.score for d in result.detections])
        assert result.method == method and len(result.detections) == 20
        if method == "typicality":
            assert [d.group for d in result.detections] == [i // 5 for i in range(20)]
        if method == "complexity":  # S = bits - L(x) per unit, L from PNG of the 17-level grid
            x = (normal + noise(10, 3))[0]
            L = compressed_bits(x, pipe.tokenizer, "png") / 64
            assert result.detections[0].score == pytest.approx(result.detections[0].bits_per_unit - L)
        else:  # (a 20-step model is no better than PNG on digits, so S cannot rank them yet)
            assert scores[10:].mean() > scores[:10].mean(), method
    saved = json.loads((runs / "run" / "detect" / "calibration.json").read_text())
    assert list(saved["complexity"]) == ["png"] and len(saved["backgrounds"]) == 1


def test_cli_detect_writes_scores_and_surprise_maps(runs, tmp_path, capsys):
    out, maps, few = tmp_path / "scores.jsonl", tmp_path / "maps", tmp_path / "few.npz"
    np.savez(few, x=np.load(runs / "noise.npz")["x"][:3])
    assert main(["-q", "detect", str(runs / "run"), str(few), "--out", str(out),
                 "--maps", str(maps)]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["examples"] == len(lines) == 3 and summary["method"] == "likelihood"
    assert set(lines[0]) == {"id", "unit", "bits_per_unit", "score", "p_value", "verdict"}
    assert lines[0]["id"].endswith("few.npz[0]") and lines[0]["verdict"] == "anomalous"
    pngs = sorted(maps.glob("*.png"))
    assert [p.name for p in pngs] == ["00000_few.npz_0.png", "00001_few.npz_1.png", "00002_few.npz_2.png"]
    assert Image.open(pngs[0]).size[0] > 100
    assert main(["-q", "detect", str(runs / "run"), str(runs / "noise.npz"), "--method", "ratio",
                 "--background", str(runs / "bg")]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert len(stdout) == 25 and "score" in json.loads(stdout[0])


def test_cli_detect_eval_reports_every_method_and_draws_the_histogram(runs, tmp_path, capsys):
    plot = tmp_path / "hist.png"
    assert main(["-q", "detect-eval", str(runs / "run"), "--in", str(runs / "digits.npz"),
                 "--ood", str(runs / "noise.npz"), "--background", str(runs / "bg"),
                 "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["auroc"]) == set(detectors.METHODS)
    assert report["auroc"]["likelihood"] > 0.9  # random pixels vs digits, even for a tiny model
    assert report["n"]["typicality"] == {"in": 8, "ood": 5}
    assert Image.open(plot).size[0] > 800


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors(runs, tmp_path, capsys):
    run = str(runs / "run")
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 9, 8), np.uint8))
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8, 8), np.uint8), b=np.zeros((2, 8, 8), np.uint8))
    np.savez(tmp_path / "float.npz", x=np.zeros((2, 8, 8), np.float32))
    cases = {
        str(tmp_path / "big.npz"): "a 8x9 image (width x height), but the run models 8x8 images",
        str(tmp_path / "red.png"): "a colour (RGB) image, but the run models grayscale images",
        str(tmp_path / "empty"): "no images",
        str(tmp_path / "two.npz"): "holds 2 arrays",
        str(tmp_path / "float.npz"): "the array is float32; expected uint8",
    }
    for data, message in cases.items():
        assert main(["-q", "detect", run, data]) == 2
        assert message in capsys.readouterr().err
    text_run = tmp_path / "text"
    Pipeline.from_recipe(DEBUG / "char_gpt.yaml", QUICK).train(text_run, progress=False)
    assert main(["-q", "detect", run, str(runs / "noise.npz"), "--method", "ratio",
                 "--background", str(text_run)]) == 2
    assert "uses another tokenizer" in capsys.readouterr().err
    assert main(["-q", "detect", run, str(runs / "noise.npz"), "--method", "ratio"]) == 2
    assert "needs a background run" in capsys.readouterr().err
    assert main(["-q", "detect", run, str(runs / "noise.npz"), "--fpr", "0.001"]) == 2
    assert "180 calibration scores cannot set a threshold" in capsys.readouterr().err


# -- text and audio --------------------------------------------------------------------------------
def test_text_passages_detection_and_html_maps(tmp_path, capsys):
    run = tmp_path / "char"
    Pipeline.from_recipe(DEBUG / "char_gpt.yaml", [*QUICK, "tokenizer.unk=true"]).train(run, progress=False)
    ood = tmp_path / "code"
    ood.mkdir()
    (ood / "a.py").write_text("def f(x):\n    return [y ** 2 for y in range(x)]  # squares\n" * 4)
    (ood / "blob.bin").write_bytes(b"\xff\xfe\x00\x81" * 10)  # not UTF-8: skipped
    maps = tmp_path / "maps"
    assert main(["-q", "detect", str(run), str(ood), "--passage", "64", "--maps", str(maps),
                 "--calibration-examples", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["id"].endswith("a.py@0")
    assert json.loads(lines[0])["unit"] == "char"
    assert (run / "detect" / "calibration-passage64.json").is_file()
    page = sorted(maps.glob("*.html"))[0].read_text()
    assert page.count("<span style=") >= 64 and "bits per character" in page
    with pytest.raises(DataError, match="no text is 500 characters long"):
        read_data(ood, Pipeline.load(run).tokenizer, 500)
    assert cut_passages(["t"], ["abcdefg"], 3) == (["t@0", "t@3"], ["abc", "def"])
    with pytest.raises(DataError, match="second: the example is empty"):
        Pipeline.load(run).detect(["To be, or not", ""], ids=["first", "second"],
                                  calibration_examples=40)


def test_bpe_surprise_spreads_a_tokens_bits_over_its_characters():
    from pipelines.detection.surprise import char_bits
    from tokenizers_ar.bpe import BPETokenizer

    tok = BPETokenizer(vocab_size=300)
    tok.fit(["the cat sat on the mat, the cat sat."] * 20)
    text = "the cat sat"
    ids = tok.encode(text)
    bits = np.arange(1, len(ids) + 1, dtype=float)
    per_char = char_bits(tok, text, bits)
    assert len(per_char) == len(text) and per_char.sum() == pytest.approx(bits.sum())


def test_audio_detection_with_flac_complexity_and_waveform_maps(tmp_path, capsys):
    import soundfile as sf

    run = tmp_path / "audio"
    Pipeline.from_recipe(DEBUG / "mulaw_gpt.yaml", QUICK).train(run, progress=False)
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(clips / f"noise{i}.wav", rng.normal(0, 0.3, 3000).clip(-1, 1), 8000)
    maps = tmp_path / "maps"
    assert main(["-q", "detect", str(run), str(clips), "--method", "complexity", "--maps", str(maps),
                 "--calibration-examples", "25"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["unit"] == "sample"
    assert len(list(maps.glob("*.png"))) == 2


def test_detect_checks_its_options(runs):
    pipe = Pipeline.load(runs / "run")
    x = list(digits(2))
    with pytest.raises(TokarError, match="unknown detection method 'lofi'"):
        pipe.detect(x, "lofi")
    with pytest.raises(TokarError, match="--background is used by --method ratio only"):
        pipe.detect(x, "likelihood", background=runs / "bg")
    with pytest.raises(TokarError, match="false-positive rate must lie in"):
        pipe.detect(x, fpr=1.5)
    with pytest.raises(DataError, match="nothing to check"):
        pipe.detect([])


def test_detect_under_torchrun_matches_one_process(runs, tmp_path):
    """Two processes share the calibration and the inputs; the main one writes the same lines."""
    import os
    import shutil
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(runs / "run", run, ignore=shutil.ignore_patterns("detect"))  # calibrate afresh
    assert main(["-q", "detect", str(runs / "run"), str(runs / "noise.npz"), "--method", "ratio",
                 "--background", str(runs / "bg"), "--out", str(tmp_path / "one.jsonl")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         "29541", "-m", "pipelines.cli.main", "-q", "detect", str(run), str(runs / "noise.npz"),
         "--method", "ratio", "--background", str(runs / "bg"), "--out", str(tmp_path / "two.jsonl")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = ((tmp_path / f"{n}.jsonl").read_text().splitlines() for n in ("one", "two"))
    assert len(one) == 25 and [json.loads(x)["id"] for x in one] == [json.loads(x)["id"] for x in two]
    for a, b in zip(one, two, strict=True):
        assert json.loads(a)["score"] == pytest.approx(json.loads(b)["score"], abs=1e-9)
    assert (run / "detect" / "calibration.json").is_file()
