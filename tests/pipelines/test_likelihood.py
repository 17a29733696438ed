"""One likelihood path: streams scored by windows or by carried state, data sets scored per
example (and data-parallel under torchrun), and training evaluation agreeing with `tokar score`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import Pipeline
from pipelines.cli.main import main
from plugins.errors import TokarError
from plugins.shared import Layout
from priors import GPT, LSTM, GPTConfig, LSTMConfig
from priors.likelihood import stream_nll, token_nll

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "recipes" / "debug" / "pixel_gpt.yaml"
MADE_MOG = ROOT / "recipes" / "tabular" / "real_made_mog.yaml"


def test_a_stream_is_scored_by_carried_state_or_by_half_overlapping_windows():
    torch.manual_seed(0)
    x = torch.randint(0, 5, (40,))
    lstm = LSTM(LSTMConfig(n_layer=1, n_embd=8, n_hidden=8), 5, Layout.seq()).eval()
    with torch.no_grad():  # unbounded: exactly the teacher-forced pass over the whole stream
        torch.testing.assert_close(stream_nll(lstm, x), token_nll(lstm, lstm, x[None])[0],
                                   atol=1e-5, rtol=1e-5)
        gpt = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16), 5, Layout.seq()).eval()
        nll = stream_nll(gpt, x, batch_size=2)
        assert nll.shape == (40,)
        first = token_nll(gpt, gpt, x[None, :16])[0]  # the first window scores its 16 tokens
        torch.testing.assert_close(nll[:16], first)
        second = token_nll(gpt, gpt, x[None, 8:24])[0]  # the next, stride 8: its last 8 are new
        torch.testing.assert_close(nll[16:24], second[8:])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lik") / "digits"
    Pipeline.from_recipe(DIGITS, ["train.eval_batches=null", "train.eval_samples=0"]).train(
        run, progress=False)
    return run


def test_training_evaluation_and_tokar_score_are_the_same_likelihood(digits_run):
    """Grids: the trainer's validation over the whole split equals `score()` of the same split."""
    done = json.loads((digits_run / "run.json").read_text())["result"]
    score = Pipeline.load(digits_run).score()
    assert score.bits_per_unit == pytest.approx(done["val_bits_per_unit"], rel=1e-6)
    assert score.examples == len(score.per_example) == 180
    total = sum(e.nats for e in score.per_example) / score.units / 0.6931471805599453
    assert total == pytest.approx(score.bits_per_unit, rel=1e-9)


def test_per_example_jsonl_from_the_cli(digits_run, tmp_path, capsys):
    out = tmp_path / "each.jsonl"
    assert main(["-q", "score", str(digits_run), "--per-example", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary["examples"] == 180
    assert lines[0]["id"] == "validation/0" and lines[0]["units"] == lines[0]["tokens"] == 64
    assert set(lines[0]) == {"id", "tokens", "units", "nats", "bits_per_subpixel"}
    mean = sum(r["nats"] for r in lines) / sum(r["units"] for r in lines) / 0.6931471805599453
    assert mean == pytest.approx(summary["bits_per_unit"], rel=1e-9)


def test_two_processes_score_their_shards_and_agree_with_one(digits_run, tmp_path, capsys):
    assert main(["-q", "score", str(digits_run), "--per-example", str(tmp_path / "one.jsonl")]) == 0
    one = json.loads(capsys.readouterr().out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29537", "-m", "pipelines.cli.main", "-q", "score", str(digits_run),
         "--per-example", str(tmp_path / "two.jsonl")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # printed once, by the main process
    assert two["examples"] == one["examples"]
    assert two["bits_per_unit"] == pytest.approx(one["bits_per_unit"], rel=1e-6)
    a = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["id"] for r in a] == [r["id"] for r in b]  # gathered back in data order
    assert [r["nats"] for r in b] == pytest.approx([r["nats"] for r in a], rel=1e-5)


def test_tokar_score_ensembles_mades_masks(tmp_path, capsys):
    """`--ensemble N`: each example's NLL is -log of the mean of the first N masks' likelihoods,
    the logsumexp by hand here; one mask is the plain score."""
    run = tmp_path / "made"
    Pipeline.from_recipe(MADE_MOG, ["train.max_steps=20", "train.eval_every=20", "prior.n_hidden=16",
                                    "prior.n_masks=4", "sample.n=1"]).train(run, progress=False)
    out = tmp_path / "each.jsonl"
    assert main(["-q", "score", str(run), "--ensemble", "3", "--per-example", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == summary["examples"] == 114 and "token_nats" not in got[0]

    pipe = Pipeline.load(run)
    rows = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]["example"]
    x = torch.stack([pipe.encode(e).float() for e in rows]).view(len(rows), 30, 1)
    with torch.no_grad():
        head, prior = pipe.prior.distribution, pipe.prior
        per_mask = torch.stack([head.log_prob(prior._run(x, k), x).sum(1) for k in range(3)])
    offset = 30 * pipe.tokenizer.discretization_nats()
    want = -(torch.logsumexp(per_mask.double(), 0) - math.log(3)) + offset
    assert [r["nats"] for r in got] == pytest.approx(want.tolist(), rel=1e-5, abs=1e-4)

    plain = [e.nats for e in pipe.score().per_example]  # mask 0 alone
    assert [e.nats for e in pipe.score(ensemble=1).per_example] == pytest.approx(plain, rel=1e-5, abs=1e-4)
    assert sum(abs(a["nats"] - b) > 1e-3 for a, b in zip(got, plain, strict=True)) > 100
    with pytest.raises(TokarError, match="per-token NLL is not defined"):
        pipe.score(per_token=True, ensemble=2)
    assert main(["-q", "score", str(run), "--ensemble", "5"]) == 2  # trained over 4 masks
    assert "trained over 4 (prior.n_masks)" in capsys.readouterr().err


def test_an_ensemble_of_a_gpt_run_is_one_clear_error(digits_run, capsys):
    assert main(["-q", "score", str(digits_run), "--ensemble", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: prior 'gpt' has no ensemble of orderings; drop --ensemble"
