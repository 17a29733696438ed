"""One likelihood path: streams scored by windows or by carried state, data sets scored per
example (and data-parallel under torchrun), and training evaluation agreeing with `tokar score`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.scoring import stream_nll, token_nll
from plugins.shared import Layout
from priors import GPT, LSTM, GPTConfig, LSTMConfig

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "recipes" / "debug" / "pixel_gpt.yaml"


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
