"""Command-line options that several `tokar` commands share (pipelines/cli/main.py and
pipelines/cli/detect.py both build subparsers with them; detect.py cannot import main.py, which
imports it).

Not here: the commands themselves (main.py, detect.py, init.py), option parsing of recipes
(pipelines/recipe/).
"""

from __future__ import annotations

import argparse

PRECISIONS = ("fp32", "bf16", "int8")


def add_threads(p: argparse.ArgumentParser, more: str = "") -> None:
    """`--threads N` on every command that computes: torch's CPU threads, for shared machines.
    `more`: what this command adds to the default's description."""
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"torch CPU threads (default: one per core{more})")


def add_precision(p: argparse.ArgumentParser) -> None:
    """`--precision`: the weights a loaded run infers with on a CPU."""
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="weights for CPU inference (int8: dynamic quantization)")


def add_no_progress(p: argparse.ArgumentParser, what: str = "bytes, KB/s; also off with -q") -> None:
    """`--no-progress`: no progress bar; `what`: what this command's bar shows."""
    p.add_argument("--no-progress", action="store_true", help=f"no progress bar ({what})")
