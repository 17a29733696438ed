"""Memory estimates checked before anything large is allocated: training a recipe's model, and
decoding `-n` samples with `--beam-size` beams of `--max-new-tokens` tokens.

Training. The prior is built on PyTorch's meta device (shapes, no storage), so its parameters are
counted exactly whatever its size, and one teacher-forced forward pass of a (batch_size, T) batch
runs on meta tensors with a hook on every module: the bytes of their outputs approximate the
activations kept for the backward pass. Estimate = 16 bytes per parameter (fp32 weights, gradients
and AdamW's two moments) + those activations. Priors whose constructor reads tensor values
(a mask's `.all()`) see placeholders instead: only shapes matter here. A prior that cannot be
built on the meta device is not estimated (a debug line says so).

Decoding. A real decoding state for one sequence (`prior.init_state(1)`) is measured and scaled
by n x beams, plus the token buffer and a few copies of the logits.

The training window. The same meta-device prior tells whether a stream of tokens can be cut into
training windows: its `max_length` (block_size) or `train.seq_len`, checked by `tokar validate`
and before a run directory is claimed, instead of failing after training started.

Not here: the machine's memory and the check itself (plugins/resources.py), sizes from file
headers (the tokenizers and sources that read them).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from plugins.errors import RecipeError
from plugins.registry import Registry
from plugins.resources import MetaShapes, check_fits, gib, machine_memory
from priors.base import construct
from priors.likelihood import token_nll
from tokenizers_ar.base import Layout

logger = logging.getLogger(__name__)

TRAIN_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq


@dataclasses.dataclass
class TrainingEstimate:
    parameters: int
    activations: int  # bytes, one micro-batch
    batch: tuple[int, int]

    @property
    def total(self) -> int:
        return self.parameters * TRAIN_BYTES_PER_PARAM + self.activations

    def describe(self) -> str:
        b, t = self.batch
        return (f"{self.parameters:,} parameters ({gib(self.parameters * TRAIN_BYTES_PER_PARAM)} with "
                f"gradients and AdamW state) and activations of a {b} x {t}-token batch "
                f"({gib(self.activations)})")


def build_on_meta(prior_cls: type, config: Any, vocab_size: int, layout: Any,
                  heads: Registry | None = None) -> Any:
    """The prior with its tensors on the meta device (no memory, no data), or None when it cannot
    be built there."""
    try:
        with torch.device("meta"), MetaShapes():
            return construct(prior_cls, config, vocab_size, layout, heads)
    except Exception as exc:  # noqa: BLE001 - any failure only means: nothing to check this way
        logger.debug("%s cannot be built on the meta device: %s", prior_cls.__name__, exc)
        return None


def window_problems(recipe: Any, prior: Any) -> list[str]:
    """A prior trained on a stream of tokens needs a training window: its block_size (what
    `max_length` says), or `train.seq_len` no longer than it."""
    if prior.layout.kind != "seq":
        return []
    seq_len, window = recipe.train.seq_len, prior.max_length
    if seq_len is None and window is None:
        return [f"train.seq_len: prior '{recipe.prior.name}' has no block_size (its max_length is "
                "None), so training needs the length of its windows: set train.seq_len, e.g. "
                "train.seq_len=128"]
    if seq_len is not None and window is not None and seq_len > window:
        return [f"train.seq_len: {seq_len} is longer than prior '{recipe.prior.name}' accepts "
                f"(block_size {window}); set train.seq_len <= {window} or raise the block_size"]
    return []


def check_training_window(recipe: Any, prior: Any) -> None:
    if problems := window_problems(recipe, prior):
        raise RecipeError(problems, recipe.source)


def estimate_training(prior_cls: type, config: Any, vocab_size: int, layout: Any, batch_size: int,
                      seq_len: int | None) -> TrainingEstimate | None:
    """Parameters and activation bytes of training `prior_cls(config)` on (batch_size, T) batches;
    None when the prior cannot be built on the meta device."""
    prior = build_on_meta(prior_cls, config, vocab_size, layout)
    if prior is None:
        return None
    n_params = sum(p.numel() for p in prior.parameters())
    length = layout.length if layout.kind == "grid" else (seq_len or prior.max_length or 1)
    seen: dict[int, torch.Tensor] = {}  # outputs shared by a container and its child count once

    def record(module, inputs, output) -> None:
        for t in output if isinstance(output, tuple | list) else (output,):
            if isinstance(t, torch.Tensor):
                seen[id(t)] = t

    hooks = [m.register_forward_hook(record) for m in prior.modules()]
    try:
        ids = (torch.zeros(batch_size, length, layout.dims, device="meta") if layout.continuous
               else torch.zeros(batch_size, length, dtype=torch.long, device="meta"))
        cond = torch.zeros(batch_size, dtype=torch.long, device="meta") if prior.num_classes else None
        with MetaShapes():
            token_nll(prior, prior, ids, cond)
    except Exception as exc:  # noqa: BLE001
        logger.debug("no activation estimate for %s: %s", prior_cls.__name__, exc)
        seen.clear()
    finally:
        for h in hooks:
            h.remove()
    activations = sum(t.numel() * t.element_size() for t in seen.values())
    return TrainingEstimate(n_params, activations, (batch_size, length))


def check_training_memory(recipe: Any, vocab_size: int, layout: Any) -> TrainingEstimate | None:
    """Refuse a recipe whose model and batch would not fit (train.memory_limit_gb overrides the
    machine's figure)."""
    cfg = recipe.train
    estimate = estimate_training(recipe.prior.cls, recipe.prior.config, vocab_size, layout,
                                 cfg.batch_size, cfg.seq_len)
    if estimate is None:
        return None
    limit = int(cfg.memory_limit_gb * (1 << 30)) if cfg.memory_limit_gb else machine_memory()
    if torch.cuda.is_available() and not cfg.memory_limit_gb:
        limit = torch.cuda.get_device_properties(0).total_memory
    check_fits(estimate.total, f"training prior '{recipe.prior.name}' with {estimate.describe()}",
               "use a smaller model (n_layer, n_embd...) or train.batch_size, or set "
               "train.memory_limit_gb to the memory you know is there.", limit)
    return estimate


def _tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable in a decoding state (tuples, dicts, dataclasses...)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v, seen) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(_tensor_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        return sum(_tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


def _as_int(value: Any, default: int) -> int:
    try:
        return max(int(value), 1) if value is not None else default
    except (TypeError, ValueError):
        return default


def check_decode_memory(prior: Any, n: int, settings: dict[str, Any], prompt_tokens: int = 0) -> None:
    """Refuse a decoding request (n samples, beams, new tokens) that would not fit in memory.
    `settings` are the decoding settings as given (checked for type later by DecodeConfig)."""
    rows = _as_int(n, 1) * _as_int(settings.get("num_beams"), 1)
    new_tokens = _as_int(settings.get("max_new_tokens"), 1)
    draft = _as_int(settings.get("num_draft_tokens"), 1)
    per_row = (prompt_tokens + new_tokens + draft) * 8 * 3 + prior.vocab_size * 4 * 4
    if rows * per_row <= machine_memory() // 64:  # clearly small: skip measuring a state
        return
    try:
        cond = torch.zeros(1, dtype=torch.long) if prior.num_classes else None
        with torch.no_grad():
            per_row += _tensor_bytes(prior.init_state(1, cond))
    except Exception as exc:  # noqa: BLE001 - the estimate then covers tokens and logits only
        logger.debug("could not measure a decoding state: %s", exc)
    check_fits(rows * per_row, f"decoding {n} sample(s) x {rows // max(_as_int(n, 1), 1)} beam(s) "
               f"of {new_tokens} new tokens", "ask for fewer samples (-n), beams (--beam-size) or "
               "tokens (--max-new-tokens).")


def check_recipe_memory(recipe: Any, tokenizer: Any) -> TrainingEstimate | None:
    """check_training_memory before any data is read (`tokar validate`): with the tokenizer's
    vocabulary and layout when it is already fitted (pretrained, or fixed like mu-law); an
    unfitted text tokenizer counts as its configured vocab_size (else 256). A grid whose size
    only fitting tells (images) is checked when training starts instead."""

    try:
        if tokenizer.is_fitted:
            vocab, layout = tokenizer.vocab_size, tokenizer.layout
        elif getattr(tokenizer, "layout_kind", None) == "seq":
            vocab, layout = getattr(tokenizer.config, "vocab_size", None) or 256, Layout.seq()
        else:
            return None
    except Exception as exc:  # noqa: BLE001 - a tokenizer that cannot tell yet: no estimate
        logger.debug("no memory estimate before fitting %s: %s", tokenizer.name, exc)
        return None
    estimate = check_training_memory(recipe, vocab, layout)
    heads = recipe.registries.heads if recipe.registries is not None else None
    prior = build_on_meta(recipe.prior.cls, recipe.prior.config, vocab, layout, heads)
    if prior is not None:
        check_training_window(recipe, prior)
    return estimate
