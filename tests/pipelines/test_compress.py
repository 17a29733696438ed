"""Lossless compression (pipelines/compression/container.py): round trips through every shipped lossless debug
recipe, fuzzed inputs, determinism across processes and thread counts and after save/load, and
every bad input the issue lists (one line, exit status 2, nothing written)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines import Pipeline
from pipelines.cli.main import main
from pipelines.compression.coding import CodingStats, plan_blocks
from pipelines.compression.container import (
    FORMAT_VERSION,
    _columns,
    _combined,
    _seal,
    decompress,
    read_container,
)
from pipelines.compression.lossless import compress_mode
from plugins.errors import CompressionError
from plugins.manager import get_registries
from tests.conftest import DATA_DIR, need_shakespeare

ROOT = Path(__file__).resolve().parents[2]
LOSSLESS_DEBUG = ["char_gpt", "char_lstm", "bpe_gpt", "pixel_gpt", "pixel_pixelcnn", "mulaw_gpt",
                  "mulaw_lstm", "mulaw_wavenet"]
SMALL = {"block_length": 64, "batch_size": 4}  # several blocks and several batches
FUZZ = settings(max_examples=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Debug runs, trained a few steps on first use (`runs(name)` -> (run_dir, pipeline))."""
    root, made = tmp_path_factory.mktemp("compress_runs"), {}

    def get(name: str, *overrides: str) -> tuple[Path, Pipeline]:
        key = (name, overrides)
        if key not in made:
            run = root / f"{name}{len(made)}"
            pipe = Pipeline.from_recipe(ROOT / "recipes/debug" / f"{name}.yaml",
                                        ["train.max_steps=6", "train.eval_every=6",
                                         "train.eval_samples=0", *overrides])
            pipe.train(run, progress=False)
            made[key] = (run, Pipeline.load(run))
        return made[key]

    return get


def held_out_text(n: int = 700) -> str:
    text = need_shakespeare().read_text()
    start = len(text) - len(text) // 20
    return text[start : start + n]


def fsdd_clip(n: int = 300) -> tuple[np.ndarray, int]:
    wave, rate = sf.read(sorted((DATA_DIR / "fsdd/recordings").glob("7_george_0.wav"))[0])
    return wave[:n], rate


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", LOSSLESS_DEBUG)
def test_round_trip_through_every_lossless_debug_recipe(runs, recipe):
    _, pipe = runs(recipe)
    modality = pipe.tokenizer.modality
    if modality == "text":
        text = held_out_text() + " naïve ☃ \U0001f600\x00"  # characters never seen in training
        blob = pipe.compress(text, **SMALL)
        assert pipe.decompress(blob) == text
        raw = text.encode() + b"\xff\xfe\x80 tail"  # and bytes that are not UTF-8
        assert pipe.decompress(pipe.compress(raw, **SMALL)) == raw
    elif modality == "image":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = [digits.images[i].astype(np.int64) for i in (0, 7, 33, 101)]
        labels = [int(digits.target[i]) for i in (0, 7, 33, 101)]
        blob = pipe.compress_all(images, labels, batch_size=3)
        back = pipe.decompress_all(blob)
        assert all(np.array_equal(a, b) and b.dtype == a.dtype for a, b in zip(images, back, strict=True))
        assert [i["cond"] for i in read_container(blob).header["items"]] == labels
    else:  # mu-law: lossless on the codes
        clip = fsdd_clip()
        label = 7 if pipe.prior.num_classes else None
        blob = pipe.compress(clip, label, block_length=128, batch_size=2)
        codes = pipe.tokenizer.encode(clip)
        assert torch.equal(pipe.decompress(blob, codes=True), codes)
        wave = pipe.decompress(blob)
        assert np.allclose(wave, pipe.tokenizer.decode(codes))
        # the decoded audio encodes to the very same codes: compressing it again is stable
        assert torch.equal(pipe.tokenizer.encode((wave, 8000)), codes)


def test_coded_size_is_the_ideal_code_length_plus_a_few_bytes(runs):
    run, pipe = runs("char_gpt")
    from pipelines.compression.container import Settings, compress, float_model

    stats = CodingStats()
    text = held_out_text(3000)  # the float path: the head's own -log p is known token by token
    blob = compress(float_model(pipe.prior, pipe.tokenizer), [text], None, Settings(256, 4),
                    stats=stats)
    c = read_container(blob)
    coded_bits = 32 * sum(s.size for s in c.streams)
    assert stats.tokens == len(text)
    assert stats.pmf_bits <= coded_bits <= stats.pmf_bits * 1.01 + 64 * len(c.streams)
    # the 16-bit integer pmfs cost next to nothing over the model's own float probabilities
    assert abs(stats.pmf_bits - stats.model_bits) < 0.01 * stats.model_bits


def test_blocks_cover_every_token_once():
    blocks = plan_blocks([5, 0, 12], 4, [1, 2, 3])
    assert [(b.item, b.start, b.length, b.cond) for b in blocks] == [
        (0, 0, 4, 1), (0, 4, 1, 1), (2, 0, 4, 3), (2, 4, 4, 3), (2, 8, 4, 3)]
    assert [b.length for b in plan_blocks([7], None)] == [7]


def test_eight_bit_png_round_trips_with_identical_pixels(runs, tmp_path, capsys):
    run, _ = runs("pixel_pixelcnn", "tokenizer.levels=256", "tokenizer.max_value=255")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "x.png")
    assert main(["-q", "compress", str(run), str(tmp_path / "x.png"), "--class", "3"]) == 0
    (tmp_path / "x.png").rename(tmp_path / "original.png")
    assert main(["-q", "decompress", str(run), str(tmp_path / "x.png.tkz")]) == 0
    back = Image.open(tmp_path / "x.png")
    assert back.mode == "L" and np.array_equal(np.asarray(back), pixels)
    # a colour image into this grayscale model would not come back: refused, nothing written
    colour = np.stack([pixels, pixels // 2, 255 - pixels], -1)
    Image.fromarray(colour, "RGB").save(tmp_path / "c.png")
    assert main(["-q", "compress", str(run), str(tmp_path / "c.png"), "--class", "3"]) == 2
    assert "would not come back identical" in capsys.readouterr().err
    assert not (tmp_path / "c.png.tkz").exists()


def test_quantizing_pixel_run_refuses_eight_bit_images(runs):
    _, pipe = runs("pixel_gpt")  # 17 levels for values 0..16: an 8-bit image would be quantized
    image = Image.fromarray(np.full((8, 8), 100, np.uint8), "L")
    with pytest.raises(CompressionError, match="17 levels"):
        pipe.compress(image, 1)


def test_a_prior_trained_in_another_order_codes_in_that_order(runs):
    """`order: random`: the prior reads pixels in its own order; the file codes them so, costs
    what the model says, and comes back in data order. Per-token scores come back in data order."""
    from pipelines.scoring import score_examples

    _, pipe = runs("pixel_gpt", "order.name=random", "order.seed=3")
    _, raster = runs("pixel_gpt")
    image = np.random.default_rng(0).integers(0, 17, (8, 8))
    blob = pipe.compress(image, 1)
    assert np.array_equal(pipe.decompress(blob), image)
    c = read_container(blob)
    model_bits = pipe.score([image], labels=[1]).per_example[0].nats / np.log(2)
    assert 32 * sum(s.size for s in c.streams) <= model_bits + 64  # what the model says, + flush
    with pytest.raises(CompressionError):  # the order is part of what a file was coded with
        raster.decompress(blob)
    per_token = pipe.score([image], labels=[1], per_token=True).per_example[0].token_nats
    raw = score_examples(pipe.prior, pipe.ordered_tokenizer, [image], [1], ["x"], 1, True,
                         None).per_example[0].token_nats  # position k = pixel perm[k]
    perm = pipe.ordering.perm.tolist()
    assert perm != list(range(64)) and perm != pipe.ordering.inverse.tolist()
    assert [per_token[perm[k]] for k in range(64)] == pytest.approx(raw)


def test_conditional_priors_need_the_class(runs):
    _, pipe = runs("pixel_gpt")
    with pytest.raises(CompressionError, match="class-conditional"):
        pipe.compress(np.zeros((8, 8), np.int64))


@pytest.mark.parametrize("name", sorted(e.name for e in get_registries().tokenizers))
def test_lossy_and_continuous_tokenizers_are_refused_with_the_reason(name):
    cls = get_registries().tokenizers.get(name)
    tokenizer = cls(**cls.smoke_settings)
    if name in ("vqvae", "vqgan"):
        with pytest.raises(CompressionError, match="lossy: its decoder reconstructs an approximation"):
            compress_mode(tokenizer)
    elif name in ("real", "waveform"):
        with pytest.raises(CompressionError, match="continuous"):
            compress_mode(tokenizer)
    else:  # plugins' tokenizers (the example's lossy `words`) follow their declared properties
        assert compress_mode(tokenizer) == ("exact" if tokenizer.lossless else "codes")
        if name in ("char", "bpe", "pixel", "mulaw"):
            assert compress_mode(tokenizer) == ("codes" if name == "mulaw" else "exact")


# -- fuzzed inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["char_gpt", "bpe_gpt"])
@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=200),
                      st.text(alphabet=st.characters(codec="utf-8"), max_size=50)))
def test_fuzzed_inputs_round_trip(runs, recipe, data):
    _, pipe = runs(recipe)
    blob = pipe.compress(data, block_length=16, batch_size=3)
    back = pipe.decompress(blob)
    assert back == data and type(back) is type(data)


@pytest.mark.parametrize("recipe", ["char_gpt", "bpe_gpt"])
@pytest.mark.parametrize("data", [b"", "", b"\x00", "x", b"\xff", "\udcff", "a" * 3000,
                                  b"ab" * 1500, bytes(range(256)) * 4, "\U0001f600" * 40],
                         ids=["empty-bytes", "empty-str", "one-byte", "one-char", "invalid-byte",
                              "lone-surrogate", "repeat-a", "repeat-ab", "all-bytes", "emoji"])
def test_edge_inputs_round_trip(runs, recipe, data):
    _, pipe = runs(recipe)
    assert pipe.decompress(pipe.compress(data, block_length=256)) == data


def test_unseen_characters_are_escaped_not_refused(runs):
    _, pipe = runs("char_gpt")
    text = "To be ☃ or not \u00e9 to be\x00" + held_out_text(3000)  # long enough to be coded
    blob = pipe.compress(text)
    item = read_container(blob).header["items"][0]
    assert item["meta"]["escaped"] == 3 and item["escapes"] > 0
    assert pipe.decompress(blob) == text


# -- determinism ----------------------------------------------------------------------------------
def test_round_trip_across_processes_thread_counts_and_save_load(runs, tmp_path):
    """Compressed here (1 torch thread outside the coder, 2 inside for one file), decompressed in
    another process with 2 threads outside, and here again after save/load of the run."""
    text = held_out_text(1500)
    (tmp_path / "t.txt").write_text(text)
    jobs = []
    for recipe, threads in (("char_gpt", 2), ("char_lstm", 1)):  # GPT blocks slide its window
        run, pipe = runs(recipe)
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            blob = pipe.compress(text.encode(), block_length=300, batch_size=3, threads=threads)
        finally:
            torch.set_num_threads(saved)
        (tmp_path / f"{recipe}.tkz").write_bytes(blob)
        jobs.append(["-q", "decompress", str(run), str(tmp_path / f"{recipe}.tkz")])
        pipe.save(tmp_path / f"copy_{recipe}")
        assert Pipeline.load(tmp_path / f"copy_{recipe}").decompress(blob) == text.encode()
    code = ("import sys, torch; torch.set_num_threads(2); from pipelines.cli.main import main; "
            f"sys.exit(max(main(args) for args in {jobs!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=600)
    assert done.returncode == 0, done.stderr
    for recipe in ("char_gpt", "char_lstm"):
        assert (tmp_path / recipe).read_bytes() == text.encode()


# -- bad input ------------------------------------------------------------------------------------
def _resealed(blob: bytes, offset: int, value: int) -> bytes:
    """`blob` with one byte changed and its CRC32 made to match again."""
    b = bytearray(blob)
    b[offset] = value
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


@pytest.mark.parametrize("case", ["truncated", "bit-flip", "other-model", "newer-version",
                                  "not-a-tkz", "output-exists", "compress-output-exists"])
def test_bad_input_is_one_line_exit_2_nothing_written(runs, tmp_path, capsys, case):
    run, pipe = runs("char_gpt")
    text = held_out_text(3000).encode()  # coded, not stored: it needs its model
    blob = pipe.compress(text)
    (tmp_path / "in.txt").write_bytes(text)
    bad = tmp_path / "bad.tkz"
    out = tmp_path / "out.txt"
    args = ["-q", "decompress", str(run), str(bad), "-o", str(out)]
    expect = {"truncated": "damaged or truncated", "bit-flip": "damaged or truncated",
              "other-model": "compressed with another model", "newer-version": "newer than this tokar",
              "not-a-tkz": "not a tokar compressed file", "output-exists": "already exists; pass --force",
              "compress-output-exists": "already exists; pass --force"}[case]
    flipped = bytearray(blob)
    flipped[len(blob) - 10] ^= 0x10
    bad.write_bytes({"truncated": blob[: len(blob) // 2], "bit-flip": bytes(flipped),
                     "newer-version": _resealed(blob, 4, FORMAT_VERSION + 1),
                     "not-a-tkz": text}.get(case, blob))
    if case == "other-model":
        other, _ = runs("char_lstm")  # the same characters, another prior
        args[2] = str(other)
    elif case == "output-exists":
        out.write_text("keep me")
    elif case == "compress-output-exists":
        out = tmp_path / "in.txt.tkz"
        out.write_text("keep me")
        args = ["-q", "compress", str(run), str(tmp_path / "in.txt")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    if case.endswith("output-exists"):
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_force_overwrites(runs, tmp_path):
    run, _ = runs("char_gpt")
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "a.txt.tkz").write_text("old")
    assert main(["-q", "compress", str(run), str(tmp_path / "a.txt"), "--force"]) == 0
    assert read_container((tmp_path / "a.txt.tkz").read_bytes()).header["items"][0]["length"] == 5


# -- the stored form (pipelines/compression/stored.py) ------------------------------------------
def test_images_and_arrays_coding_would_enlarge_are_stored(runs, tmp_path):
    """A barely trained 8-bit model codes random pixels at about 8 bits each plus its header:
    the file stores them instead (a PNG; an array's raw bytes) and they come back identical."""
    _, pipe = runs("pixel_pixelcnn", "tokenizer.levels=256", "tokenizer.max_value=255")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    array = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    for data in (image, array):
        blob = pipe.compress(data, 3)
        h = read_container(blob).header
        assert h["stored"] and "coder" not in h
        back = pipe.decompress(blob)
        if isinstance(data, Image.Image):
            assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(image))
        else:
            assert back.dtype == array.dtype and np.array_equal(back, array)
    many = pipe.compress_all([image, image], [3, 3])
    assert read_container(many).header["stored"]
    assert [np.asarray(x).tolist() for x in pipe.decompress_all(many)] == \
        [np.asarray(image).tolist()] * 2


def test_a_stored_image_claiming_more_pixels_than_its_bytes_hold_is_refused():
    """An edited file: a PNG whose header claims 8000 x 8000 pixels (64 MB) over a hundred
    bytes is refused before PIL allocates anything."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", 8000, 8000)  # IHDR width and height: under PIL's own bomb limit
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # and its chunk CRC
    item = {"kind": "image", "meta": {"mode": "L", "size": [8000, 8000]},
            "length": 8000 * 8000, "stored": len(png)}
    header = {"stored": True, "list": False, "crc32": _combined([0]), "items": _columns([item])}
    blob = _seal(FORMAT_VERSION, header, bytes(png))
    with pytest.raises(CompressionError, match="cannot come from"):
        decompress(blob, resolve=None)  # a stored file needs no model
