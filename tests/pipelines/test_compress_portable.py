"""Portable compression (issue 25): files coded with the integer-exact coder decode on any machine
and after further training (frozen codecs), the float path still refuses another model, version 1
files still decode, edited headers are one-line refusals, and no file is larger than its data
stored plus a fixed 13 bytes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.compression.codecs import CODEC_FILE, CODECS_DIR
from pipelines.compression.container import (
    MAX_DEFAULT_BATCH_SIZE,
    STATE_BUDGET,
    STORED_OVERHEAD,
    Settings,
    compress,
    default_batch_size,
    float_model,
    read_container,
)
from plugins.errors import CompressionError
from tests.conftest import need_shakespeare

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["train.max_steps=4", "train.eval_every=4", "train.eval_samples=0"]


def train(run: Path, recipe: str = "char_gpt", *overrides: str) -> Pipeline:
    pipe = Pipeline.from_recipe(ROOT / "recipes/debug" / f"{recipe}.yaml", [*STEPS, *overrides])
    pipe.train(run, progress=False)
    return Pipeline.load(run)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> tuple[Path, Pipeline]:
    run = tmp_path_factory.mktemp("portable") / "gpt"
    return run, train(run)


def text(n: int = 3000) -> str:  # long enough that coding beats storing, even 4 steps in
    t = need_shakespeare().read_text()
    return t[len(t) - len(t) // 20 :][:n]


def cli(*args: str) -> int:
    return main(["-q", *[str(a) for a in args]])


# -- portable by default, frozen codecs -----------------------------------------------------------
def test_portable_is_the_default_and_freezes_the_codec(gpt_run):
    run, pipe = gpt_run
    data = text()
    blob = pipe.compress(data)
    coder = read_container(blob).header["coder"]
    assert coder["portable"] is True and coder["block_length"] <= 32  # the GPT's context
    assert (run / CODECS_DIR / coder["codec"] / CODEC_FILE).is_file()
    assert pipe.decompress(blob) == data
    assert Pipeline.load(run).decompress(blob) == data  # a fresh load finds the frozen codec
    floats = pipe.compress(data, portable=False)
    assert read_container(floats).header["coder"]["portable"] is False
    assert pipe.decompress(floats) == data
    # the integer coder costs about what the float prior does (a few percent at most)
    assert len(blob) < 1.1 * len(floats)


def test_files_decode_after_training_further_and_the_float_path_refuses(tmp_path, capsys):
    run = tmp_path / "run"
    train(run)
    (tmp_path / "a.txt").write_text(text())
    assert cli("compress", run, tmp_path / "a.txt") == 0
    assert cli("compress", run, tmp_path / "a.txt", "-o", tmp_path / "f.tkz", "--no-portable") == 0
    assert main(["-q", "train", "--resume", str(run), "train.max_steps=8", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli("decompress", run, tmp_path / "a.txt.tkz", "-o", tmp_path / "b.txt") == 0
    assert (tmp_path / "b.txt").read_bytes() == (tmp_path / "a.txt").read_bytes()
    capsys.readouterr()
    assert cli("decompress", run, tmp_path / "f.tkz", "-o", tmp_path / "c.txt") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compressed with another model (run 'run')" in err
    assert not (tmp_path / "c.txt").exists()


def test_an_exported_codec_decodes_without_the_run(gpt_run, tmp_path, capsys):
    run, pipe = gpt_run
    data = text().encode()
    (tmp_path / "x.tkz").write_bytes(pipe.compress(data))
    (tmp_path / "f.tkz").write_bytes(pipe.compress(data, portable=False))
    assert cli("export-codec", run, tmp_path / "codecs") == 0
    fp = read_container((tmp_path / "x.tkz").read_bytes()).header["coder"]["codec"]
    assert (tmp_path / "codecs" / fp / CODEC_FILE).is_file()
    for where in (tmp_path / "codecs", tmp_path / "codecs" / fp):
        out = tmp_path / f"x{len(where.parts)}.txt"
        assert cli("decompress", where, tmp_path / "x.tkz", "-o", out) == 0
        assert out.read_bytes() == data
    capsys.readouterr()
    assert cli("decompress", tmp_path / "codecs", tmp_path / "f.tkz", "-o", tmp_path / "f.txt") == 2
    assert "--no-portable, which needs its run" in capsys.readouterr().err


def test_version_1_files_still_decode(gpt_run):
    _, pipe = gpt_run
    data = text(400)  # version 1 has no stored mode: coded whatever it costs
    blob = compress(float_model(pipe.prior, pipe.ordered_tokenizer), [data], None,
                    Settings(64, 4), many=False, version=1)
    assert blob[4] == 1 and "portable" not in json.loads(zlib.decompress(blob[9:-4][
        : struct.unpack("<I", blob[5:9])[0]]))["coder"]
    assert pipe.decompress(blob) == data


def test_files_of_the_first_gpt_coder_still_decode(tmp_path, capsys):
    """tests/data/gpt_format1: a char GPT's file and frozen codec written by tokar before the gpt
    coder's format 2 (float32 products). The codec names format 1, and it decodes the file."""
    fixture = ROOT / "tests/data/gpt_format1"
    codec = fixture / "a8e467a14a8c9440"
    config = json.loads((codec / "coder/config.json").read_text())
    assert config["format_version"] == 1
    assert {m["kind"] for m in config["modules"].values()} >= {"linear", "layernorm"}
    assert read_container((fixture / "text.txt.tkz").read_bytes()).header["coder"]["portable"]
    assert cli("decompress", codec, fixture / "text.txt.tkz", "-o", tmp_path / "out.txt") == 0
    assert (tmp_path / "out.txt").read_bytes() == (fixture / "text.txt").read_bytes()


def test_progress_ticks_every_position_and_threads_do_not_change_the_file(gpt_run):
    """Progress comes position by position (a batch can take minutes), summing to the tokens;
    portable coding uses the process's threads, and the bytes do not depend on them."""
    _, pipe = gpt_run
    data = text(1200)
    ticks: list[tuple[int, int]] = []
    blob = pipe.compress(data, batch_size=64, progress=lambda n, total: ticks.append((n, total)))
    total = ticks[0][1]
    assert len(ticks) == pipe.prior.config.block_size  # one batch: one tick per position
    assert sum(n for n, _ in ticks) == total == len(pipe.encode(data))
    back: list[int] = []
    assert pipe.decompress(blob, progress=lambda n, _: back.append(n)) == data
    assert sum(back) == total and len(back) == len(ticks)
    assert read_container(blob).header["coder"]["threads"] == torch.get_num_threads()
    one, two = (read_container(pipe.compress(data, batch_size=64, threads=n)) for n in (1, 2))
    assert one.header["coder"]["threads"] == 1  # what it used: the header records it
    assert [w.tobytes() for w in one.streams] == [w.tobytes() for w in two.streams]


def test_gpt_blocks_default_to_one_window_and_longer_ones_slide(gpt_run):
    """A portable GPT codes one window per block by default (many blocks: fast); a longer
    block slides the window as the float GPT does, and gives every token more context."""
    _, pipe = gpt_run
    data = text(3000)  # long enough that coding beats storing
    default, long = pipe.compress(data), pipe.compress(data, block_length=100)
    assert read_container(default).header["coder"]["block_length"] == 32  # debug gpt's window
    assert read_container(long).header["coder"]["block_length"] == 100  # 4 slides a block
    assert pipe.decompress(long) == data and pipe.decompress(default) == data


def test_default_batch_fits_the_gpt_cache_in_a_memory_budget(gpt_run):
    _, pipe = gpt_run
    data = text(3000)
    coder = pipe.codec().coder
    assert coder.state_bytes_per_block() == 2 * 4 * 1 * 32 * (32 + 2)  # debug gpt: 1 x 32, 2 heads
    assert default_batch_size(coder.state_bytes_per_block()) == MAX_DEFAULT_BATCH_SIZE  # the cap
    assert read_container(pipe.compress(data)).header["coder"]["batch_size"] == 1024
    assert read_container(pipe.compress(data, portable=False)).header["coder"]["batch_size"] == 64

    assert default_batch_size(2 << 20) == STATE_BUDGET // (2 << 20) == 128  # 2 MB a block
    assert default_batch_size(None) == 64  # a coder that does not say


# -- never larger than stored ---------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"x", bytes(np.random.default_rng(0).integers(0, 256, 3000,
                                                                                     np.uint8))],
                         ids=["empty", "one-byte", "random-bytes"])
def test_no_file_is_larger_than_its_bytes_stored(gpt_run, tmp_path, data):
    run, _ = gpt_run
    (tmp_path / "in").write_bytes(data)
    assert cli("compress", run, tmp_path / "in") == 0
    blob = (tmp_path / "in.tkz").read_bytes()
    assert len(blob) <= len(data) + STORED_OVERHEAD
    assert cli("decompress", run, tmp_path / "in.tkz", "-o", tmp_path / "out") == 0
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.parametrize("data", ["", "é", ["x", b"\xff"]], ids=["empty-str", "one-char", "list"])
def test_stored_strings_and_lists_keep_their_types(gpt_run, data):
    _, pipe = gpt_run
    if isinstance(data, list):
        blob = pipe.compress_all(data)
        assert read_container(blob).header["stored"] and pipe.decompress_all(blob) == data
    else:
        back = pipe.decompress(pipe.compress(data))
        assert back == data and type(back) is str


# -- hostile headers ------------------------------------------------------------------------------
def rewritten(blob: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """`blob` with its header edited by `edit` (in place, or returning a new header, or raw
    bytes to put there) and a CRC32 that matches again."""
    n = struct.unpack("<I", blob[5:9])[0]
    header = json.loads(zlib.decompress(blob[9 : 9 + n]))
    new = edit(header)
    head = new if isinstance(new, bytes) else \
        zlib.compress(json.dumps(header if new is None else new).encode())
    body = blob[:5] + struct.pack("<I", len(head)) + head + blob[9 + n : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(h: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            h = h[p]
        h[last] = value
    return edit


ATTACKS = {
    "batch-size-0": _set("coder.batch_size", 0),
    "batch-size-huge": _set("coder.batch_size", 10**12),
    "threads-0": _set("coder.threads", 0),
    "threads-huge": _set("coder.threads", 10**9),
    "threads-float": _set("coder.threads", 1.5),
    "block-length-0": _set("coder.block_length", 0),
    "tokens-1e13": _set("items.same.tokens", 10**13),
    "tokens-many": _set("items.same.tokens", 5_000_000),
    "meta-wrong-type": _set("items.same.meta", "text"),
    "meta-type-unknown": _set("items.same.meta", {"type": "bits"}),
    "length-negative": _set("items.same.length", -1),
    "escapes-negative": _set("items.same.escapes", -5),
    "n-mismatch": _set("items.n", 7),
    "kind-unknown": _set("items.same.kind", "video"),
    "cond-string": _set("items.same.cond", "3"),
    "batches-negative": _set("batches", [-1]),
    "batches-not-list": _set("batches", 4),
    "crc-string": _set("crc32", "0"),
    "portable-string": _set("coder.portable", "yes"),
    "codec-number": _set("coder.codec", 12),
    "precision-other": _set("coder.precision", 12),
    "header-a-list": lambda h: [1, 2],
    "header-not-json": lambda h: zlib.compress(b"{not json"),
    "header-not-zlib": lambda h: b"\x00\x01garbage",
    "zlib-bomb": lambda h: zlib.compress(b" " * (200 << 20), 9),
}


@pytest.fixture(scope="module")
def coded(gpt_run) -> bytes:
    blob = gpt_run[1].compress(text(), block_length=16, batch_size=64)
    assert not read_container(blob).header["stored"]
    return blob


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_headers_are_one_line_exit_2(gpt_run, coded, tmp_path, capsys, attack):
    run, _ = gpt_run
    (tmp_path / "bad.tkz").write_bytes(rewritten(coded, ATTACKS[attack]))
    capsys.readouterr()
    start = time.monotonic()
    assert cli("decompress", run, tmp_path / "bad.tkz", "-o", tmp_path / "out.txt") == 2
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "out.txt").exists()


def test_header_length_past_the_end_is_refused(coded):
    blob = bytearray(coded)
    blob[5:9] = struct.pack("<I", 2**31)
    blob[-4:] = struct.pack("<I", zlib.crc32(bytes(blob[:-4])))
    with pytest.raises(CompressionError, match="prefix is invalid"):
        read_container(bytes(blob))


# -- the same bytes under every CPU kernel set ----------------------------------------------------
def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _kernel_run(capability: str, *args: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "-q", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": capability})
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not _has_avx2(), reason="needs a CPU with AVX2 to compare kernel sets")
@pytest.mark.parametrize("recipe", ["char_gpt", "char_lstm"])
def test_files_decode_across_cpu_kernel_sets(tmp_path, recipe):
    """Compressed under the AVX2 kernels and decompressed under the default (scalar) ones, and the
    other way round, in separate processes: the same bytes, and the same file from both."""
    run = tmp_path / "run"
    train(run, recipe)
    data = text(500).encode()
    (tmp_path / "a.txt").write_bytes(data)
    for first, second in (("avx2", "default"), ("default", "avx2")):
        packed, out = tmp_path / f"{first}.tkz", tmp_path / f"{first}.out"
        _kernel_run(first, "compress", run, tmp_path / "a.txt", "-o", packed, "--block-length", 64,
                    "--batch-size", 3)
        _kernel_run(second, "decompress", run, packed, "-o", out)
        assert out.read_bytes() == data
    assert (tmp_path / "avx2.tkz").read_bytes() == (tmp_path / "default.tkz").read_bytes()
