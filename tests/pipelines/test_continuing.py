"""Continuing a run and watching it: `--resume RUN train.max_seconds=N` grants N more seconds,
the complete message names the limit that stopped the run, a bar's total honours the time
budget, and in a log file progress is one line per interval, whatever the caller updates."""

from __future__ import annotations

import io
import json
import logging

import tqdm.std

from pipelines.cli.main import main
from pipelines.io import progress
from pipelines.runs.rundir import RUN_FILE
from tests.pipelines.conftest import DEBUG


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_log_mode_prints_one_line_per_interval_whatever_the_postfix_does(monkeypatch):
    clock, log = FakeClock(), io.StringIO()
    monkeypatch.setattr(tqdm.std, "time", clock)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    monkeypatch.setattr(progress.sys, "stderr", log)  # not a terminal: the log mode
    monkeypatch.setenv("TOKAR_PROGRESS_INTERVAL", "30")
    bar = progress.progress_bar(total=300, desc="training", unit="step")
    for step in range(1, 301):  # one step a second, a postfix every 10 steps as training does
        clock.now += 1.0
        if step % 10 == 0:
            bar.set_postfix(loss="1.000")
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    # the opening line, one every 30 s of 300 s, and the closing one: never one per postfix
    assert 10 <= len(lines) <= 13, lines
    assert all("\r" not in line for line in lines)


def test_the_bar_total_is_where_the_time_budget_ends():
    assert progress.budget_total(0, 10, 5.0, 1000, None) == 1000
    assert progress.budget_total(0, 10, 5.0, 1000, 60.0) == 120  # 2 steps/s for 60 s
    assert progress.budget_total(100, 110, 5.0, 1000, 60.0) == 220  # a resume counts from its start
    assert progress.budget_total(0, 10, 5.0, 50, 60.0) == 50  # max_steps comes first
    assert progress.budget_total(0, 0, 0.0, 50, 60.0) == 50  # no pace yet


def test_resume_with_max_seconds_grants_more_time(tmp_path, capsys, caplog):
    timed_out = tmp_path / "run"  # a char run its time budget stops after a step, far from the end
    assert main(["-q", "train", str(DEBUG / "char_gpt.yaml"), "train.max_steps=500",
                 "train.max_seconds=0.001", "train.eval_every=500", "train.eval_samples=0",
                 "--run-dir", str(timed_out), "--no-progress"]) == 0
    record = json.loads((timed_out / RUN_FILE).read_text())
    assert record["status"] == "complete" and record["result"]["stopped_by"] == "max_seconds"
    first = record["result"]["steps"]
    assert first < 500
    assert "stopped by its time budget, train.max_seconds=0.001" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):  # without more time: nothing to do, and why
        assert main(["train", "--resume", str(timed_out)]) == 0
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "train.max_seconds=0.001 stopped it" in message and "train.max_seconds=N" in message
    assert json.loads((timed_out / RUN_FILE).read_text())["result"]["steps"] == first
    assert main(["-q", "train", "--resume", str(timed_out), "train.max_seconds=0.001",
                 "--no-progress"]) == 0  # was refused: "cannot change train.max_seconds"
    record = json.loads((timed_out / RUN_FILE).read_text())
    assert record["result"]["steps"] > first and record["result"]["stopped_by"] == "max_seconds"


def test_sample_and_score_show_progress(fault_char, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKAR_PROGRESS_INTERVAL", "0")  # the log mode, a line at every update
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be, that is the question")
    assert main(["score", str(fault_char), str(text)]) == 0
    assert "scoring" in capsys.readouterr().err
    assert main(["sample", str(fault_char), "-n", "1", "--max-new-tokens", "5",
                 "--out", str(tmp_path / "s.txt")]) == 0
    err = capsys.readouterr().err
    assert "sampling" in err and "5/5" in err
