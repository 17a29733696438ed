"""Output paths: a device, FIFO or symlink at an output path is written through or to its
target, never replaced by a regular file (pipelines/io/safe.py `output_target`); `-` is standard
output; one audio clip to `x.wav` is that file."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.cli.main import main
from pipelines.io import atomic
from pipelines.runs.samples import write_samples
from plugins.errors import StorageError

DEVNULL = Path(os.devnull)
DETECT = ["--passage", "8", "--calibration-examples", "20"]  # a short text, a quick calibration
needs_devnull = pytest.mark.skipif(not os.access(os.devnull, os.W_OK), reason="/dev/null not writable")


def is_char_device(path: Path) -> bool:
    return stat.S_ISCHR(os.stat(path).st_mode)


@needs_devnull
@pytest.mark.parametrize("writer", ["bytes", "file"])
def test_dev_null_stays_a_device(writer):
    if writer == "bytes":
        atomic.write_bytes_atomically(DEVNULL, b"hello")
    else:
        atomic.write_file_atomically(DEVNULL, lambda tmp: tmp.write_bytes(b"hello"))
    assert is_char_device(DEVNULL)


@pytest.mark.parametrize("writer", ["bytes", "file"])
def test_a_fifo_is_written_through_to_its_reader(tmp_path, writer):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    if writer == "bytes":
        atomic.write_bytes_atomically(fifo, b"through the pipe")
    else:
        atomic.write_file_atomically(fifo, lambda tmp: tmp.write_bytes(b"through the pipe"))
    reader.join(timeout=10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left


def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path):
    target = tmp_path / "real" / "scores.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    atomic.write_bytes_atomically(link, b"new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    atomic.write_file_atomically(link, lambda tmp: tmp.write_text("newer\n"))
    assert link.is_symlink() and target.read_text() == "newer\n"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "real" / "later.txt")
    atomic.write_bytes_atomically(dangling, b"x")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.txt").read_bytes() == b"x"


def test_a_symlink_loop_or_folder_is_refused_in_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    with pytest.raises(StorageError, match="loop"):
        atomic.write_bytes_atomically(loop, b"x")
    with pytest.raises(StorageError, match="folder"):
        atomic.write_file_atomically(tmp_path, lambda tmp: tmp.write_bytes(b"x"))


def test_dash_is_standard_output(capfdbinary):
    atomic.write_bytes_atomically("-", b"to stdout\n")
    assert capfdbinary.readouterr().out == b"to stdout\n"


def test_text_samples_to_dash_and_one_wav_clip_to_its_file(tmp_path, capfdbinary):
    assert write_samples(["ab", "cd"], "-") == [Path("-")]
    assert b"ab" in capfdbinary.readouterr().out and not Path("-").exists()

    class Audio:
        modality, sample_rate = "audio", 8000

    clip = tmp_path / "x.wav"
    assert write_samples([np.zeros(800, dtype=np.float32)], clip, tokenizer=Audio()) == [clip]
    assert clip.is_file() and sf.info(str(clip)).frames == 800


# -- the commands ------------------------------------------------------------------------------
@needs_devnull
def test_commands_write_through_dev_null(fault_char, tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be")
    assert main(["score", str(fault_char), str(text), "--per-example", os.devnull]) == 0
    assert main(["plot", str(fault_char), "--out", os.devnull]) == 0
    assert main(["detect", str(fault_char), str(text), *DETECT, "--out", os.devnull]) == 0
    assert main(["compress", str(fault_char), str(text)]) == 0
    assert main(["decompress", str(fault_char), str(text) + ".tkz", "-o", os.devnull, "--force"]) == 0
    assert is_char_device(DEVNULL)


def test_score_and_detect_write_dash_to_standard_output(fault_char, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "in.txt"
    text.write_text("To be, or not to be")
    assert main(["score", str(fault_char), str(text), "--per-example", "-"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all("bits_per_character" in line or "nats" in line for line in lines)
    assert "bits_per" in err  # the summary, beside the lines
    assert main(["detect", str(fault_char), str(text), *DETECT, "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["id"]
    assert not (tmp_path / "-").exists()
