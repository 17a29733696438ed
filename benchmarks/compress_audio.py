"""Compression of the FSDD test recordings' mu-law code stream (8 kHz, 256 levels) with a WaveNet
and an LSTM, next to `xz -9e` and `flac --best` of the same 8-bit stream, side by side in one run.
Lossless on the codes only: mu-law itself is lossy (37.7 dB SNR, BENCHMARKS.md).

    TOKAR_DATA_DIR=../shared/data python benchmarks/compress_audio.py --seconds 300 \\
        [--keep DIR] [--runs mulaw_wavenet=RUN mulaw_lstm=RUN] [--every 1]

Each recipe (recipes/fsdd/<name>.yaml, conditioned on the spoken digit) is trained for
`--seconds` unless a trained run is given. The test split (FSDD's official one: index 0-4, 300
recordings; `--every k` takes every k-th) is coded as one file (`Pipeline.compress_all`, the
digit of each recording stored with it), decoded, and its codes checked against the tokenizer's.
xz and flac get the codes of all recordings concatenated, as unsigned 8-bit samples (flac: raw
input, mono, 8 kHz). Bits per sample = file bytes x 8 / samples.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Stopwatch, budget_overrides, emit  # noqa: E402

from pipelines import Pipeline  # noqa: E402
from pipelines.compression.container import read_container  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["mulaw_wavenet", "mulaw_lstm"]


def baselines(codes: np.ndarray, tmp: Path) -> dict[str, int]:
    raw = tmp / "codes.u8"
    raw.write_bytes(codes.astype(np.uint8).tobytes())
    xz = len(subprocess.run(["xz", "-9e", "-c", str(raw)], capture_output=True, check=True).stdout)
    flac = tmp / "codes.flac"
    subprocess.run(["flac", "--best", "--silent", "--force", "--force-raw-format", "--endian=little",
                    "--sign=unsigned", "--channels=1", "--bps=8", "--sample-rate=8000", "-o",
                    str(flac), str(raw)], check=True)
    return {"xz -9e": xz, "flac --best": flac.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--keep")
    ap.add_argument("--portable", action="store_true", help="the integer-exact coder (tokar "
                    "compress's default); without it the float path the BENCHMARKS rows measured")
    ap.add_argument("--runs", nargs="*", default=[], help="RECIPE=RUN_DIR: reuse a trained run")
    args = ap.parse_args()
    given = dict(r.split("=", 1) for r in args.runs)
    results, sizes = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keep = Path(args.keep) if args.keep else tmp
        for name in args.recipes:
            training = None
            if name in given:
                pipe = Pipeline.load(given[name])
            else:
                recipe = ROOT / "recipes" / "fsdd" / f"{name}.yaml"
                pipe = Pipeline.from_recipe(recipe, budget_overrides(recipe, args.seconds, tmp))
                with Stopwatch() as sw:
                    result = pipe.train(keep / name, progress=False)
                training = {"budget_s": args.seconds, "steps": result.steps,
                            "train_wall_s": round(sw.wall, 1), "train_cpu_share": sw.cpu_share}
                pipe = Pipeline.load(keep / name)
            test = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
            index = list(range(0, len(test), args.every))
            clips = [test[i]["example"] for i in index]
            labels = [int(test[i]["label"]) for i in index]
            codes = [pipe.tokenizer.encode(c) for c in clips]
            samples = sum(c.numel() for c in codes)
            with Stopwatch() as enc:
                blob = pipe.compress_all(clips, labels, batch_size=args.batch_size,
                                         portable=args.portable)
            with Stopwatch() as dec:
                back = pipe.decompress_all(blob, codes=True)
            exact = all(torch.equal(a, b) for a, b in zip(codes, back, strict=True))
            payload = 4 * sum(s.size for s in read_container(blob).streams)
            score = pipe.score(clips, labels=labels)
            if sizes is None:
                sizes = baselines(torch.cat(codes).numpy(), tmp)
            results[name] = {
                "recordings": len(clips), "samples": samples, "round_trip_exact_codes": exact,
                "bits_per_sample": 8 * len(blob) / samples,
                "payload_bits_per_sample": 8 * payload / samples,
                "model_bits_per_sample": score.bits_per_unit,
                "encode_s": enc.wall, "decode_s": dec.wall,
                "decode_samples_per_s": samples / dec.wall,
                "coding_cpu_share": round((enc.cpu_share + dec.cpu_share) / 2, 3),
                "training": training, "parameters": pipe.prior.num_parameters(),
            }
            print(f"{name}: {results[name]['bits_per_sample']:.3f} bits/sample", file=sys.stderr)
    emit({"benchmark": "compress_audio", "models": results, "samples": samples,
          "baselines_bits_per_sample": {k: 8 * v / samples for k, v in (sizes or {}).items()},
          "baselines_bytes": sizes})


if __name__ == "__main__":
    main()
