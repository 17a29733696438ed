"""Wall time and peak memory of the README's `make demo` job (the install step excluded):
`tokar train recipes/digits/pixel_gpt.yaml` then `tokar sample`, as the Makefile runs them.

    python benchmarks/demo.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKAR = [sys.executable, "-m", "pipelines.cli.main"]


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        train_s, _ = timed([*TOKAR, "train", "recipes/digits/pixel_gpt.yaml", "--run-dir", str(run),
                            "--no-progress"])
        sample_s, grid = timed([*TOKAR, "sample", str(run), "-n", "40", "--out",
                                str(run / "samples" / "demo_grid.png")])
        status = json.loads((run / "run.json").read_text())
        # ru_maxrss of children is the largest single child's peak, in KiB on Linux
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        emit({
            "benchmark": "make_demo",
            "recipe": "recipes/digits/pixel_gpt.yaml",
            "train_wall_seconds": train_s,
            "sample_wall_seconds": sample_s,
            "total_wall_seconds": train_s + sample_s,
            "peak_rss_mib": peak_mib,
            "val_bits_per_subpixel": status["result"]["val_bits_per_unit"],
            "target": "under about 5 minutes on 2 cores",
        })


if __name__ == "__main__":
    main()
