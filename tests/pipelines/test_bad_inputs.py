"""Every CLI command through a table of bad inputs: each must exit with status 2, print no
traceback, and name the offending file or value (issue 17, item 6). The table is the class of
input a careless or hostile user gives: non-UTF-8 and binary files, folders and FIFOs where files
go, files where folders go, zero-byte and lying images and WAVs, out-of-range values, damaged run
metadata, sizes that cannot fit in memory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.cli.main import main
from tests.pipelines.conftest import DEBUG

CHAR = str(DEBUG / "char_gpt.yaml")
PIXEL = str(DEBUG / "pixel_gpt.yaml")


@dataclass
class Ctx:
    tmp: Path
    char: Path
    pixel: Path
    audio: Path

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def folder(self, name: str) -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)

    def fifo(self, name: str) -> str:
        os.mkfifo(self.tmp / name)
        return str(self.tmp / name)

    def copy(self, run: Path, edit: Callable[[Path], None]) -> str:
        dest = self.tmp / f"copy-{run.name}"
        shutil.copytree(run, dest)
        edit(dest)
        return str(dest)


LATIN1 = "caf\xe9 na\xefve\n".encode("latin-1")
BINARY = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, pixels: bool = True) -> bytes:
    """A PNG whose header declares width x height grey pixels, with a few bytes of them (or none)."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    if not pixels:
        return head
    return head + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def wav_at(rate: int, frames: int) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(frames, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def set_json(path: str, value) -> Callable[[Path], None]:
    return lambda run: (run / path).write_text(json.dumps(value))


def write(path: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / path).write_bytes(data)


# (name, argv from the context, what the message must contain)
CASES: list[tuple[str, Callable[[Ctx], list[str]], list[str]]] = [
    # -- validate: recipe files
    ("recipe not UTF-8", lambda c: ["validate", c.file("r.yaml", LATIN1)], ["r.yaml", "not valid utf-8"]),
    ("recipe binary", lambda c: ["validate", c.file("r.yaml", BINARY)], ["r.yaml", "binary"]),
    ("recipe a folder", lambda c: ["validate", c.folder("r.yaml")], ["r.yaml", "is a folder"]),
    ("recipe a FIFO", lambda c: ["validate", c.fifo("r.yaml")], ["r.yaml", "named pipe"]),
    ("recipe zero bytes", lambda c: ["validate", c.file("r.yaml", "")], ["r.yaml", "missing section 'data'"]),
    ("recipe a list", lambda c: ["validate", c.file("r.yaml", "- 1\n- 2\n")], ["r.yaml", "mapping"]),
    ("recipe billion laughs", lambda c: ["validate", c.file("r.yaml", bomb())], ["r.yaml", "billion laughs"]),
    ("recipe huge integer", lambda c: ["validate", c.file("r.yaml", "train: {seed: " + "9" * 5000 + "}\n")],
     ["r.yaml", "cannot be read as YAML"]),
    ("recipe nested 10k deep", lambda c: ["validate", c.file("r.yaml", "a: " + "[" * 10000 + "]" * 10000)],
     ["r.yaml"]),
    ("recipe bad extends type", lambda c: ["validate", c.file("r.yaml", "extends: 5\n")], ["extends", "5"]),
    ("recipe extends cycle", lambda c: ["validate", c.file("r.yaml", "extends: r.yaml\n")],
     ["cycle", "r.yaml"]),
    ("recipe extends a folder", lambda c: ["validate", c.file("r.yaml", f"extends: {c.folder('d')}\n")],
     ["is a folder"]),
    # -- validate: values training would not accept
    ("betas out of range", lambda c: ["validate", CHAR, "train.betas=[0.9, 1.5]"], ["betas", "1.5"]),
    ("seed beyond 64 bits", lambda c: ["validate", CHAR, f"train.seed={2**70}"], ["train.seed", str(2**70)]),
    ("negative seed", lambda c: ["validate", CHAR, "sample.seed=-3"], ["sample.seed", "-3"]),
    ("unknown encoding", lambda c: ["validate", CHAR, "data.encoding=klingon"], ["data.encoding", "klingon"]),
    ("model too big", lambda c: ["validate", CHAR, "prior.n_layer=48", "prior.n_embd=8192", "prior.n_head=64",
                                 "prior.block_size=4096"], ["needs an estimated", "train.memory_limit_gb"]),
    ("unknown processor", lambda c: ["validate", CHAR, "sample.processors=[{name: nope}]"],
     ["sample.processors[0]", "nope"]),
    ("processor bad setting", lambda c: ["validate", CHAR, "sample.processors=[{name: top_k, k: -2}]"],
     ["sample.processors[0]", "top_k", "-2"]),
    ("processor without a name", lambda c: ["validate", CHAR, "sample.processors=[7]"],
     ["sample.processors.0", "7"]),
    ("pretrained of the wrong kind", lambda c: ["validate", PIXEL, f"tokenizer.pretrained={c.char}"],
     ["holds a 'char' tokenizer", "pixel"]),
    ("pretrained not a tokenizer", lambda c: ["validate", PIXEL, f"tokenizer.pretrained={c.folder('x')}"],
     ["no saved tokenizer", "x"]),
    ("prompt on audio", lambda c: ["validate", str(DEBUG / "mulaw_gpt.yaml"), "sample.prompt=hi"],
     ["sample.prompt", "audio"]),
    # -- train
    ("run-dir of someone else", lambda c:
     ["train", CHAR, "--run-dir", str(Path(c.file("mine/a.txt", "x")).parent)],
     ["mine", "not a tokar run directory"]),
    ("run-dir an existing file", lambda c: ["train", CHAR, "--run-dir", c.file("f", "x")],
     ["f", "existing file"]),
    ("data not UTF-8", lambda c: ["train", CHAR, f"data.path={c.file('d.txt', LATIN1)}", "--run-dir",
                                  str(c.tmp / "r")], ["d.txt", "not valid utf-8"]),
    ("data binary", lambda c: ["train", CHAR, f"data.path={c.file('d.txt', BINARY)}", "--run-dir",
                               str(c.tmp / "r")], ["d.txt", "binary"]),
    ("data a folder", lambda c: ["train", CHAR, f"data.path={c.folder('d')}", "--run-dir", str(c.tmp / "r")],
     ["d", "is a folder"]),
    ("data a FIFO", lambda c: ["train", CHAR, f"data.path={c.fifo('d.txt')}", "--run-dir", str(c.tmp / "r")],
     ["d.txt", "named pipe"]),
    ("data a device", lambda c: ["train", CHAR, "data.path=/dev/zero", "--run-dir", str(c.tmp / "r")],
     ["/dev/zero", "character device"]),
    ("labels out of range", lambda c: ["train", PIXEL, "prior.n_classes=3", "--run-dir", str(c.tmp / "r")],
     ["labels range over [0, 9]", "prior.n_classes=3"]),
    ("resume a folder", lambda c: ["train", "--resume", c.folder("r")], ["r", "not a tokar run directory"]),
    ("resume with a corrupt recipe", lambda c:
     ["train", "--resume", c.copy(c.char, write("recipe.yaml", LATIN1))],
     ["recipe.yaml", "not valid utf-8"]),
    # -- sample
    ("-n absurd", lambda c: ["sample", str(c.char), "-n", str(10**12)], ["-n", "needs an estimated"]),
    ("--beam-size absurd", lambda c: ["sample", str(c.char), "--beam-size", str(10**9)],
     ["--beam-size", "needs an estimated"]),
    ("--max-new-tokens absurd", lambda c: ["sample", str(c.char), "--max-new-tokens", str(10**15)],
     ["--max-new-tokens", "needs an estimated"]),
    ("--seed beyond 64 bits", lambda c: ["sample", str(c.char), "--seed", str(2**70)],
     ["--seed", str(2**70)]),
    ("-n negative", lambda c: ["sample", str(c.char), "-n", "-4"], ["-n", "-4"]),
    ("--out an existing file for a folder", lambda c: ["sample", str(c.char), "--out", c.file("out", "x")],
     ["out", "existing file"]),
    ("--out a folder for a file", lambda c: ["sample", str(c.pixel), "--out", c.folder("g.png")],
     ["g.png", "is a folder"]),
    ("--out under a file", lambda c: ["sample", str(c.char), "--out", c.file("f", "x") + "/s.txt"],
     ["f", "existing file"]),
    ("--out images to .txt", lambda c: ["sample", str(c.pixel), "--out", str(c.tmp / "g.txt")],
     ["g.txt", ".png"]),
    ("class out of range", lambda c: ["sample", str(c.pixel), "--class", "12"], ["class 12", "0 to 9"]),
    ("class unknown name", lambda c: ["sample", str(c.pixel), "--class", "Sneaker"], ["Sneaker"]),
    ("class on an unconditional run", lambda c: ["sample", str(c.char), "--class", "3"], ["unconditional"]),
    ("prompt on audio", lambda c: ["sample", str(c.audio), "--prompt", "hello"], ["--prompt", "audio"]),
    ("stop on audio", lambda c: ["sample", str(c.audio), "--stop", "x"], ["--stop", "audio"]),
    ("--compile on a prior without a compiled step", lambda c: ["sample", str(c.char), "--compile"],
     ["gpt", "no compiled step", "--compile"]),
    ("corrupt classes.json", lambda c: ["sample", c.copy(c.pixel, write("classes.json", b"{\x00"))],
     ["classes.json", "corrupt"]),
    ("classes.json of the wrong type", lambda c:
     ["sample", c.copy(c.pixel, set_json("classes.json", {"a": 1}))],
     ["classes.json", "list"]),
    ("tokenizer config of the wrong type",
     lambda c: ["sample", c.copy(c.char, set_json("tokenizer/config.json", {"name": "char", "config": 5}))],
     ["tokenizer", "config.json"]),
    ("tokenizer config a list", lambda c: ["sample", c.copy(c.char, set_json("tokenizer/config.json", [1]))],
     ["tokenizer/config.json"]),
    ("prior format_version a string",
     lambda c: ["sample", c.copy(c.char, lambda r: (r / "prior/config.json").write_text(
         (r / "prior/config.json").read_text().replace('"format_version": 1', '"format_version": "x"')))],
     ["prior/config.json", "format_version"]),
    ("prior weights not safetensors", lambda c: ["sample", c.copy(c.char, write("prior/model.safetensors",
                                                                                 b"PK\x03\x04pickle"))],
     ["model.safetensors", "corrupt"]),
    ("run recipe binary", lambda c: ["sample", c.copy(c.char, write("recipe.yaml", BINARY))],
     ["recipe.yaml", "binary"]),
    ("not a run", lambda c: ["sample", c.folder("empty")], ["empty", "not a tokar run directory"]),
    ("run is a file", lambda c: ["sample", c.file("run", "x")], ["run", "file"]),
    ("draft not a run", lambda c: ["sample", str(c.char), "--draft", c.folder("d")],
     ["d", "not a tokar run"]),
    # -- score
    ("score text not UTF-8", lambda c: ["score", str(c.char), c.file("x.txt", LATIN1)], ["x.txt", "utf-8"]),
    ("score text binary", lambda c: ["score", str(c.char), c.file("x.bin", BINARY)], ["x.bin", "binary"]),
    ("score a FIFO", lambda c: ["score", str(c.char), c.fifo("x.txt")], ["x.txt", "named pipe"]),
    ("score a device", lambda c: ["score", str(c.char), "/dev/zero"], ["/dev/zero", "character device"]),
    ("score missing", lambda c: ["score", str(c.char), str(c.tmp / "nope.txt")],
     ["nope.txt", "does not exist"]),
    ("score zero-byte image", lambda c: ["score", str(c.pixel), c.file("z.png", b""), "--class", "1"],
     ["z.png", "cannot be read"]),
    ("score text as image", lambda c: ["score", str(c.pixel), c.file("t.png", "hello"), "--class", "1"],
     ["t.png", "cannot be read"]),
    ("score image header only", lambda c: ["score", str(c.pixel), c.file("h.png", png_header(8, 8, False)),
                                           "--class", "1"], ["h.png", "cannot be read"]),
    ("score truncated image", lambda c:
     ["score", str(c.pixel), c.file("t.png", png_header(8, 9)), "--class", "1"],
     ["t.png", "cannot be read"]),
    ("score image declaring 10^10 pixels", lambda c: ["score", str(c.pixel), c.file("big.png", png_header(
        10**5, 10**5)), "--class", "1"], ["big.png", "10000000000 pixels"]),
    ("score image declaring 10^8 pixels", lambda c: ["score", str(c.pixel), c.file("big.png", png_header(
        10**4, 10**4)), "--class", "1"], ["big.png", "100000000 pixels"]),
    ("score image of another size", lambda c: ["score", str(c.pixel), _png(c, "w.png", 5, 7), "--class", "1"],
     ["5", "7"]),
    ("score folder without images", lambda c: ["score", str(c.pixel), c.folder("imgs")],
     ["imgs", "no images"]),
    ("score image class out of range", lambda c:
     ["score", str(c.pixel), _png(c, "a.png", 8, 8), "--class", "99"],
     ["class 99", "0 to 9"]),
    ("score WAV declaring 1 Hz", lambda c: ["score", str(c.audio), c.file("slow.wav", wav_at(1, 400_000))],
     ["slow.wav", "1 Hz", "needs an estimated"]),
    ("score WAV not audio", lambda c: ["score", str(c.audio), c.file("n.wav", "not audio")], ["n.wav"]),
    ("score WAV a FIFO", lambda c: ["score", str(c.audio), c.fifo("f.wav")], ["f.wav", "named pipe"]),
    # -- plot
    ("plot metrics binary", lambda c: ["plot", c.copy(c.char, write("metrics.jsonl", BINARY))],
     ["metrics.jsonl", "no training or validation records"]),
    ("plot metrics of the wrong shape", lambda c: ["plot", c.copy(c.char, write("metrics.jsonl",
                                                                                  b'[1]\n{"step": "x"}\n'))],
     ["metrics.jsonl"]),
    ("plot metrics a folder", lambda c: ["plot", c.copy(c.char, lambda r: ((r / "metrics.jsonl").unlink(),
                                                                           (r / "metrics.jsonl").mkdir()))],
     ["metrics.jsonl", "folder"]),
    ("plot --out a folder", lambda c: ["plot", str(c.char), "--out", c.folder("o.png")], ["o.png", "folder"]),
    ("plot --out unknown format", lambda c: ["plot", str(c.char), "--out", str(c.tmp / "c.xyz")],
     ["c.xyz", ".png"]),
    ("plot --out under a file", lambda c: ["plot", str(c.char), "--out", c.file("f", "x") + "/c.png"],
     ["f", "existing file"]),
    ("plot not a run", lambda c: ["plot", c.folder("e")], ["e", "metrics.jsonl"]),
    # -- codes verify
    ("codes on a text run", lambda c: ["codes", "verify", str(c.char)], ["image code grids"]),
    ("codes --limit 0", lambda c: ["codes", "verify", str(c.pixel), "--limit", "0"], ["--limit", "0"]),
    ("codes on a corrupt run", lambda c: ["codes", "verify", c.copy(c.pixel, write("recipe.yaml", LATIN1))],
     ["recipe.yaml"]),
]


def _png(c: Ctx, name: str, width: int, height: int) -> str:
    from PIL import Image

    path = c.tmp / name
    Image.fromarray(np.zeros((height, width), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def ctx(tmp_path, fault_char, fault_pixel, fault_audio) -> Ctx:
    return Ctx(tmp_path, fault_char, fault_pixel, fault_audio)


@pytest.mark.parametrize("name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(ctx, capsys, caplog, name, argv, expected):
    args = argv(ctx)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        status = main(["-q", *args])
    err = capsys.readouterr().err
    assert not caplog.records, f"the error comes with warnings: {caplog.text}"  # one message only
    assert "Traceback" not in err, err
    assert status == 2, err
    assert err.startswith("error: "), err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert time.perf_counter() - start < 30  # no hang, no runaway allocation
