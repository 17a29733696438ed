"""Portable files across CPU kernel sets: every prior with an integer-exact coder, a file written
under each ATEN_CPU_CAPABILITY this CPU runs (default, avx2, avx512) and read under each other.

    TOKAR_DATA_DIR=../shared/data python benchmarks/portable_matrix.py [--steps 30]

For each covered prior a tiny debug recipe is trained for `--steps` steps (recipes/debug/:
char_gpt, char_lstm, pixel_pixelcnn, mulaw_wavenet), one held-out example is written to a file
(text, a PNG, a WAV), and then, in one fresh process per kernel set (the capability is read once,
at import): `tokar compress` of that file, then `tokar decompress` of every kernel set's
compressed file. A cell is true when decoding succeeds (the container's CRC32 of the original
checks that the data came back exactly); `files_identical` says whether every kernel set wrote
the very same file. The same matrix with
`--no-portable` shows what the float path does (a false cell there is the problem portable
coding removes; it may also be true where two kernel sets happen to agree on this input).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"gpt": "char_gpt", "lstm": "char_lstm", "pixelcnn": "pixel_pixelcnn",
           "wavenet": "mulaw_wavenet"}

# In a fresh process under one kernel set: compress INPUT to OUT_DIR/<cap>.tkz, then decompress
# every <other>.tkz present and say whether it gives INPUT's bytes back. Run after all compresses.
WORKER = r"""
import json, sys, torch
from pathlib import Path
from pipelines import Pipeline
from pipelines.compression.files import read_input
run, source, out, phase = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[5]
portable = sys.argv[4] == "1"
label = None if sys.argv[6] == "-" else int(sys.argv[6])
cap = torch.backends.cpu.get_cpu_capability().lower()
pipe = Pipeline.load(run)
data = (json.loads(source.read_text()) if source.suffix == ".json"
        else read_input(source, pipe.tokenizer.modality))
if phase == "compress":
    (out / f"{cap}.tkz").write_bytes(pipe.compress(data, label, portable=portable))
else:
    want = pipe.compress(data, label, portable=portable)  # what this process writes itself
    for f in sorted(out.glob("*.tkz")):
        try:  # exact: decoding gives the input back (its CRC32 is checked) and re-encodes alike
            pipe.decompress(f.read_bytes())
            ok = True
        except Exception:
            ok = False
        print(f"{f.stem} {cap} {int(ok)} {int(f.read_bytes() == want)}")
"""


def capabilities() -> list[str]:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    caps = ["default"]
    caps += ["avx2"] if "avx2" in flags else []
    caps += ["avx512"] if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags else []
    return caps


def worker(cap: str, *args: str) -> str:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WORKER, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if done.returncode:
        sys.exit(f"worker under {cap} failed: {done.stderr.strip()[-1500:]}")
    return done.stdout


def held_out(run: Path, work: Path) -> tuple[Path, str]:
    """One validation example of the run (the middle one) as a file, and its label ("-": none):
    text as a .txt file, a WAV as the file itself, anything else (the digits' pixel rows) as
    JSON."""
    from pipelines import Pipeline

    pipe = Pipeline.load(run)
    split = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
    row = split[len(split) // 2]
    example, label = row["example"], row.get("label")
    label = str(label) if pipe.prior.num_classes and label is not None else "-"
    if pipe.tokenizer.modality == "text":
        path = work / "input.txt"
        path.write_text(example[:3000])
    elif isinstance(example, str) and example.endswith(".wav"):
        path = Path(example)
    else:
        path = work / "input.json"
        path.write_text(json.dumps(example))
    return path, label


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--priors", nargs="+", default=list(RECIPES))
    args = ap.parse_args()
    caps = capabilities()
    out: dict = {"capabilities": caps, "portable": {}, "float": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.priors:
            run = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "pipelines.cli.main", "train",
                            f"recipes/debug/{RECIPES[name]}.yaml", f"train.max_steps={args.steps}",
                            "--run-dir", str(run)], check=True, capture_output=True, cwd=ROOT)
            source, label = held_out(run, Path(tmp))
            for mode, flag in (("portable", "1"), ("float", "0")):
                files = Path(tmp) / f"{name}-{mode}"
                files.mkdir()
                for cap in caps:
                    worker(cap, str(run), str(source), str(files), flag, "compress", label)
                cells, same = {}, {}
                for cap in caps:
                    for row in worker(cap, str(run), str(source), str(files), flag, "decompress",
                                      label).strip().splitlines():
                        written, read, ok, identical = row.split()
                        cells[f"{written}->{read}"] = ok == "1"
                        same[f"{written}->{read}"] = identical == "1"
                out[mode][name] = {"input": source.name, "bytes": source.stat().st_size,
                                   "round_trips": cells, "all_exact": all(cells.values()),
                                   "files_identical": all(same.values())}
    emit({"benchmark": "portable_matrix", **out})


if __name__ == "__main__":
    main()
