"""A user's own data: Python sources compressed by a char LSTM trained on other Python sources,
next to xz -9, zstd -19, zstd -19 with a dictionary trained on the same training files, gzip -9
and bzip2 -9 of the very same held-out bytes.

    python benchmarks/user_data.py --seconds 600 --keep runs/bench_user_data
    python benchmarks/user_data.py --run runs/bench_user_data/run     # reuse a trained run

The data is this Python's own standard library (`Lib/*.py`, the files directly in it, sorted by
name), nothing prepared for tokar: every 10th file (a uniform subsample, not a prefix) is held
out, the rest are concatenated into the training text. The model is the char LSTM recipe
(recipes/shakespeare/char_lstm.yaml) pointed at that text with `train.max_seconds` set (and
`tokenizer.unk=true`, as `tokar init` writes: the held-out files have characters the training
files lack; compression codes them as escapes), trained
and used through the `tokar` command line exactly as a user would: `tokar train`, then
`tokar compress` / `tokar decompress` of the held-out file (checked byte for byte). Sizes are of
whole files (tokar's includes its header and CRC). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"gzip -9": ["gzip", "-9", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"],
         "xz -9": ["xz", "-9", "-c"], "zstd -19": ["zstd", "-19", "-c", "-q"]}


def sources(held_out_every: int = 10) -> tuple[list[Path], list[Path]]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    held = files[held_out_every // 2 :: held_out_every]
    return [f for f in files if f not in held], held


def tokar(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.cli.main", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"tokar {args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def zstd_dict_size(train_files: list[Path], held: Path, work: Path) -> int:
    """zstd -19 with a dictionary trained (zstd --train, 110 KB) on the training files."""
    dictionary = work / "python.dict"
    subprocess.run(["zstd", "--train", "-q", "-o", str(dictionary), *map(str, train_files)], check=True)
    out = subprocess.run(["zstd", "-19", "-c", "-q", "-D", str(dictionary), str(held)],
                         capture_output=True, check=True).stdout
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600, help="training budget (train.max_seconds)")
    ap.add_argument("--run", help="a trained run to reuse instead of training")
    ap.add_argument("--keep", help="train into this folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every command")
    args = ap.parse_args()

    train_files, held_files = sources()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_text = work / "python_train.txt"
        held = work / "python_heldout.py"
        train_text.write_bytes(b"".join(f.read_bytes() for f in train_files))
        held.write_bytes(b"".join(f.read_bytes() for f in held_files))
        run = Path(args.run) if args.run else Path(args.keep or work) / "run"
        run.parent.mkdir(parents=True, exist_ok=True)
        train_s = None
        if not args.run:
            start = time.perf_counter()
            tokar("train", "recipes/shakespeare/char_lstm.yaml", f"data.path={train_text}",
                  f"train.max_seconds={args.seconds}", "tokenizer.unk=true", "--run-dir", str(run),
                  "--threads", str(args.threads))
            train_s = time.perf_counter() - start
        start = time.perf_counter()
        tokar("compress", str(run), str(held), "-o", str(work / "h.tkz"), "--threads", str(args.threads))
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        tokar("decompress", str(run), str(work / "h.tkz"), "-o", str(work / "back.py"),
              "--threads", str(args.threads))
        decode_s = time.perf_counter() - start
        exact = (work / "back.py").read_bytes() == held.read_bytes()
        n_bytes = held.stat().st_size
        n_chars = len(held.read_text())
        sizes = {"tokar char_lstm": (work / "h.tkz").stat().st_size}
        sizes |= {name: len(subprocess.run([*cmd, str(held)], capture_output=True, check=True).stdout)
                  for name, cmd in TOOLS.items()}
        sizes["zstd -19 + dictionary"] = zstd_dict_size(train_files, held, work)
        record = json.loads((run / "run.json").read_text())
    emit({
        "benchmark": "user_data_python_sources",
        "train_files": len(train_files), "train_bytes": train_text_size(train_files),
        "held_out_files": len(held_files), "held_out_bytes": n_bytes, "held_out_chars": n_chars,
        "train_seconds": train_s, "train_steps": record.get("result", {}).get("steps"),
        "round_trip_exact": exact, "encode_s": encode_s, "decode_s": decode_s,
        "bits_per_char": {name: 8 * size / n_chars for name, size in sizes.items()},
        "bytes": sizes,
        "threads": args.threads,
    })


def train_text_size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


if __name__ == "__main__":
    main()
