"""Stage 1 of two-stage generation, as the pipeline sees it: where the tokenizer comes from, how
healthy its code is before a prior is trained on it, and whether cached codes still decode well.

- `build_tokenizer`: a fresh tokenizer from the recipe (fitted by `Pipeline.train`), or a trained
  one loaded from `tokenizer: {name: vqvae, pretrained: RUN_DIR_or_TOKENIZER_DIR}`. A pretrained
  tokenizer keeps its own settings; the run's recipe.yaml records them.
- `write_health`: for lossy image tokenizers (VQ codes), codebook usage, dead codes, perplexity
  and reconstruction PSNR on held-out images -> RUN_DIR/tokenizer_health.json, plus originals
  over reconstructions in RUN_DIR/reconstructions.png. Warns when under half the codebook is used:
  the prior would then model a much smaller vocabulary than the recipe pays for.
- `verify_codes`: decode the cached code grids of a run and compare them with the originals.

All of it goes through the public tokenizer API (encode_batch, decode_batch), so a plugin's
tokenizer gets the same checks without knowing about them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.data import sources
from pipelines.io.atomic import write_json_atomically
from pipelines.io.safe import read_json
from pipelines.recipe.loader import Component
from pipelines.runs.rundir import load_saved
from pipelines.runs.samples import write_samples
from plugins.errors import CheckpointError, DataError, RecipeError, TokarError
from tokenizers_ar import images
from tokenizers_ar.base import CONFIG_FILE, Tokenizer, code_stats

logger = logging.getLogger(__name__)

HEALTH_FILE = "tokenizer_health.json"
RECONSTRUCTIONS_FILE = "reconstructions.png"
HEALTH_EXAMPLES = 2000  # held-out images the health report looks at
LOW_USAGE = 0.5


# -- where the tokenizer comes from -----------------------------------------------------------------
def tokenizer_dir(path: str | Path) -> Path:
    """A saved tokenizer folder: `path` itself, or `path/tokenizer` when `path` is a run."""
    path = Path(path)
    for candidate in (path, path / "tokenizer"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise RecipeError([f"tokenizer.pretrained: no saved tokenizer in {path} (looked for "
                       f"{path / CONFIG_FILE} and {path / 'tokenizer' / CONFIG_FILE}). Point it at a "
                       "run directory of `tokar train` or at a folder written by tokenizer.save()."])


def build_tokenizer(spec: Component) -> Tokenizer:
    """The recipe's tokenizer: new (to be fitted) or loaded from `spec.pretrained`. For a loaded
    one, `spec.config` becomes the saved settings, so the run's recipe.yaml tells the truth."""
    if spec.pretrained is None:
        return spec.cls(spec.config)
    directory = tokenizer_dir(spec.pretrained)
    saved = read_json(directory / CONFIG_FILE, "tokenizer config", CheckpointError).get("name")
    if saved != spec.name:
        raise RecipeError([f"tokenizer.pretrained: {directory} holds a '{saved}' tokenizer but the "
                           f"recipe names '{spec.name}'; set tokenizer.name: {saved}."])
    tokenizer = load_saved(spec.cls, directory, "tokenizer")
    if not tokenizer.is_fitted:
        raise RecipeError([f"tokenizer.pretrained: the tokenizer in {directory} was never fitted."])
    conflicts = [f"tokenizer.{key}: the recipe sets {getattr(spec.config, key)!r} but the pretrained "
                 f"tokenizer in {directory} has {getattr(tokenizer.config, key)!r}; remove the "
                 "setting (a pretrained tokenizer keeps its own)"
                 for key in sorted(spec.config.model_fields_set)
                 if getattr(spec.config, key) != getattr(tokenizer.config, key)]
    if conflicts:
        raise RecipeError(conflicts)
    spec.config = tokenizer.config
    logger.info("tokenizer '%s' loaded from %s (fingerprint %s)", spec.name, directory,
                tokenizer.fingerprint())
    return tokenizer


# -- health before stage 2 --------------------------------------------------------------------------
def needs_health(tokenizer: Tokenizer) -> bool:
    """Lossy image tokenizers with a grid of codes: the ones whose code can be bad."""
    return not tokenizer.lossless and tokenizer.modality == "image" and tokenizer.layout.kind == "grid"


def background_of(tokenizer: Tokenizer) -> images.Background:
    """What the tokenizer composites transparent images over (white when it has no setting)."""
    return getattr(tokenizer.config, "background", "white")


def _as_unit(tokenizer: Tokenizer, examples: list[Any]) -> np.ndarray:
    """Images -> (N, H, W, C) in [0, 1], read the way the tokenizer reads them."""
    return images.to_unit(examples, getattr(tokenizer, "channels", None),
                          getattr(tokenizer.config, "max_value", 255), tokenizer.name,
                          background_of(tokenizer))


def distortion(tokenizer: Tokenizer, examples: list[Any], codes: list[torch.Tensor]) -> dict[str, float]:
    """MSE (on the [0, 1] scale) and PSNR of the decoded codes against the original images."""
    decoded = tokenizer.decode_batch(codes)
    mse = float(np.mean((_as_unit(tokenizer, examples) - _as_unit(tokenizer, decoded)) ** 2))
    return {"mse": mse, "psnr_db": images.psnr(mse)}


def tokenizer_health(tokenizer: Tokenizer, examples: list[Any]) -> dict[str, Any]:
    if not examples:
        raise DataError("no held-out images to check the tokenizer on.")
    codes = tokenizer.encode_batch(examples)
    counts = torch.bincount(torch.stack(codes).reshape(-1), minlength=tokenizer.vocab_size)
    stats = code_stats(counts)
    used = int((counts > 0).sum())
    return {
        "tokenizer": tokenizer.name, "fingerprint": tokenizer.fingerprint(), "examples": len(examples),
        "code_grid": list(tokenizer.layout.shape), "codebook_size": tokenizer.vocab_size,
        "codes_used": used, "dead_codes": tokenizer.vocab_size - used, "usage": stats["usage"],
        "perplexity": stats["perplexity"], **distortion(tokenizer, examples, codes),
        "fit": getattr(tokenizer, "fit_summary", None),
    }


def write_health(tokenizer: Tokenizer, examples: list[Any], run_dir: Path) -> dict[str, Any]:
    """Check the code on held-out images and write the report into the run directory."""
    health = tokenizer_health(tokenizer, examples)
    write_json_atomically(run_dir / HEALTH_FILE, health)
    shown = examples[:8]
    originals = images.to_pil(images.to_tensor(shown, getattr(tokenizer, "channels", None),
                                               getattr(tokenizer.config, "max_value", 255),
                                               tokenizer.name, background_of(tokenizer)))
    write_samples(originals + tokenizer.decode_batch(tokenizer.encode_batch(shown)),
                  run_dir / RECONSTRUCTIONS_FILE, cols=len(shown))
    logger.info("tokenizer health: %d/%d codes used (%.0f%%), perplexity %.1f, PSNR %.2f dB on %d "
                "held-out images", health["codes_used"], health["codebook_size"],
                100 * health["usage"], health["perplexity"], health["psnr_db"], len(examples))
    if health["usage"] < LOW_USAGE:
        logger.warning(
            "tokenizer '%s' uses only %d of %d codes (%.0f%%) on held-out images: the prior will "
            "model a much smaller vocabulary than codebook_size. Consider a smaller codebook_size, "
            "more fit steps, or a lower threshold_ema_dead_code.", tokenizer.name,
            health["codes_used"], health["codebook_size"], 100 * health["usage"])
    return health


def held_out(splits: Any, n: int = HEALTH_EXAMPLES) -> list[Any]:
    """Up to `n` validation images (the head of the training data when there is no validation)."""
    split = splits.get("validation")
    if split is None or len(split) == 0:
        split = splits["train"]
        if not hasattr(split, "select"):  # a stream
            return [row["example"] for row in split.take(n)]
    return list(split.select(range(min(n, len(split))))["example"])


# -- tokar codes verify -----------------------------------------------------------------------------
def verify_codes(pipe: Any, split: str = "validation", limit: int | None = None,
                 recheck: int = 64) -> dict[str, Any]:
    """Decode a run's cached code grids for `split` and measure them against the original images.
    Also re-encodes the first `recheck` images: cached codes that differ are stale."""
    tokenizer = pipe.tokenizer
    if tokenizer.modality != "image" or tokenizer.layout.kind != "grid":
        raise TokarError(f"`tokar codes verify` checks image code grids; this run's tokenizer "
                         f"'{tokenizer.name}' encodes {tokenizer.modality} as {tokenizer.layout}.")
    splits = pipe.recipe.data.cls(pipe.recipe.data.config).load()
    if split not in splits or not hasattr(splits[split], "select") or len(splits[split]) == 0:
        raise DataError(f"the run's data has no (non-streamed, non-empty) split '{split}'; "
                        f"use --split with one of {', '.join(splits)}.")
    ds = splits[split]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    tokens = sources.tokenize({split: ds}, tokenizer)[split].tokens  # cached by fingerprint
    shape = tokenizer.layout.shape
    codes = list(torch.from_numpy(tokens).view(-1, *shape))
    examples = list(ds["example"])
    fresh = tokenizer.encode_batch(examples[:recheck])
    stale = sum(not torch.equal(a, b) for a, b in zip(fresh, codes, strict=False))
    return {"run_dir": str(pipe.run_dir), "split": split, "images": len(codes), "code_grid": list(shape),
            "fingerprint": tokenizer.fingerprint(), **distortion(tokenizer, examples, codes),
            "rechecked": len(fresh), "stale": stale}
