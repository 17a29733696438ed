"""The plugin contract, measured: how long tokar's contract suites take on the example plugin
(examples/tokar-example-plugin), and every public method of each base class with whether the
example's component overrides it.

    python benchmarks/plugin_contract.py [--no-timing]

The method table is read from the code (inspect), so it cannot drift from it; the timing runs the
example's test file in a fresh pytest, one suite class at a time.
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tokar-example-plugin"
SUITES = ["TestCausalMLP", "TestWordTokenizer", "TestLaplace", "TestSyntheticText"]


def methods(base: type, component: type) -> list[dict]:
    rows = []
    for name, member in sorted(vars(base).items()):
        if name.startswith("_") and name != "__init__":
            continue
        if not (inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod))):
            continue
        mine = next(k for k in component.__mro__ if name in vars(k))
        abstract = name in getattr(base, "__abstractmethods__", ())
        rows.append({"method": name, "abstract": abstract, "overridden": mine is not base
                     and issubclass(mine, base) and mine.__module__.startswith("tokar_example")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    from tokar_example.laplace import Laplace
    from tokar_example.mlp import CausalMLP
    from tokar_example.synthetic import SyntheticText
    from tokar_example.words import WordTokenizer

    from pipelines.data.sources import Source
    from priors.base import Prior
    from priors.heads.base import Head
    from tokenizers_ar.base import Tokenizer

    table = {"Tokenizer -> words": methods(Tokenizer, WordTokenizer),
             "Prior -> causal_mlp": methods(Prior, CausalMLP),
             "Head -> laplace": methods(Head, Laplace),
             "Source -> synthetic_text": methods(Source, SyntheticText)}
    timing = {}
    if not args.no_timing:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for suite in SUITES:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   f"{EXAMPLE / 'tests' / 'test_example_plugin.py'}::{suite}"],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            timing[suite] = {"seconds": round(time.perf_counter() - start, 2),
                             "result": proc.stdout.strip().splitlines()[-1]}
    emit({"benchmark": "plugin_contract", "suite_seconds": timing, "methods": table})


if __name__ == "__main__":
    main()
