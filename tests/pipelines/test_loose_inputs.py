"""Bad input that used to get loose: each is one line and exit status 2 (or a warning where the
damage is only to a cache), and nothing of the user's is lost."""

from __future__ import annotations

import json
import logging

import pytest

from pipelines.cli.main import main
from pipelines.detection import detectors
from pipelines.runs.rundir import RUN_FILE
from pipelines.training import run as training_run
from plugins.errors import ResourceError, StorageError
from tests.pipelines.conftest import DEBUG, copy_run

DETECT = ["--passage", "8", "--calibration-examples", "20"]


def test_a_symlink_loop_as_a_recipe(tmp_path, capsys):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert main(["train", str(tmp_path / "a.yaml"), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "loop" in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_draft_conditioned_otherwise_than_its_target(fault_pixel, tmp_path, capsys):
    unconditional = tmp_path / "uncond"
    assert main(["-q", "train", str(DEBUG / "pixel_gpt.yaml"), "prior.n_classes=0",
                 "train.max_steps=1", "train.eval_every=1", "train.eval_samples=0",
                 "--run-dir", str(unconditional), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(fault_pixel), "--draft", str(unconditional), "-n", "1",
                 "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "conditions on no classes" in err and "10 classes" in err and "Traceback" not in err


def test_a_config_json_asking_for_a_huge_tensor_is_refused_before_allocating(fault_char, tmp_path,
                                                                              capsys, monkeypatch):
    run = copy_run(fault_char, tmp_path / "run")
    config = run / "prior" / "config.json"
    payload = json.loads(config.read_text())
    payload["config"]["n_embd"] = 65536  # hundreds of GB of weights
    config.write_text(json.dumps(payload))
    monkeypatch.setenv("TOKAR_MAX_MEMORY_GB", "8")
    assert main(["score", str(run)]) == 2
    err = capsys.readouterr().err
    assert "saved prior in" in err and "needs an estimated" in err and "Traceback" not in err


def test_a_corrupt_calibration_cache_is_rebuilt_with_a_warning_naming_it(fault_char, tmp_path, caplog,
                                                                         capsys):
    run = copy_run(fault_char, tmp_path / "run")
    cache = detectors.calibration_path(run, 8)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text('{"format": 1, "ids": [')
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be")
    with caplog.at_level(logging.WARNING):
        assert main(["detect", str(run), str(text), *DETECT]) == 0
    assert any(str(cache) in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    assert json.loads(cache.read_text())["ids"]  # rebuilt


def test_detect_on_a_read_only_run_scores_without_saving_its_cache(fault_char, tmp_path, caplog,
                                                                   capsys, monkeypatch):
    run = copy_run(fault_char, tmp_path / "run")

    def read_only(path, payload):  # as root, chmod cannot make a folder read-only: the OS's answer
        raise StorageError(f"could not write {path}: {path} is on a read-only file system.")

    monkeypatch.setattr(detectors, "write_json_atomically", read_only)
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be")
    with caplog.at_level(logging.WARNING):
        assert main(["detect", str(run), str(text), *DETECT]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["id"].startswith(str(text))
    assert any("calibration was not saved" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_that_fails_before_training_leaves_no_preparing_run(tmp_path, capsys, monkeypatch,
                                                                  existing):
    def too_big(*args, **kwargs):
        raise ResourceError("the model needs an estimated 26.0 GiB, more than the 8.0 GiB available")

    monkeypatch.setattr(training_run, "check_training_memory", too_big)
    run = tmp_path / "run"
    if existing:
        run.mkdir()
    argv = ["train", str(DEBUG / "char_gpt.yaml"), "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 2
    assert "26.0 GiB" in capsys.readouterr().err
    if existing:  # the user's empty folder stays, empty (but for the lock file) and reusable
        assert run.is_dir() and not (run / RUN_FILE).exists()
    else:
        assert not run.exists()
    monkeypatch.undo()
    assert main([*argv, "train.max_steps=1", "train.eval_every=1", "train.eval_samples=0"]) == 0
