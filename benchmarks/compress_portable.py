"""Portable (integer-exact) against float compression of held-out Tiny Shakespeare with one trained
text run, next to zstd -19 (with and without a dictionary trained on the training text), gzip -9,
bzip2 -9 and xz -9 of the same bytes.

    TOKAR_DATA_DIR=../shared/data python benchmarks/compress_portable.py --run runs/char_gpt

The held-out text is a uniform subsample of the validation split (`--pieces` pieces of
`--piece-chars` characters at evenly spaced offsets, joined), not a prefix. For each coder
(portable; float at the same block length): the whole file in bits per character, and
encode/decode speed in KB/s of input at each batch size (a GPT: one window per block, its
coder's default; else the text is cut into enough blocks to fill the batch), then both at
2,048-token blocks (the container's default length: a GPT's window slides). Decompression is
checked byte for byte. The CPU model and its flags are printed with the result (`machine`):
float speed moves with them, portable bits do not.

Not here: images and audio (compress_images.py, compress_audio.py with --portable).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.compression.container import read_container  # noqa: E402

TOOLS = {"gzip -9": ["gzip", "-9", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"],
         "xz -9": ["xz", "-9", "-c"], "zstd -19": ["zstd", "-19", "-c", "-q"]}


def split_text(pipe: Pipeline, split: str) -> str:
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    return "".join(splits[split]["example"])


def subsample(text: str, pieces: int, piece_chars: int) -> str:
    """`pieces` pieces of `piece_chars` characters at evenly spaced offsets over the whole text."""
    step = max((len(text) - piece_chars) // max(pieces - 1, 1), piece_chars)
    return "".join(text[i : i + piece_chars] for i in range(0, len(text) - piece_chars + 1, step)
                   [:pieces])


def baselines(data: bytes, training: bytes, tmp: Path) -> dict[str, int]:
    (tmp / "held_out").write_bytes(data)
    sizes = {name: len(subprocess.run([*cmd, str(tmp / "held_out")], capture_output=True,
                                      check=True).stdout) for name, cmd in TOOLS.items()}
    samples = tmp / "samples"
    samples.mkdir()
    for k in range(0, len(training), 4096):  # zstd trains a dictionary on many small samples
        (samples / f"{k:08d}").write_bytes(training[k : k + 4096])
    subprocess.run(["zstd", "--train", "-q", "-r", str(samples), "-o", str(tmp / "dict"),
                    "--maxdict=112640"], check=True, capture_output=True)
    sizes["zstd -19 + dictionary"] = len(subprocess.run(
        ["zstd", "-19", "-c", "-q", "-D", str(tmp / "dict"), str(tmp / "held_out")],
        capture_output=True, check=True).stdout)
    return sizes


def measure(pipe: Pipeline, data: bytes, portable: bool, block_length: int | None,
            batch_size: int) -> dict:
    start = time.perf_counter()
    blob = pipe.compress(data, block_length=block_length, batch_size=batch_size, portable=portable)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    back = pipe.decompress(blob)
    decode = time.perf_counter() - start
    assert back == data, "decompression did not give the input back"
    coder = read_container(blob).header["coder"]
    return {"bits_per_char": round(8 * len(blob) / len(data.decode()), 4), "bytes": len(blob),
            "block_length": coder["block_length"], "batch_size": batch_size,
            "encode_kb_s": round(len(data) / 1024 / encode, 2),
            "decode_kb_s": round(len(data) / 1024 / decode, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a trained text run (char or bpe)")
    ap.add_argument("--pieces", type=int, default=40)
    ap.add_argument("--piece-chars", type=int, default=500)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--long-batch", type=int, default=64, help="batch of the 2,048-token "
                    "blocks (the container's default length; a GPT's window slides)")
    args = ap.parse_args()
    pipe = Pipeline.load(args.run)
    text = subsample(split_text(pipe, "validation"), args.pieces, args.piece_chars)
    data = text.encode()
    window = pipe.codec().coder.default_block_length  # (and freeze the codec, untimed)
    coders = {}
    for batch in args.batch_sizes:
        # a GPT's one window per block; else enough blocks to fill the batch
        blocks = window or max(len(text) // batch, 1)
        portable = measure(pipe, data, True, blocks, batch)
        coders[f"portable batch {batch}"] = portable
        coders[f"float batch {batch}"] = measure(pipe, data, False, portable["block_length"], batch)
    long = args.long_batch
    coders[f"portable 2048-token blocks, batch {long}"] = measure(pipe, data, True, 2048, long)
    coders[f"float 2048-token blocks, batch {long}"] = measure(pipe, data, False, 2048, long)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = baselines(data, split_text(pipe, "train").encode(), Path(tmp))
    emit({"benchmark": "compress_portable", "run": str(args.run),
          "held_out": {"chars": len(text), "bytes": len(data), "pieces": args.pieces,
                       "piece_chars": args.piece_chars},
          "model": {"prior": pipe.prior.name, "parameters": pipe.prior.num_parameters(),
                    "validation_bits_per_char": _score(pipe)},
          "coders": coders,
          "baselines_bits_per_char": {k: round(8 * v / len(text), 4) for k, v in sizes.items()}})


def _score(pipe: Pipeline) -> float | None:
    try:
        return round(pipe.score().bits_per_unit, 4)
    except Exception:  # a benchmark reports what it can
        return None


if __name__ == "__main__":
    main()
