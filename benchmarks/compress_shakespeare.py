"""Lossless compression of held-out Tiny Shakespeare (the last 10%, 111,540 characters, never
trained on) by models trained on the first 90% within a CPU budget, next to gzip -9, bzip2 -9,
xz -9e and zstd -19 of the same bytes, and next to the model's own cross-entropy on the text.

    TOKAR_DATA_DIR=../shared/data python benchmarks/compress_shakespeare.py \\
        --recipes char_lstm --seconds 1800 --keep runs/bench_compress
    python benchmarks/compress_shakespeare.py --runs runs/bench_compress/char_lstm   # reuse a run

For each model: the compressed file's size in bits per character (everything: header, block
table, payload, CRC), the payload alone, the coder's ideal code length under the same integer
pmfs and the model's own float cross-entropy of the very same blocks (each block starts from the
start token, so it differs from Pipeline.score, which carries context across the whole text),
and Pipeline.score's bits/char. Decompression is checked byte for byte. `cpu_share` is the share
of the torch threads this process really got (the machine is shared).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.compression.coding import CodingStats  # noqa: E402
from pipelines.compression.container import (  # noqa: E402
    Settings,
    compress,
    float_model,
    read_container,
)

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"gzip -9": ["gzip", "-9", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"],
         "xz -9e": ["xz", "-9e", "-c"], "zstd -19": ["zstd", "-19", "-c", "-q"]}


def baselines(path: Path) -> dict[str, int]:
    return {name: len(subprocess.run([*cmd, str(path)], capture_output=True, check=True).stdout)
            for name, cmd in TOOLS.items()}


def held_out(pipe: Pipeline) -> str:
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    return splits["validation"]["example"][0]


def evaluate(pipe: Pipeline, text: str, block_length: int | None, batch_size: int) -> dict:
    data = text.encode()
    stats = CodingStats()
    settings = Settings(block_length, batch_size)
    with Stopwatch() as enc:
        blob = compress(float_model(pipe.prior, pipe.tokenizer), [data], None, settings,
                        many=False, stats=stats)
    with Stopwatch() as dec:
        back = pipe.decompress(blob)
    c = read_container(blob)
    payload = 4 * sum(s.size for s in c.streams)
    n = len(text)
    score = pipe.score()
    return {
        "chars": n, "file_bytes": len(blob), "overhead_bytes": len(blob) - payload,
        "round_trip_exact": back == data,
        "bits_per_char": 8 * len(blob) / n,
        "payload_bits_per_char": 8 * payload / n,
        "pmf_ideal_bits_per_char": stats.pmf_bits / n,
        "model_bits_per_char_same_blocks": stats.model_bits / n,
        "payload_over_model_same_blocks": 8 * payload / stats.model_bits - 1,
        "score_bits_per_char": score.bits_per["char"],
        "file_over_score": 8 * len(blob) / (score.bits_per["char"] * n) - 1,
        "block_length": c.header["coder"]["block_length"], "batch_size": batch_size,
        "blocks": math.ceil(stats.tokens / (c.header["coder"]["block_length"] or stats.tokens)),
        "encode_s": enc.wall, "decode_s": dec.wall,
        "encode_kb_s": n / 1000 / enc.wall, "decode_kb_s": n / 1000 / dec.wall,
        "coding_cpu_share": round((enc.cpu_share + dec.cpu_share) / 2, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="*", default=[], help="shakespeare recipes to train")
    ap.add_argument("--runs", nargs="*", default=[], help="trained run directories to reuse")
    ap.add_argument("--seconds", type=float, default=1800, help="training budget per recipe")
    ap.add_argument("--keep", help="keep trained runs here (default: a temporary folder)")
    ap.add_argument("--block-length", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        keep = Path(args.keep) if args.keep else Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        runs = [(Path(r).name, Path(r), None) for r in args.runs]
        for name in args.recipes:
            recipe = ROOT / "recipes" / "shakespeare" / f"{name}.yaml"
            overrides = budget_overrides(recipe, args.seconds, Path(tmp))
            pipe = Pipeline.from_recipe(recipe, overrides)
            with Stopwatch() as sw:
                result = pipe.train(keep / name, progress=False)
            runs.append((name, keep / name, {"budget_s": args.seconds, "steps": result.steps,
                                             "train_wall_s": round(sw.wall, 1),
                                             "train_cpu_share": sw.cpu_share}))
        path = Path(tmp) / "heldout.txt"
        for name, run, training in runs:
            pipe = Pipeline.load(run)
            text = held_out(pipe)
            path.write_bytes(text.encode())
            start = time.perf_counter()
            row = evaluate(pipe, text, args.block_length, args.batch_size)
            row.update(training=training, parameters=pipe.prior.num_parameters(),
                       eval_wall_s=round(time.perf_counter() - start, 1))
            results[name] = row
            print(f"{name}: {row['bits_per_char']:.4f} bits/char (score {row['score_bits_per_char']:.4f})",
                  file=sys.stderr)
        sizes = baselines(path)
        n = len(text)
    emit({"benchmark": "compress_shakespeare", "chars": n,
          "baselines_bits_per_char": {k: 8 * v / n for k, v in sizes.items()},
          "baselines_bytes": sizes, "models": results})  # emit adds the machine and its CPU


if __name__ == "__main__":
    main()
