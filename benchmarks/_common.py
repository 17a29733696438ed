"""Shared helpers for benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import torch


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON object on stdout (progress goes to stderr)."""
    json.dump({**result, "machine": machine()}, sys.stdout, indent=2)
    sys.stdout.write("\n")
