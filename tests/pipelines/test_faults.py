"""Reliability under faults (issue 17), the fast cases: nothing the user did not ask to destroy is
destroyed, one writer per run, a full disk is one clear error that cleans up after itself, resumes
check before they change anything, bounded parsing, quiet logs without a terminal, and the CLI's
error boundary. The slow cases (SIGKILL loops, concurrent processes, a real full tmpfs) are in
benchmarks/faults.py."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.io import atomic
from pipelines.io.atomic import write_json_atomically
from pipelines.recipe.loader import load_raw, load_recipe
from pipelines.runs.lock import RunLock, releases_run_locks
from pipelines.runs.rundir import claim_run_dir
from pipelines.runs.samples import write_samples
from pipelines.training import checkpoint
from plugins.errors import CheckpointError, RecipeError, RunLockedError, StorageError, TokarError
from tests.conftest import ROOT
from tests.pipelines.conftest import DEBUG, copy_run, tree_digest

DEBUG_CHAR = str(DEBUG / "char_gpt.yaml")


def strict_json(path: Path):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "prior" / "model.safetensors"), load_file(b / "prior" / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- 1. never destroy what the user did not ask to destroy --------------------------------------
def test_train_refuses_a_folder_that_is_not_a_tokar_run(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "prior").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "prior" / "thesis.tex").write_text("\\documentclass{article}")
    (mine / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = tree_digest(mine)
    assert main(["-q", "train", DEBUG_CHAR, "--run-dir", str(mine), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{mine} exists and is not a tokar run directory" in err and "Traceback" not in err
    assert tree_digest(mine) == before  # not one byte changed, no lock file added


def test_train_accepts_a_new_or_empty_folder_and_marks_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "train", DEBUG_CHAR, "--run-dir", str(empty), "--no-progress",
                 "train.max_steps=2", "train.eval_every=2"]) == 0
    marker = strict_json(empty / "run.json")
    assert marker["status"] == "complete" and "tokar_version" in marker


def test_failed_resume_leaves_the_run_byte_identical_and_its_advice_works(interrupted, tmp_path, capsys):
    run = copy_run(interrupted, tmp_path / "run")
    for ckpt in checkpoint.list_checkpoints(run / "checkpoints"):  # damage every checkpoint, each differently
        if ckpt.step == 5:
            weights = ckpt.path / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:100])
        elif ckpt.step == 10:
            (ckpt.path / "state.json").write_text("{not json")
        else:
            opt = ckpt.path / "optimizer.pt"
            data = bytearray(opt.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte: torch.load alone would not notice
            opt.write_bytes(bytes(data))
    before = tree_digest(run)
    assert main(["-q", "train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "none of its checkpoints is intact" in err and "Nothing in the run was changed" in err
    assert "step_0000015" in err and "SHA-256 mismatch" in err and "Traceback" not in err
    assert tree_digest(run) == before
    # the advice, followed to the letter
    advice = err.split("`")[1]
    assert advice.startswith("tokar train ") and advice.endswith("--run-dir NEW_DIR")
    argv = advice.replace("NEW_DIR", str(tmp_path / "again")).split()[1:]
    assert main(["-q", *argv, "--no-progress"]) == 0


@pytest.mark.parametrize("damage", ["optimizer.pt", "rng_0.pt", "state.json", "model.safetensors"])
def test_damaged_newest_checkpoint_falls_back_and_resumes_exactly(interrupted, straight_checkpointed,
                                                                  tmp_path, caplog, damage):
    run = copy_run(interrupted, tmp_path / "run")
    newest = run / "checkpoints" / "step_0000015" / damage
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        _, result = Pipeline.resume(run, progress=False)
    assert result.steps == 20
    assert "resuming" in caplog.text and "from step_0000010" in caplog.text
    assert (run / "checkpoints" / "damaged-step_0000015").is_dir()  # set aside, not deleted
    assert same_weights(run, straight_checkpointed)  # exact, from the older checkpoint


def test_resuming_a_complete_run_changes_nothing_unless_max_steps_grows(fault_char, tmp_path, caplog):
    run = copy_run(fault_char, tmp_path / "run")
    before = tree_digest(run)
    with caplog.at_level(logging.WARNING):
        assert main(["-q", "train", "--resume", str(run), "--no-progress"]) == 0
    assert "is complete" in caplog.text and "nothing to resume" in caplog.text
    assert tree_digest(run) == before  # the recorded result and the final weights are as they were
    assert main(["-q", "train", "--resume", str(run), "train.max_steps=5", "--no-progress"]) == 2
    assert tree_digest(run) == before  # never records a max_steps the weights do not have
    assert main(["-q", "train", "--resume", str(run), "train.max_steps=25", "--no-progress"]) == 0
    record = strict_json(run / "run.json")
    assert record["status"] == "complete" and record["result"]["steps"] == 25
    assert "max_steps: 25" in (run / "recipe.yaml").read_text()


def test_finishing_a_run_stopped_after_its_last_checkpoint_writes_valid_json(tmp_path, interrupt_at):
    run = tmp_path / "run"
    interrupt_at(20)  # every step trained and saved; the final weights never written
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_recipe(DEBUG_CHAR, ["train.eval_samples=0"]).train(run, progress=False)
    _, result = Pipeline.resume(run, progress=False)
    record = strict_json(run / "run.json")  # no NaN: it is JSON
    assert record["status"] == "complete" and record["result"]["steps"] == 20
    assert record["result"]["val_bits_per_unit"] == pytest.approx(result.val.bits_per_unit)
    assert (run / "prior" / "model.safetensors").is_file()


def test_evaluation_samples_can_never_fail_a_step(tmp_path, monkeypatch, caplog):
    def broken_sample(self, *args, **kwargs):
        raise TokarError("this sampler is broken")

    monkeypatch.setattr(Pipeline, "sample", broken_sample)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        Pipeline.from_recipe(DEBUG_CHAR, ["train.eval_every=5", "train.eval_samples=1"]).train(
            run, progress=False)
    assert [c.step for c in checkpoint.list_checkpoints(run / "checkpoints")] == [15, 20]
    assert strict_json(run / "run.json")["status"] == "complete"
    assert "could not write evaluation samples" in caplog.text and "final samples" in caplog.text


# -- 2. one writer per run directory --------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from pipelines.runs.lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()  # kept: a lock that is garbage-collected is released
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def hold_lock(tmp_path):
    """hold_lock(run_dir): another process locks run_dir (as a running `tokar train` would)."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        (tmp_path / "holder.py").write_text(HOLDER)
        proc = subprocess.Popen([sys.executable, str(tmp_path / "holder.py"), str(run_dir)],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_gets_one_line_naming_the_holder(fault_char, tmp_path, hold_lock, capsys):
    run = copy_run(fault_char, tmp_path / "run")
    before = tree_digest(run)
    holder = hold_lock(run)
    assert main(["-q", "train", "--resume", str(run), "train.max_steps=25", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"is in use: another tokar process (PID {holder.pid}" in err and len(err.splitlines()) == 1
    assert "free some space" not in err.lower()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    hold_lock(fresh)
    assert main(["-q", "train", DEBUG_CHAR, "--run-dir", str(fresh), "--no-progress"]) == 2
    assert "is in use" in capsys.readouterr().err
    holder.kill()
    holder.wait()
    assert tree_digest(run) == {**before, ".tokar.lock": tree_digest(run)[".tokar.lock"]}


def test_the_lock_dies_with_its_holder(tmp_path, hold_lock):
    holder = hold_lock(tmp_path)
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunLock(tmp_path).acquire().release()  # the kernel released it: no stale lock
    assert (tmp_path / ".tokar.lock").read_text() == ""  # released locks are empty again


def test_default_run_names_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    @releases_run_locks
    def claim() -> Path:
        return claim_run_dir(None, "sweep")

    names = {claim() for _ in range(3)}  # within one second
    assert len(names) == 3 and all(p.is_dir() for p in names)


def test_temporary_checkpoint_folders_are_unique_per_writer(tmp_path):
    first = checkpoint.tmp_dir(tmp_path, 10, atomic.writer_id())
    assert first != checkpoint.tmp_dir(tmp_path, 10, atomic.writer_id())


# -- 3. a full disk is a clear error, and cleans up after itself -----------------------------------
FULL = {
    "OSError": OSError(errno.ENOSPC, "No space left on device"),
    "SafetensorError": SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                                       'StorageFull, message: "No space left on device" })'),
    "torch unexpected pos": RuntimeError("[enforce fail at inline_container.cc:626] . unexpected "
                                         "pos 1216 vs 1104"),
}


@pytest.mark.parametrize("kind", list(FULL))
def test_disk_full_while_checkpointing(tmp_path, monkeypatch, kind):
    real = checkpoint.write_checkpoint_files

    def fill_disk(tmp, model, optimizer, scheduler, state):
        if state["step"] == 10:
            (tmp / "model.safetensors").write_bytes(b"half a file")
            raise FULL[kind]
        real(tmp, model, optimizer, scheduler, state)

    monkeypatch.setattr(checkpoint, "write_checkpoint_files", fill_disk)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"step-10 checkpoint \(No space left on device: about "
                       r"[\d.]+ [KM]iB needed, [\d.]+ [KMGT]iB free\); .*step_0000005 is intact. Free "
                       r"some space, then continue with `tokar train --resume"):
        Pipeline.from_recipe(DEBUG_CHAR, ["train.eval_every=5", "train.eval_samples=0"]).train(
            run, progress=False)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the space it held is given back


def test_disk_full_on_run_files_and_samples(tmp_path, monkeypatch):
    class FullFile(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            real_open(path, mode).close()  # the temporary file exists, then the disk is full
            return FullFile()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
    with pytest.raises(StorageError, match=rf"could not write {tmp_path / 'run.json'}: the disk is "
                       r"full \(about \d+ B needed, .* free there\)"):
        write_json_atomically(tmp_path / "run.json", {"status": "running"})
    with pytest.raises(StorageError, match=r"samples.png: the disk is full"):
        from PIL import Image
        write_samples([Image.new("L", (8, 8))], tmp_path / "out")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []  # no temporary file keeps the space


# -- 5. bounded, safe parsing ---------------------------------------------------------------------
def test_billion_laughs_fails_fast(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="billion laughs"):
        load_raw(tmp_path / "laughs.yaml")
    with pytest.raises(RecipeError, match="billion laughs"):  # in an override value too
        load_recipe(DEBUG_CHAR, ["train.x=" + _nested_override()])
    assert time.perf_counter() - start < 5


def _nested_override() -> str:
    """One flow-style YAML value of seven nested levels of ten aliases: 10**7 values."""
    parts = ["[&l0 [0,0,0,0,0,0,0,0,0,0]"]
    for i in range(1, 8):
        parts.append(f"&l{i} [{','.join([f'*l{i - 1}'] * 10)}]")
    return ", ".join(parts) + "]"


def test_extends_is_bounded(tmp_path):
    for i in range(20):
        (tmp_path / f"r{i}.yaml").write_text(f"extends: r{i + 1}.yaml\n")
    (tmp_path / "r20.yaml").write_text("train: {max_steps: 1}\n")
    with pytest.raises(RecipeError, match="more than 16 files deep"):
        load_raw(tmp_path / "r0.yaml")
    # a diamond that fans out: 4 parents at each of 6 levels would load 4**6 files
    for i in range(6):
        (tmp_path / f"f{i}.yaml").write_text(f"extends: [f{i + 1}.yaml, f{i + 1}.yaml, f{i + 1}.yaml, "
                                             f"f{i + 1}.yaml]\n")
    (tmp_path / "f6.yaml").write_text("train: {max_steps: 1}\n")
    with pytest.raises(RecipeError, match="more than 64 recipe files"):
        load_raw(tmp_path / "f0.yaml")
    (tmp_path / "self.yaml").write_text("a: &a [*a]\n")
    with pytest.raises(RecipeError, match="refers to itself|not valid YAML"):
        load_raw(tmp_path / "self.yaml")


def test_a_fifo_is_refused_as_data_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "data.txt"
    os.mkfifo(fifo)
    assert main(["validate", str(fifo)]) == 2
    assert "named pipe (FIFO)" in capsys.readouterr().err
    assert main(["-q", "train", DEBUG_CHAR, f"data.path={fifo}", "--run-dir", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert f"{fifo} is a named pipe (FIFO), not a regular file" in capsys.readouterr().err


def test_a_corrupt_tokenized_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    from pipelines.data.sources import TextSource, cache_dir, tokenize
    from tokenizers_ar import CharTokenizer

    monkeypatch.setenv("TOKAR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 30)
    splits = TextSource(path=str(tmp_path / "t.txt")).load()
    tok = CharTokenizer()
    tok.fit(splits["train"]["example"])
    first = tokenize(splits, tok)["train"].tokens
    files = list((cache_dir() / "tokenized").glob("*.arrow"))
    assert files
    for f in files:
        f.write_bytes(b"\x00garbage" * 10)
    with caplog.at_level(logging.WARNING):
        again = tokenize(splits, tok)["train"].tokens
    assert "is unreadable" in caplog.text and "rebuilding" in caplog.text
    assert (first == again).all()


# -- 6 & 7. the error boundary, and logs without a terminal -----------------------------------------
def test_internal_errors_print_a_summary_line_then_the_traceback(monkeypatch, tmp_path, capsys):
    import pipelines.runs.plot

    monkeypatch.setattr(pipelines.runs.plot, "plot_run", lambda *a: 1 / 0)
    assert main(["plot", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error: ZeroDivisionError: division by zero\n")
    assert err.index("Traceback") > err.index("please report it")


def test_environment_errors_are_one_line_with_the_path(monkeypatch, tmp_path, capsys):
    import pipelines.runs.plot

    def refused(*args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/locked/curves.png")

    monkeypatch.setattr(pipelines.runs.plot, "plot_run", refused)
    assert main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: /srv/locked/curves.png: Permission denied.\n"


def test_progress_without_a_terminal_is_plain_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKAR_PROGRESS_INTERVAL", "0")
    assert main(["train", DEBUG_CHAR, "--run-dir", str(tmp_path / "run"), "train.max_steps=6",
                 "train.eval_every=6"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("training")]
    assert len(progress) >= 3 and progress[-1].startswith("training: 100%")
