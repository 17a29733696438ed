"""Encode and decode throughput of `tokar compress` by block length, and what each block length
costs in bits per character (context lost at block starts), side by side in one run.

    TOKAR_DATA_DIR=../shared/data python benchmarks/compress_speed.py --runs RUN_DIR [RUN_DIR ...] \\
        [--block-lengths 64 256 1024 4096] [--max-batch 256] [--threads 1]

The text is the run's whole held-out split (Tiny Shakespeare's last 111,540 characters). For a
block length L the text is cut into ceil(N / L) blocks, coded min(blocks, --max-batch) at a time
(one batched `step` per position for the whole batch): short blocks give wide batches (fast) and
little context (more bits); long blocks the reverse. Every setting is decoded and checked byte
for byte. Throughput is KB of original text per second of wall time; `cpu_share` says how much
of its torch threads the process really got on this shared machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, emit  # noqa: E402
from compress_shakespeare import held_out  # noqa: E402

from pipelines import Pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="trained text run directories")
    ap.add_argument("--block-lengths", nargs="+", type=int, default=[64, 256, 1024, 4096])
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads inside coding")
    ap.add_argument("--portable", action="store_true", help="the integer-exact coder (tokar "
                    "compress's default); without it the float path the BENCHMARKS rows measured")
    args = ap.parse_args()
    results = {}
    for run in args.runs:
        pipe = Pipeline.load(run)
        text = held_out(pipe)
        data, n = text.encode(), len(text)
        tokens = pipe.tokenizer.encode(text).numel()
        rows = []
        for L in args.block_lengths:
            batch = min(math.ceil(tokens / L), args.max_batch)
            c0 = time.process_time()
            with Stopwatch() as enc:
                blob = pipe.compress(data, block_length=L, batch_size=batch, threads=args.threads,
                                     portable=args.portable)
            c1 = time.process_time()
            with Stopwatch() as dec:
                back = pipe.decompress(blob)
            c2 = time.process_time()
            rows.append({"block_length": L, "blocks": math.ceil(tokens / L), "batch_size": batch,
                         "bits_per_char": 8 * len(blob) / n, "round_trip_exact": back == data,
                         "encode_kb_s": n / 1000 / enc.wall, "decode_kb_s": n / 1000 / dec.wall,
                         "encode_kb_per_cpu_s": n / 1000 / (c1 - c0),
                         "decode_kb_per_cpu_s": n / 1000 / (c2 - c1),
                         "encode_cpu_share": enc.cpu_share, "decode_cpu_share": dec.cpu_share})
            print(f"{Path(run).name} L={L}: {rows[-1]['bits_per_char']:.4f} bits/char, decode "
                  f"{rows[-1]['decode_kb_s']:.1f} KB/s (share {dec.cpu_share})", file=sys.stderr)
        results[Path(run).name] = {"prior": pipe.prior.name, "config": pipe.prior.config.model_dump(),
                                   "chars": n, "tokens": tokens, "settings": rows}
    emit({"benchmark": "compress_speed", "threads_inside_coding": args.threads, "runs": results})


if __name__ == "__main__":
    main()
