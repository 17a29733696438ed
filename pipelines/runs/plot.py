"""Training curves of a run as an image (PNG by default, or any format matplotlib writes): loss per
step (train and validation, nats/token) and, on a second panel, validation in the data's own units
(bits per character, subpixel...). Lines of metrics.jsonl that cannot be read (cut short by a
crash, damaged, of the wrong shape) are skipped with a warning; the rest is plotted."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

from pipelines.io.atomic import write_bytes_atomically
from pipelines.io.safe import read_bytes
from plugins.errors import RunDirError, StorageError

logger = logging.getLogger(__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(run_dir: Path) -> list[dict]:
    """The well-formed records of RUN_DIR/metrics.jsonl: objects with a numeric step and loss."""
    records, skipped = _read_metrics(Path(run_dir) / "metrics.jsonl")
    if skipped:
        logger.warning("%s: skipped %d unreadable line(s)", Path(run_dir) / "metrics.jsonl", skipped)
    return records


def _read_metrics(path: Path) -> tuple[list[dict], int]:
    """(well-formed records, number of lines skipped)."""
    if not path.exists():
        raise RunDirError(f"{path.parent} has no metrics.jsonl: pass a run directory made by "
                          "`tokar train`.")
    records, skipped = [], 0
    for raw in read_bytes(path, "metrics file", RunDirError).splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if isinstance(record, dict) and _is_number(record.get("step")) and _is_number(record.get("loss")):
            records.append(record)
        else:
            skipped += 1  # a line cut short by a crash, or damaged: skip it, keep the rest
    return records, skipped


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records, skipped = _read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    if not train and not val:
        unreadable = f" ({skipped} unreadable line(s) skipped)" if skipped else ""
        raise RunDirError(f"{run_dir}/metrics.jsonl holds no training or validation records yet"
                          f"{unreadable}.")
    if skipped:
        logger.warning("%s/metrics.jsonl: skipped %d unreadable line(s)", run_dir, skipped)
    unit_key = next((k for r in val for k in r if k.startswith("bits_per_") and _is_number(r[k])), None)
    out = Path(out) if out else run_dir / "curves.png"
    fmt = out.suffix.lower().lstrip(".") or "png"

    fig, axes = plt.subplots(1, 2 if unit_key else 1, figsize=(11 if unit_key else 6, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    if unit_key:
        ax2 = axes[0][1]
        shown = [r for r in val if _is_number(r.get(unit_key))]
        ax2.plot([r["step"] for r in shown], [r[unit_key] for r in shown], "o-", color="C1")
        ax2.set_xlabel("step")
        ax2.set_ylabel(unit_key.replace("_", " "))
        ax2.set_title("validation in data units")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    formats = fig.canvas.get_supported_filetypes()
    if fmt not in formats:
        plt.close(fig)
        raise StorageError(f"cannot write a plot to {out}: .{fmt} is not an image format matplotlib "
                           f"writes; use .png (or {', '.join('.' + f for f in sorted(formats))}).")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format=fmt)
    plt.close(fig)
    return write_bytes_atomically(out, buffer.getvalue())
