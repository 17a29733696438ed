"""Evaluating detectors: in-distribution data against out-of-distribution data, per method.

For each method (pipelines/detection/detectors.py), with the OOD inputs as the positive class:
- AUROC and AUPRC (scikit-learn's roc_auc_score, average_precision_score), threshold-free;
- FPR at 95% TPR: the share of in-distribution inputs flagged when 95% of the OOD ones are;
- at the threshold calibrated on the run's validation split at `fpr`: the false-positive rate
  measured on the in-distribution set and the detection rate (TPR) on the OOD set.
Typicality is evaluated on groups of `group_size` consecutive inputs of each set (a last,
smaller group is left out), as Nalisnick et al. 2019b do with batches. Every part of every
score is computed once for both sets and shared by the methods.

`plot_histograms` draws the score histograms of both sets, one panel per method, with the
threshold: the figure of Nalisnick et al. 2019 (a model's bits on its own test set and on
another data set).

Not here: choosing between methods automatically, confidence intervals on AUROC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pipelines.detection import detectors
from pipelines.detection.complexity import check_compressor, default_compressor
from pipelines.io.atomic import write_file_atomically
from plugins.errors import DataError, TokarError

if TYPE_CHECKING:
    from pipelines.pipeline import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class MethodReport:
    method: str
    auroc: float
    auprc: float
    fpr_at_95_tpr: float
    threshold: float  # calibrated on the validation split at `fpr`
    fpr: float  # measured on the in-distribution set at that threshold
    tpr: float  # measured on the OOD set at that threshold: the detection rate
    n_in: int  # inputs (typicality: groups)
    n_ood: int


@dataclass
class EvalReport:
    unit: str
    target_fpr: float
    calibration_examples: int
    group_size: int
    compressor: str | None
    methods: dict[str, MethodReport]
    in_scores: dict[str, list[float]]
    ood_scores: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "target_fpr": self.target_fpr,
                "calibration_examples": self.calibration_examples, "group_size": self.group_size,
                "compressor": self.compressor,
                **{key: {m: getattr(r, key) for m, r in self.methods.items()}
                   for key in ("auroc", "auprc", "fpr_at_95_tpr", "tpr", "fpr", "threshold")},
                "n": {m: {"in": r.n_in, "ood": r.n_ood} for m, r in self.methods.items()}}


def ood_metrics(in_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC and FPR at 95% TPR, OOD positive, higher score = more anomalous."""
    if len(in_scores) == 0 or len(ood_scores) == 0:
        raise DataError("the evaluation needs at least one in-distribution and one OOD input "
                        "(for typicality: one whole group of each).")
    y = np.r_[np.zeros(len(in_scores)), np.ones(len(ood_scores))]
    s = np.r_[in_scores, ood_scores]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)),
            "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}


def _parts(pipe: Pipeline, examples: list[Any], ids: list[str], bg: Pipeline | None,
           compressor: str | None) -> detectors.Components:
    comp = detectors.Components(ids, detectors.example_bits(pipe, examples, ids)[0])
    if bg is not None:
        comp.background_bits = detectors.example_bits(bg, examples, ids)[0]
    if compressor is not None:
        comp.complexity_bits = detectors.complexity_bits(pipe, examples, compressor)
    return comp


def _group_scores(method: str, comp: detectors.Components, entropy: float, size: int) -> np.ndarray:
    if method != "typicality":
        return detectors.method_scores(method, comp)[0]
    whole = len(comp.bits) // size * size  # whole groups only
    part = detectors.Components(comp.ids[:whole], comp.bits[:whole])
    scores, groups = detectors.method_scores(method, part, entropy, size)
    return scores[np.unique(groups, return_index=True)[1]] if whole else scores


def evaluate(pipe: Pipeline, in_examples: list[Any], ood_examples: list[Any], *,
             in_ids: list[str] | None = None, ood_ids: list[str] | None = None,
             methods: list[str] | None = None, background: Pipeline | None = None,
             fpr: float = 0.05, group_size: int = 5, compressor: str | None = None,
             calibration_examples: int = detectors.DEFAULT_CALIBRATION_EXAMPLES) -> EvalReport:
    """Every method's AUROC, AUPRC, FPR at 95% TPR and calibrated operating point (see the
    module docstring). `methods`: default all, `ratio` only with a background run."""
    if methods is None:
        methods = [m for m in detectors.METHODS if m != "ratio" or background is not None]
    for m in methods:
        if m not in detectors.METHODS:
            raise TokarError(f"unknown detection method {m!r}; choose from {', '.join(detectors.METHODS)}.")
    if "ratio" in methods and background is None:
        raise TokarError("the ratio method needs a background run: pass --background RUN_DIR.")
    if group_size < 1:
        raise TokarError(f"the typicality group size must be at least 1, got {group_size}.")
    if not 0 < fpr < 1:
        raise TokarError(f"the false-positive rate must lie in (0, 1), got {fpr}.")
    if not in_examples or not ood_examples:
        raise DataError("the evaluation needs in-distribution and OOD inputs; one set is empty.")
    in_ids = list(in_ids) if in_ids is not None else [f"in/{i}" for i in range(len(in_examples))]
    ood_ids = list(ood_ids) if ood_ids is not None else [f"ood/{i}" for i in range(len(ood_examples))]
    bg = background if "ratio" in methods else None
    if bg is not None:
        detectors.check_background(pipe, bg)
    if "complexity" in methods:
        compressor = compressor or default_compressor(pipe.tokenizer.modality)
        check_compressor(compressor, pipe.tokenizer.modality)
    else:
        compressor = None
    calib = detectors.calibrate(pipe, background=bg, compressor=compressor,
                        passage=detectors.text_passage(pipe, in_examples), limit=calibration_examples)
    ref = calib.components(bg.prior.fingerprint() if bg is not None else None, compressor)
    entropy = float(ref.bits.mean())
    parts_in = _parts(pipe, in_examples, in_ids, bg, compressor)
    parts_ood = _parts(pipe, ood_examples, ood_ids, bg, compressor)

    reports, in_scores, ood_scores = {}, {}, {}
    for m in methods:
        size = group_size if m == "typicality" else 1
        s_in = _group_scores(m, parts_in, entropy, size)
        s_ood = _group_scores(m, parts_ood, entropy, size)
        metrics = ood_metrics(s_in, s_ood)
        threshold = detectors.threshold_at(detectors.reference_scores(m, ref, size), fpr)
        reports[m] = MethodReport(m, **metrics, threshold=threshold,
                                  fpr=float(np.mean(s_in > threshold)),
                                  tpr=float(np.mean(s_ood > threshold)),
                                  n_in=len(s_in), n_ood=len(s_ood))
        in_scores[m], ood_scores[m] = s_in.tolist(), s_ood.tolist()
        logger.info("%s: AUROC %.4f, AUPRC %.4f, FPR@95%%TPR %.4f", m, metrics["auroc"],
                    metrics["auprc"], metrics["fpr_at_95_tpr"])
    return EvalReport(pipe.tokenizer.unit, fpr, len(calib.ids), group_size, compressor, reports,
                      in_scores, ood_scores)


def plot_histograms(report: EvalReport, out: str | Path, in_label: str = "in-distribution",
                    ood_label: str = "OOD") -> Path:
    """One panel per method: both sets' score histograms and the calibrated threshold."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names = list(report.methods)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, m in zip(axes[0], names, strict=True):
        a, b = np.asarray(report.in_scores[m]), np.asarray(report.ood_scores[m])
        bins = np.histogram_bin_edges(np.r_[a, b], bins=40)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"{in_label} ({len(a)})")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label=f"{ood_label} ({len(b)})")
        ax.axvline(report.methods[m].threshold, color="k", ls="--", lw=1,
                   label=f"threshold at {report.target_fpr:g} FPR")
        ax.set_title(f"{m}: AUROC {report.methods[m].auroc:.3f}")
        ax.set_xlabel(f"score (bits per {report.unit}; higher = more anomalous)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


__all__ = ["EvalReport", "MethodReport", "evaluate", "ood_metrics", "plot_histograms"]
