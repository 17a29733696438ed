"""Training curves of a run as a PNG: loss per step (train and validation, nats/token) and, on a
second panel, validation in the data's own units (bits per character, subpixel...)."""

from __future__ import annotations

import json
from pathlib import Path

from plugins.errors import RunDirError


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no metrics.jsonl: pass a run directory made by `tokar train`.")
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: skip it, keep the rest
    return records


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    if not train and not val:
        raise RunDirError(f"{run_dir}/metrics.jsonl holds no training or validation records yet.")
    unit_key = next((k for r in val for k in r if k.startswith("bits_per_")), None)

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
        ax2.plot([r["step"] for r in val], [r[unit_key] for r in val], "o-", color="C1")
        ax2.set_xlabel("step")
        ax2.set_ylabel(unit_key.replace("_", " "))
        ax2.set_title("validation in data units")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
