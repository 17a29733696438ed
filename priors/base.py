"""The Prior contract: stage 2 models token sequences by the chain rule, p(x) = prod_t p(x_t | x_<t).

Every prior speaks flat sequences in raster order: ids (B, T) with values in [0, vocab_size).
Grid layouts are flattened row by row; a prior that needs the grid (PixelCNN) reads `self.layout`.

Three ways to evaluate the same distribution, which the contract tests hold equal:
- `forward(ids, cond)`: teacher forcing, all positions at once. logits[:, t] parametrise
  p(x_t | x_<t), so position 0 is predicted from a start token and the whole sequence is scored.
- `log_prob(ids, cond)`: exact log-likelihood in nats, (B,).
- incremental decoding: `init_state(B, cond)` returns the logits of the first token and a state;
  `step(state, ids)` appends ids (B, k) and returns the logits of the token after each of them,
  (B, k, V). The state is whatever makes that fast: a KV cache, LSTM (h, c), activation queues.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import load_model, save_model
from torch import nn

from plugins.errors import CheckpointError
from tokenizers_ar.base import Layout, read_config, write_config

WEIGHTS_FILE = "model.safetensors"


class PriorConfig(BaseModel):
    """Base for prior hyperparameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class StepOutput(NamedTuple):
    logits: torch.Tensor  # (B, V) from init_state; (B, k, V) from step
    state: Any


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """-log p(x_t | x_<t) in nats for every position: logits (B, T, V), ids (B, T) -> (B, T).
    Computed in float32 whatever the autocast dtype, so losses stay exact in mixed precision."""
    return F.cross_entropy(logits.transpose(1, 2).float(), ids, reduction="none")


def model_nll(model: nn.Module, prior: Prior, ids: torch.Tensor,
              cond: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token NLL (B, T) of `ids` through `model`: the prior itself or a wrapper of it (DDP,
    which must be called, not bypassed). Priors with `fused_nll` compute it in forward from the
    targets; the others give logits and the cross-entropy is taken here."""
    if prior.fused_nll:
        return model(ids, cond, targets=ids)
    return token_nll(model(ids, cond), ids)


class StartToken(nn.Module):
    """The input at position 0 of a sequence prior: a learned start vector, plus a learned class
    vector when the prior is class-conditional. It lets the prior predict the first token too,
    so likelihoods cover every token and sampling needs no seed text."""

    def __init__(self, n_embd: int, n_classes: int = 0):
        super().__init__()
        self.start = nn.Parameter(torch.randn(n_embd) * 0.02)
        self.class_emb = nn.Embedding(n_classes, n_embd) if n_classes else None

    def forward(self, batch_size: int, cond: torch.Tensor | None) -> torch.Tensor:
        x = self.start.expand(batch_size, 1, -1)  # (B, 1, n_embd)
        if self.class_emb is not None:
            if cond is None:
                raise ValueError(f"this prior is class-conditional ({self.class_emb.num_embeddings} "
                                 "classes): pass cond, the class labels")
            x = x + self.class_emb(cond.view(batch_size)).unsqueeze(1)
        return x


class Prior(nn.Module, ABC):
    """Base class of every prior. Subclasses set `name`, `Config` and implement `forward`,
    `init_state` and `step`; `layouts` lists the layout kinds they can model."""

    name: ClassVar[str]
    Config: ClassVar[type[PriorConfig]] = PriorConfig
    layouts: ClassVar[frozenset[str]] = frozenset({"seq", "grid"})
    format_version: ClassVar[int] = 1
    # True: forward(ids, cond, targets=ids) returns the per-token NLL (B, T) directly, for output
    # distributions whose exact likelihood of the observed token is much cheaper than all V
    # logits (the discretized logistic mixture). Training and scoring then use it.
    fused_nll: ClassVar[bool] = False

    def __init__(self, config: PriorConfig, vocab_size: int, layout: Layout):
        super().__init__()
        self.config = config
        self.vocab_size = int(vocab_size)
        self.layout = layout

    @classmethod
    def check_layout(cls, layout: Layout, config: PriorConfig) -> list[str]:
        """Problems that stop this prior from modelling `layout` (empty if none)."""
        if layout.kind not in cls.layouts:
            return [
                f"prior '{cls.name}' models {' or '.join(sorted(cls.layouts))} layouts, but the "
                f"tokenizer produces a {layout.kind} layout ({layout}); pick a tokenizer/prior pair "
                "that fit (see `tokar plugins`)."
            ]
        return []

    @property
    def num_classes(self) -> int:
        """Number of class labels this prior conditions on (0: unconditional)."""
        return int(getattr(self.config, "n_classes", 0) or 0)

    @property
    def max_length(self) -> int | None:
        """Longest sequence `forward` accepts in one pass (None: unbounded)."""
        return None

    # -- what subclasses provide -----------------------------------------------------------------
    @abstractmethod
    def forward(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V); logits[:, t] depend only on ids[:, :t] and cond."""

    @abstractmethod
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        """Start decoding: logits (B, V) of the first token, and the decoding state."""

    @abstractmethod
    def step(self, state: Any, ids: torch.Tensor) -> StepOutput:
        """Append ids (B, k): logits (B, k, V) of the token after each, and the new state.
        The state may be updated in place; always use the one returned."""

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        """Select rows of a decoding state, `index` (B,) into the batch (beam search)."""
        raise NotImplementedError(
            f"prior '{self.name}' cannot reorder its decoding state, so beam search is not "
            "available for it (implement Prior.reorder_state)."
        )

    @property
    def max_rewind(self) -> int:
        """The most tokens `rewind` can forget at once (0: it cannot rewind)."""
        return 0

    def rewind(self, state: Any, n: int) -> Any:
        """Forget the last `n` tokens fed to `state` (speculative decoding drops rejected
        drafts this way)."""
        raise NotImplementedError(
            f"prior '{self.name}' cannot rewind its decoding state, so it cannot take part in "
            "speculative decoding (implement Prior.rewind)."
        )

    # -- shared behaviour ------------------------------------------------------------------------
    def log_prob(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-likelihood of each sequence in nats, (B,)."""
        return -model_nll(self, self, ids, cond).sum(dim=1)

    def loss(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per token (the training objective)."""
        return model_nll(self, self, ids, cond).mean()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(directory, {
            "name": self.name,
            "format_version": self.format_version,
            "vocab_size": self.vocab_size,
            "layout": self.layout.to_json(),
            "config": self.config.model_dump(mode="json"),
        })
        save_model(self, str(directory / WEIGHTS_FILE))  # handles tied (shared) weights
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> Prior:
        directory = Path(directory)
        payload = read_config(directory, "prior", cls.format_version)
        try:
            prior = cls(
                cls.Config(**payload.get("config", {})),
                vocab_size=payload["vocab_size"],
                layout=Layout.from_json(payload["layout"]),
            )
        except (ValidationError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"{directory / 'config.json'} does not describe a valid '{cls.name}' prior "
                f"({type(exc).__name__}: {exc}); it is corrupt or from an incompatible version."
            ) from exc
        load_weights(prior, directory / WEIGHTS_FILE, map_location)
        return prior.eval()


def load_weights(module: nn.Module, path: Path, map_location: str = "cpu") -> None:
    """Load safetensors weights into `module`, turning every failure into a clear error."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing.")
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=map_location)
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). Delete it and resume "
            "from an earlier checkpoint, or retrain."
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model described by config.json (missing: "
            f"{sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})."
        )
