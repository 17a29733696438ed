"""Anomaly and out-of-distribution detection from exact likelihoods.

A trained pipeline gives every input its exact -log2 p(x) in data units (pipelines/scoring.py).
Low likelihood alone is a poor detector: Nalisnick et al. 2019 ("Do deep generative models know
what they don't know?") show a model of Fashion-MNIST giving MNIST digits *higher* likelihood.
Four scores, each higher = more anomalous, each in bits per data unit:

- `likelihood`: -log2 p(x) / units. PixelDefend's statistic (Song et al. 2018).
- `ratio`: [-log2 p(x) + log2 p_bg(x)] / units, the likelihood ratio of Ren et al. 2019 against a
  *background* run trained on mutated inputs (`data.augment: {mutate: 0.2}`, pipelines/data/augment.py),
  which cancels what both models share (background pixels, letter frequencies).
- `typicality`: Nalisnick et al. 2019b's test for groups of M inputs: |mean bits of the group - H|,
  H the mean bits per unit of held-out in-distribution data (the entropy estimate); a group is
  atypical when it is too likely as well as too unlikely. Its null distribution comes from
  bootstrap groups of M drawn from the calibration scores.
- `complexity`: [-log2 p(x) - L(x)] / units, Serrà et al. 2020, L the length under a generic
  lossless compressor (pipelines/detection/complexity.py).

Thresholds and p-values (conformal, as PixelDefend's rank p-values): the run's validation split
(a uniform subsample of up to `calibration_examples`) is scored once, the per-example parts stored
in RUN_DIR/detect/calibration*.json (atomically, keyed by `Prior.fingerprint()`, the model's one
identity: the tokenizer is the run's own, and a background run must share it), reused by later
calls and extended when a later call needs a background run or compressor it lacks. The p-value
of a score s among n calibration scores is (1 + #{v >= s}) / (n + 1); an input is flagged when
p <= fpr, i.e. when s exceeds the threshold, the ceil((n+1) fpr)-th largest calibration score,
which keeps the false-positive rate at most `fpr` on exchangeable in-distribution data.

Class-conditional runs are scored by the marginal p(x) = sum_c p(x|c) / C (labels are unknown at
detection time; C times the work); surprise maps then use the most likely class's per-token bits.

Not here: reading files (pipelines/detection/data.py), surprise maps (pipelines/detection/surprise.py),
AUROC and the histogram (pipelines/detection/evaluate.py), the CLI (pipelines/cli/detect.py); detectors
trained on outliers (outlier exposure) and gradient-based scores.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.detection.complexity import check_compressor, compressed_bits, default_compressor
from pipelines.detection.data import cut_passages
from pipelines.io.atomic import write_json_atomically
from pipelines.io.safe import read_json
from pipelines.scoring import LN2
from pipelines.training.trainer import process_state
from plugins.errors import DataError, StorageError, TokarError

if TYPE_CHECKING:
    from pipelines.pipeline import Pipeline

logger = logging.getLogger(__name__)

METHODS = ("likelihood", "ratio", "typicality", "complexity")
CALIBRATION_DIR = "detect"
CALIBRATION_FORMAT = 1
DEFAULT_CALIBRATION_EXAMPLES = 1000
BOOTSTRAP_GROUPS = 4000  # typicality's null distribution: bootstrap groups per group size


# -- what every score is made of --------------------------------------------------------------------
@dataclass
class Components:
    """Per example, in bits per data unit: the model's NLL and, when a method needs them, the
    background run's NLL and the compressed length."""

    ids: list[str]
    bits: np.ndarray
    background_bits: np.ndarray | None = None
    complexity_bits: np.ndarray | None = None
    token_nats: list[list[float]] | None = None  # per position (surprise maps)


def example_bits(pipe: Pipeline, examples: list[Any], ids: list[str],
                 per_token: bool = False) -> tuple[np.ndarray, list[list[float]] | None]:
    """-log2 p(x) per data unit of each example; class-conditional priors by the marginal over
    classes (uniform class prior). Data-parallel under torchrun, like Pipeline.score."""
    classes = pipe.prior.num_classes
    scores = [pipe.score(examples, labels=None if not classes else [c] * len(examples), ids=ids,
                         per_token=per_token) for c in range(max(classes, 1))]
    if len(scores[0].per_example) != len(examples):  # Pipeline.score leaves out empty examples
        kept = {e.id for e in scores[0].per_example}
        empty = next((i for i in ids if i not in kept), "an example")
        raise DataError(f"{empty}: the example is empty; there is nothing to score.")
    units = np.array([e.units[pipe.tokenizer.unit] for e in scores[0].per_example], dtype=np.float64)
    nats = np.array([[e.nats for e in s.per_example] for s in scores])  # (C, N)
    marginal = -(np.logaddexp.reduce(-nats, axis=0) - math.log(len(scores)))
    token_nats = None
    if per_token:  # the most likely class's per-token bits
        best = nats.argmin(axis=0)
        token_nats = [scores[c].per_example[i].token_nats for i, c in enumerate(best)]
    return marginal / units / LN2, token_nats


def complexity_bits(pipe: Pipeline, examples: list[Any], compressor: str) -> np.ndarray:
    """L(x) per data unit of each example."""
    tok = pipe.tokenizer
    return np.array([compressed_bits(x, tok, compressor) / tok.count_units(x) for x in examples])


def check_background(pipe: Pipeline, bg: Pipeline) -> None:
    """The background run of the likelihood ratio must use the very same tokenizer (Pipeline
    resolves and loads it: `Pipeline.load_background`)."""
    if bg.tokenizer.fingerprint() != pipe.tokenizer.fingerprint():
        raise TokarError(
            f"the background run {bg.run_dir or ''} uses another tokenizer "
            f"({bg.recipe.tokenizer.name} {bg.tokenizer.layout}, vocabulary {bg.tokenizer.vocab_size}) "
            f"than this run ({pipe.recipe.tokenizer.name} {pipe.tokenizer.layout}, vocabulary "
            f"{pipe.tokenizer.vocab_size}): the likelihood ratio compares two models on the same "
            "token ids. Train the background from this run's recipe with data.augment.mutate=0.2."
        )
    augment = getattr(bg.recipe.data.config, "augment", None)
    if augment is None or not augment.mutate:
        logger.warning("the background run %s was not trained on mutated inputs (data.augment."
                       "mutate): Ren et al.'s background model learns only the data's low-level "
                       "statistics because a share of its training tokens are random", bg.run_dir)


# -- calibration on held-out in-distribution data ----------------------------------------------------
@dataclass
class Calibration:
    """Per-example parts of the validation scores, stored in the run and reused."""

    prior: str  # Prior.fingerprint() of the prior they were computed with
    limit: int
    passage: int | None  # text: characters per passage
    ids: list[str]
    bits: list[float]
    complexity: dict[str, list[float]] = field(default_factory=dict)  # compressor -> bits/unit
    backgrounds: dict[str, list[float]] = field(default_factory=dict)  # bg fingerprint -> bits/unit

    def components(self, background: str | None = None, compressor: str | None = None) -> Components:
        return Components(self.ids, np.array(self.bits),
                          np.array(self.backgrounds[background]) if background else None,
                          np.array(self.complexity[compressor]) if compressor else None)


def calibration_path(run_dir: Path, passage: int | None) -> Path:
    return run_dir / CALIBRATION_DIR / (f"calibration-passage{passage}.json" if passage
                                        else "calibration.json")


def calibration_examples(pipe: Pipeline, limit: int,
                         passage: int | None) -> tuple[list[str], list[Any]]:
    """A uniform subsample (fixed seed) of the run's validation split; text cut into passages."""

    split = pipe.recipe.data.cls(pipe.recipe.data.config).load()["validation"]
    if len(split) == 0:
        raise DataError("the run's validation split is empty, and detection calibrates its "
                        "thresholds on held-out in-distribution data: train with data.val_fraction "
                        "> 0 (or a source with a validation split).")
    if pipe.tokenizer.modality == "text":
        ids, examples = cut_passages([f"validation/{i}" for i in range(len(split))],
                                     list(split["example"]), passage)
    else:
        ids, examples = [f"validation/{i}" for i in range(len(split))], None
    n = len(ids)
    keep = np.arange(n) if n <= limit else \
        np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
    if examples is None:
        examples = list(split.select(keep.tolist())["example"])
    else:
        examples = [examples[i] for i in keep]
    return [ids[i] for i in keep], examples


def read_calibration(path: Path) -> Calibration | None:
    """The calibration cached at `path`, or None (with a warning naming the file) when it is
    damaged: it is only a cache, rebuilt and written again by the caller."""
    try:
        saved = read_json(path, "detection calibration cache", DataError)
        if saved.pop("format", None) != CALIBRATION_FORMAT:
            return None  # another format version: quietly recalibrated
        calib = Calibration(**saved)
        numbers = all(isinstance(v, int | float) for v in calib.bits)
        if not (isinstance(calib.ids, list) and isinstance(calib.bits, list) and numbers
                and len(calib.ids) == len(calib.bits) and isinstance(calib.complexity, dict)
                and isinstance(calib.backgrounds, dict)):
            raise TypeError("its fields do not have the expected types")
        return calib
    except (TokarError, TypeError, ValueError) as exc:
        logger.warning("the detection calibration cache %s is corrupt (%s); rebuilding it", path, exc)
        return None


def calibrate(pipe: Pipeline, *, background: Pipeline | None = None, compressor: str | None = None,
              passage: int | None = None,
              limit: int = DEFAULT_CALIBRATION_EXAMPLES) -> Calibration:
    """The calibration of `pipe` with the parts asked for: read from the run directory when it
    is there and valid for these weights, completed and written back when parts are missing."""
    prior = pipe.prior.fingerprint()
    path = calibration_path(pipe.run_dir, passage) if pipe.run_dir is not None else None
    calib = read_calibration(path) if path is not None and path.exists() else None
    if calib is not None and (calib.prior != prior or calib.limit != limit):
        logger.info("%s was made for other weights or another size; calibrating again", path)
        calib = None
    bg_key = background.prior.fingerprint() if background is not None else None
    missing = calib is None or (bg_key is not None and bg_key not in calib.backgrounds) or \
        (compressor is not None and compressor not in calib.complexity)
    if not missing:
        return calib
    ids, examples = calibration_examples(pipe, limit, passage)
    if calib is None:
        logger.info("calibrating on %d held-out examples of the validation split", len(ids))
        calib = Calibration(prior, limit, passage, ids, example_bits(pipe, examples, ids)[0].tolist())
    elif calib.ids != ids:  # the data source changed since: the cache is stale, not the user's
        logger.warning("%s was calibrated on other validation examples than the run's data source "
                       "gives now; calibrating again", path)
        calib = Calibration(prior, limit, passage, ids, example_bits(pipe, examples, ids)[0].tolist())
    if bg_key is not None and bg_key not in calib.backgrounds:
        calib.backgrounds[bg_key] = example_bits(background, examples, ids)[0].tolist()
    if compressor is not None and compressor not in calib.complexity:
        calib.complexity[compressor] = complexity_bits(pipe, examples, compressor).tolist()
    state = process_state()
    if path is not None and state.is_main_process:
        try:
            write_json_atomically(path, {"format": CALIBRATION_FORMAT, **asdict(calib)})
        except StorageError as exc:  # a read-only run (shared, archived): score all the same
            logger.warning("the calibration was not saved (%s); detection goes on, and calibrates "
                           "again next time", exc)
    state.wait_for_everyone()
    return calib


# -- scores, p-values, thresholds --------------------------------------------------------------------
def method_scores(method: str, comp: Components, entropy: float | None = None,
                  group_size: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Each example's score (higher = more anomalous) and, for typicality, its group index
    (the group's score is every member's)."""
    if method == "likelihood":
        return comp.bits, None
    if method == "ratio":
        return comp.bits - comp.background_bits, None
    if method == "complexity":
        return comp.bits - comp.complexity_bits, None
    if method == "typicality":
        groups = np.arange(len(comp.bits)) // group_size
        means = np.bincount(groups, weights=comp.bits) / np.bincount(groups)
        return np.abs(means - entropy)[groups], groups
    raise TokarError(f"unknown detection method {method!r}; choose one of {', '.join(METHODS)}.")


def typicality_reference(bits: np.ndarray, size: int, n: int = BOOTSTRAP_GROUPS,
                         seed: int = 0) -> np.ndarray:
    """Bootstrap null distribution of |mean of `size` calibration scores - their mean|."""
    rng = np.random.default_rng(seed + size)
    draws = rng.choice(bits, size=(n, size), replace=True)
    return np.abs(draws.mean(axis=1) - bits.mean())


def p_values(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(1 + #{reference >= s}) / (n + 1): the conformal p-value of each score."""
    ref = np.sort(reference)
    at_least = len(ref) - np.searchsorted(ref, scores, side="left")
    return (1.0 + at_least) / (len(ref) + 1.0)


def threshold_at(reference: np.ndarray, fpr: float) -> float:
    """Scores above this are flagged: exactly those with p-value <= fpr."""
    n = len(reference)
    k = math.floor(fpr * (n + 1) + 1e-9) - 1
    if not 0 < fpr < 1:
        raise TokarError(f"the false-positive rate must lie in (0, 1), got {fpr}.")
    if k < 0:
        raise DataError(f"{n} calibration scores cannot set a threshold at a false-positive rate of "
                        f"{fpr}: that needs at least {math.ceil(1 / fpr) - 1}; raise the false-"
                        "positive rate or calibrate on more validation data.")
    return float(np.sort(reference)[::-1][k])


def reference_scores(method: str, calib: Components, group_size: int = 1) -> np.ndarray:
    """The in-distribution (calibration) scores a method's p-values are ranked among."""
    if method == "typicality":
        return typicality_reference(calib.bits, group_size)
    return method_scores(method, calib)[0]


# -- results -----------------------------------------------------------------------------------------
@dataclass
class Detection:
    id: str
    bits_per_unit: float  # the run's -log2 p(x) per data unit
    score: float  # the method's score: higher = more anomalous
    p_value: float
    anomalous: bool
    group: int | None = None  # typicality: the inputs tested together share a group
    token_nats: list[float] | None = field(default=None, repr=False)

    def to_dict(self, unit: str) -> dict[str, Any]:
        out = {"id": self.id, "unit": unit, "bits_per_unit": self.bits_per_unit,
               "score": self.score, "p_value": self.p_value,
               "verdict": "anomalous" if self.anomalous else "normal"}
        if self.group is not None:
            out["group"] = self.group
        return out


@dataclass
class DetectResult:
    """What `Pipeline.detect` and `tokar detect` give: one Detection per input."""

    method: str
    unit: str
    fpr: float
    threshold: float
    calibration_examples: int
    detections: list[Detection]
    group_size: int | None = None  # typicality

    @property
    def anomalous(self) -> list[Detection]:
        return [d for d in self.detections if d.anomalous]

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "unit": self.unit, "fpr": self.fpr, "threshold": self.threshold,
                "calibration_examples": self.calibration_examples, "examples": len(self.detections),
                "anomalous": len(self.anomalous),
                **({"group_size": self.group_size} if self.group_size else {})}


def text_passage(pipe: Pipeline, examples: list[Any]) -> int | None:
    """Text is calibrated on validation passages as long as the inputs (their median)."""
    if pipe.tokenizer.modality != "text":
        return None
    return max(1, int(np.median([len(str(x)) for x in examples])))


def check_method(method: str, background: Any, group_size: int, calibration_examples: int = 1,
                 fpr: float = 0.05) -> None:
    if method not in METHODS:
        raise TokarError(f"unknown detection method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "ratio" and background is None:
        raise TokarError("the likelihood ratio needs a background run: pass --background RUN_DIR "
                         "(train one with the same recipe and data.augment.mutate=0.2).")
    if background is not None and method != "ratio":
        raise TokarError(f"--background is used by --method ratio only, not {method}.")
    if group_size < 1:
        raise TokarError(f"the typicality group size must be at least 1, got {group_size}.")
    if not 0 < fpr < 1:
        raise TokarError(f"the false-positive rate must lie in (0, 1), got {fpr}.")
    if calibration_examples < 1:
        raise TokarError(f"calibration needs at least 1 example, got {calibration_examples}.")


def detect(pipe: Pipeline, examples: list[Any], method: str = "likelihood", *,
           ids: list[str] | None = None, background: Pipeline | None = None,
           fpr: float = 0.05, group_size: int = 5, compressor: str | None = None,
           per_token: bool = False,
           calibration_examples: int = DEFAULT_CALIBRATION_EXAMPLES) -> DetectResult:
    """Score `examples` with `method`, against thresholds calibrated on the run's validation
    split at false-positive rate `fpr` (see the module docstring)."""
    check_method(method, background, group_size, calibration_examples, fpr)
    if not examples:
        raise DataError("nothing to check: no examples given.")
    ids = list(ids) if ids is not None else [str(i) for i in range(len(examples))]
    bg = background
    if bg is not None:
        check_background(pipe, bg)
    if method == "complexity":
        compressor = compressor or default_compressor(pipe.tokenizer.modality)
        check_compressor(compressor, pipe.tokenizer.modality)
    else:
        compressor = None
    calib = calibrate(pipe, background=bg, compressor=compressor,
                      passage=text_passage(pipe, examples), limit=calibration_examples)
    bg_key = bg.prior.fingerprint() if bg is not None else None
    ref = calib.components(bg_key, compressor)

    bits, token_nats = example_bits(pipe, examples, ids, per_token)
    comp = Components(ids, bits, token_nats=token_nats)
    if bg is not None:
        comp.background_bits = example_bits(bg, examples, ids)[0]
    if compressor is not None:
        comp.complexity_bits = complexity_bits(pipe, examples, compressor)

    size = group_size if method == "typicality" else 1
    scores, groups = method_scores(method, comp, float(ref.bits.mean()), size)
    reference = reference_scores(method, ref, size)
    p = p_values(scores, reference)
    if groups is not None:  # a last, smaller group is ranked among bootstrap groups of its size
        last = np.flatnonzero(groups == groups[-1])
        if len(last) != size:
            p[last] = p_values(scores[last], reference_scores(method, ref, len(last)))
    threshold = threshold_at(reference, fpr)
    detections = [
        Detection(ids[i], float(bits[i]), float(scores[i]), float(p[i]), bool(p[i] <= fpr),
                  int(groups[i]) if groups is not None else None,
                  token_nats[i] if token_nats is not None else None)
        for i in range(len(examples))]
    return DetectResult(method, pipe.tokenizer.unit, fpr, threshold, len(calib.ids), detections,
                        size if method == "typicality" else None)
