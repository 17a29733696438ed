"""The training engine: multi-process equivalence, exact resume (also after SIGKILL mid-save),
gradient accumulation, mixed precision, guards, early stopping, checkpoint retention, trackers,
curves."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.training import checkpoint
from pipelines.training.trainer import Trainer
from plugins.errors import CheckpointError, RecipeError, TokarError
from tests.conftest import need_shakespeare

ROOT = Path(__file__).resolve().parents[2]


def recipe(**train) -> dict:
    """Tiny char GPT with dropout on, so that exact resume must restore the RNG too."""
    need_shakespeare()
    return {
        "data": {"source": "text", "path": "${data_dir}/tinyshakespeare.txt"},
        "tokenizer": {"name": "char"},
        "prior": {"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32,
                  "dropout": 0.1},
        "train": {"max_steps": 20, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2,
                  "eval_every": 5, "eval_batches": 2, "log_every": 5, "eval_samples": 1, **train},
        "sample": {"n": 1, "max_new_tokens": 8},
    }


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "prior" / "model.safetensors")


def metrics(run: Path, split: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == split]


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    Pipeline.from_recipe(recipe()).train(run, progress=False)
    return run


def test_resume_after_interruption_is_exact(straight, tmp_path, interrupt_at):
    run = tmp_path / "run"
    interrupt_at(10)
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_recipe(recipe()).train(run, progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "running"

    _, result = Pipeline.resume(run, progress=False)
    assert result.steps == 20
    assert_same_weights(run, straight)  # bit for bit, dropout included
    assert metrics(run, "val") == metrics(straight, "val")
    assert metrics(run, "train") == metrics(straight, "train")
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pipelines import Pipeline
    from pipelines.io import atomic
    import yaml

    original = atomic.publish
    def publish(tmp, final):
        if final.name == "step_0000020":  # files written, not yet renamed into place
            os.kill(os.getpid(), signal.SIGKILL)
        original(tmp, final)
    atomic.publish = publish
    Pipeline.from_recipe(yaml.safe_load(open(sys.argv[1]))).train(sys.argv[2], progress=False)
""")


def test_sigkill_mid_checkpoint_resumes_from_the_previous_complete_one(tmp_path):
    straight = tmp_path / "straight"
    Pipeline.from_recipe(recipe(max_steps=30, eval_every=10)).train(straight, progress=False)

    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe(max_steps=30, eval_every=10)))
    (tmp_path / "killer.py").write_text(KILLER)
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "recipe.yaml"),
                           str(run)], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [c.step for c in checkpoint.list_checkpoints(run / "checkpoints")] == [10]
    assert list((run / "checkpoints").glob(".tmp-step_0000020-*"))  # the half-done save is ignored

    assert main(["-q", "train", "--resume", str(run), "--no-progress"]) == 0
    assert_same_weights(run, straight)
    assert metrics(run, "val") == metrics(straight, "val")


def test_resume_can_extend_max_steps_but_not_change_the_model(straight, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    with pytest.raises(RecipeError, match=r"cannot change prior.n_layer, train.lr"):
        Pipeline.resume(run, ["prior.n_layer=2", "train.lr=0.1"])
    _, result = Pipeline.resume(run, ["train.max_steps=25"], progress=False)
    assert result.steps == 25
    assert [s for s, _ in metrics(run, "val")] == [5, 10, 15, 20, 25]
    assert "max_steps: 25" in (run / "recipe.yaml").read_text()


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a tokar run directory" in capsys.readouterr().err


def test_two_processes_equal_one_process_on_the_combined_batch(straight, tmp_path):
    """torchrun, 2 CPU processes (gloo) with batch 4 each == 1 process with batch 8 (no dropout:
    each process draws its own masks)."""
    single = tmp_path / "single"
    Pipeline.from_recipe(recipe(batch_size=8, eval_samples=0), ["prior.dropout=0"]).train(
        single, progress=False)
    multi_recipe = recipe(batch_size=4, eval_samples=0)
    multi_recipe["prior"]["dropout"] = 0.0
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(multi_recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ACCELERATE_USE_CPU", None)  # tokar must form the process group by itself
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29531", "-m", "pipelines.cli.main", "-q", "train", str(tmp_path / "r.yaml"),
         "--run-dir", str(tmp_path / "multi"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = tmp_path / "multi"
    assert proc.stdout.strip() == str(multi)  # printed once, by the main process
    assert sorted(p.name for p in (multi / "checkpoints" / "step_0000020").iterdir()) == [
        "model.safetensors", "optimizer.pt", "rng_0.pt", "rng_1.pt", "state.json"]
    assert_same_weights(multi, single, atol=1e-5)
    for (s1, a), (s2, b) in zip(metrics(multi, "val"), metrics(single, "val"), strict=True):
        assert s1 == s2 and a == pytest.approx(b, abs=1e-5)  # metrics reduced over processes


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    big = Pipeline.from_recipe(recipe(batch_size=8, eval_samples=0), ["prior.dropout=0"])
    big.train(tmp_path / "big", progress=False)
    acc = Pipeline.from_recipe(recipe(batch_size=4, grad_accum=2, eval_samples=0), ["prior.dropout=0"])
    acc.train(tmp_path / "acc", progress=False)
    # The 8 windows of one big batch are the 2 micro-batches of 4, in the same order.
    assert_same_weights(tmp_path / "acc", tmp_path / "big", atol=1e-5)


def test_bf16_mixed_precision_trains(tmp_path):
    result = Pipeline.from_recipe(recipe(mixed_precision="bf16", max_steps=10)).train(
        tmp_path / "run", progress=False)
    assert torch.isfinite(torch.tensor(result.val.nats_per_token))
    assert result.val.nats_per_token < 4.17  # below uniform over 65 characters


def test_nan_loss_stops_naming_the_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    import pipelines.training.trainer as train_mod

    calls = {"n": 0}
    real = train_mod.token_nll

    def poisoned(*args):
        calls["n"] += 1
        out = real(*args)
        # the training loss's calls (evaluation goes through pipelines.scoring): steps 1-10
        # are fine, step 11 is poisoned
        return out * float("nan") if calls["n"] > 10 else out

    monkeypatch.setattr(train_mod, "token_nll", poisoned)
    expected = r"became nan at step 11; the last good checkpoint is .*step_0000010"
    with pytest.raises(TokarError, match=expected):
        Pipeline.from_recipe(recipe(eval_samples=0)).train(tmp_path / "run", progress=False)


def test_early_stopping_and_best_plus_last_checkpoints_kept(tmp_path, monkeypatch):
    from pipelines.scoring import Score

    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7])
    monkeypatch.setattr(Trainer, "evaluate",
                        lambda self: Score("char", 1.0, next(losses), 64, 64, 0))
    result = Pipeline.from_recipe(recipe(keep_checkpoints=1, early_stopping_patience=2,
                                         eval_samples=0, max_steps=25)).train(tmp_path / "run",
                                                                              progress=False)
    assert result.stopped_early and result.steps == 20 and result.best_val_loss == 2.0
    kept = [c.step for c in checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert kept == [10, 20]  # the best (step 10) and the newest


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real = checkpoint.write_checkpoint_files

    def fill_disk(tmp, model, optimizer, scheduler, state):
        if state["step"] == 10:
            (tmp / "model.safetensors").write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, model, optimizer, scheduler, state)

    monkeypatch.setattr(checkpoint, "write_checkpoint_files", fill_disk)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"step-10 checkpoint \(No space left on device: about "
                       r".* needed, .* free\); .*step_0000005 is intact.*--resume"):
        Pipeline.from_recipe(recipe(eval_samples=0)).train(run, progress=False)
    assert [c.step for c in checkpoint.list_checkpoints(run / "checkpoints")] == [5]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert Pipeline.load(run).prior is not None  # the intact checkpoint still loads


def test_observability_metrics_samples_tensorboard_and_plot(tmp_path, capsys):
    run = tmp_path / "run"
    Pipeline.from_recipe(recipe(max_steps=10, log_with=["tensorboard"])).train(run, progress=False)
    assert sorted(p.name for p in (run / "samples").glob("step_*")) == [
        "step_0000005.txt", "step_0000010.txt"]
    assert list((run / "logs").rglob("events.out.tfevents.*"))
    train_rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                  if '"train"' in x]
    assert all(r["tokens_per_s"] > 0 and "lr" in r for r in train_rows)
    assert main(["plot", str(run)]) == 0
    png = Path(capsys.readouterr().out.strip())
    assert png == run / "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_decay_skips_biases_norms_and_embeddings():
    from pipelines.training.trainer import param_groups
    from priors import GPT, GPTConfig
    from tokenizers_ar import Layout

    gpt = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, bias=True), 5, Layout.seq())
    decay, no_decay = param_groups(gpt, 0.1)
    names = {id(p): n for n, p in gpt.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {"h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight",
                       "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(gpt.parameters()))


@pytest.mark.slow
def test_torch_compile_opt_in_matches_eager(tmp_path):
    """~25 s on 2 cores, mostly compiling."""
    eager = Pipeline.from_recipe(recipe(max_steps=6, eval_samples=0), ["prior.dropout=0"])
    eager.train(tmp_path / "eager", progress=False)
    compiled = Pipeline.from_recipe(recipe(max_steps=6, eval_samples=0, compile=True),
                                    ["prior.dropout=0"])
    compiled.train(tmp_path / "compiled", progress=False)
    assert_same_weights(tmp_path / "compiled", tmp_path / "eager", atol=1e-4)
    assert Pipeline.load(tmp_path / "compiled").sample(1)  # saved and loads like any run


def test_dataloader_workers_do_not_change_the_result(straight, tmp_path):
    """The batch order is decided in the main process (EpochSampler), so workers only fetch."""
    Pipeline.from_recipe(recipe(num_workers=2)).train(tmp_path / "run", progress=False)
    assert_same_weights(tmp_path / "run", straight)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_is_exact_across_epoch_boundaries(tmp_path, interrupt_at, grad_accum):
    """9 batches per epoch (odd, so accumulation cannot line up with epochs by luck): runs
    resumed at step 10 and at step 25 must equal the uninterrupted 30-step run."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(("to be or not to be, that is the question. " * 14)[:600])
    def small(**train):
        r = recipe(max_steps=30, batch_size=64 // grad_accum, grad_accum=grad_accum,
                   eval_every=5, eval_samples=0, **train)
        r["data"] = {"source": "text", "path": str(corpus), "val_fraction": 0.05}
        r["prior"]["block_size"] = 16
        return r

    straight = tmp_path / "straight"
    Pipeline.from_recipe(small()).train(straight, progress=False)
    for stop_at in (10, 25):
        interrupt_at(stop_at)
        run = tmp_path / f"resumed_{stop_at}"
        with pytest.raises(KeyboardInterrupt):
            Pipeline.from_recipe(small()).train(run, progress=False)
        Pipeline.resume(run, progress=False)
        assert_same_weights(run, straight)


def test_an_interrupted_resume_never_serves_stale_final_weights(straight, tmp_path, interrupt_at):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"step": 2')
    interrupt_at(25)
    with pytest.raises(KeyboardInterrupt):  # the half-written metrics line did not stop it
        Pipeline.resume(run, ["train.max_steps=30"], progress=False)
    assert not (run / "prior").exists()
    loaded = Pipeline.load(run)  # the step-25 checkpoint, not the stale step-20 final weights
    step25 = load_file(run / "checkpoints" / "step_0000025" / "model.safetensors")
    state = loaded.prior.state_dict()
    for name, tensor in step25.items():  # tied weights are stored once, under one name
        assert torch.equal(state[name], tensor), name


def test_a_run_that_fails_before_training_leaves_no_run_behind(tmp_path):
    run = tmp_path / "run"
    bad = recipe()
    bad["prior"]["block_size"] = 4096  # fine for text; now make the image layout too long:
    bad = {**bad, "data": {"source": "sklearn_digits"},
           "tokenizer": {"name": "pixel", "levels": 17, "max_value": 16}}
    bad["prior"] = {**bad["prior"], "block_size": 32}
    with pytest.raises(TokarError, match="block_size"):
        Pipeline.from_recipe(bad).train(run, progress=False)
    assert not (run / "recipe.yaml").exists()
    bad["prior"]["block_size"] = 64  # fixed: the same --run-dir works
    bad["train"]["max_steps"] = 2
    Pipeline.from_recipe(bad).train(run, progress=False)
    assert (run / "prior" / "model.safetensors").is_file()
