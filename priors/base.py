"""The Prior contract: stage 2 models sequences by the chain rule, p(x) = prod_t p(x_t | x_<t).

Every prior speaks flat sequences in raster order: values (B, T), token ids in [0, vocab_size),
or for continuous layouts real vectors (B, T, D). Grid layouts are flattened row by row; a prior
that needs the grid (PixelCNN) reads `self.layout`.

A prior is a network body plus a head (priors/heads): at every position the body outputs the
head's `n_params` parameters, and the head is the distribution p(x_t | x_<t) they describe
(categorical logits, a Bernoulli logit, a logistic or Gaussian mixture). The recipe picks the
head (`prior: {head: {name: ...}}`, categorical by default); `self.distribution` is it.

Three ways to evaluate the same distribution, which the contract tests hold equal:
- `forward(x, cond)`: teacher forcing, all positions at once. params[:, t] describe
  p(x_t | x_<t), so position 0 is predicted from a start token and the whole sequence is scored.
- `log_prob(x, cond)`: exact log-likelihood in nats, (B,): the head's log_prob summed
  (priors/likelihood.py, the one place -log p is computed).
- incremental decoding: `init_state(B, cond)` returns the params of the first position and a
  state; `step(state, x)` appends x (B, k[, D]) and returns the params of the position after each
  of them, (B, k, n_params). The state is whatever makes that fast: a KV cache, LSTM (h, c),
  activation queues.
Optional: `reorder_state` (beam search), `rewind` with `max_rewind` (speculative decoding),
`ensemble_log_prob` for a prior trained over several orderings (MADE's masks), and
`exact_coder_class`: the integer-exact coding step of priors/integer.py, whose pmfs are the
same on every machine (portable compression); `exact_coder()` builds one from the weights.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import load_model, save_model
from torch import nn

from plugins.errors import CheckpointError, CompressionError, DecodingError, TokarError
from plugins.registry import Registry
from plugins.resources import built_within_memory
from plugins.shared import Layout, ValueSpace, read_config, write_config
from priors.heads import build_head
from priors.heads.base import Head, head_spec
from priors.likelihood import token_nll

if TYPE_CHECKING:
    from priors.integer import ExactCoder

WEIGHTS_FILE = "model.safetensors"


class PriorConfig(BaseModel):
    """Base for prior hyperparameters: unknown keys are errors, not silently ignored. `head`
    names the output distribution (a registered head) and its settings."""

    model_config = ConfigDict(extra="forbid")
    head: str | dict[str, Any] = Field(
        "categorical", description="output distribution: categorical, bernoulli, "
        "logistic_mixture, gaussian, gaussian_mixture, or {name: ..., settings...}")

    @field_validator("head")
    @classmethod
    def _head_names_one(cls, value: Any) -> Any:
        head_spec(value)  # a name, or a mapping with a name
        return value


class StepOutput(NamedTuple):
    params: torch.Tensor  # (B, n_params) from init_state; (B, k, n_params) from step
    state: Any


def embedding(space: ValueSpace, n_embd: int) -> nn.Module:
    """The input layer for one position's value: a lookup table for token ids, a linear map
    for a vector of reals."""
    return nn.Linear(space.size, n_embd) if space.continuous else nn.Embedding(space.size, n_embd)


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
    `init_state` and `step`, with a body that outputs `self.n_params` numbers per position;
    `layouts` lists the layout kinds they can model, `continuous_inputs` whether they read
    real-valued positions as well as token ids."""

    name: ClassVar[str]
    Config: ClassVar[type[PriorConfig]] = PriorConfig
    layouts: ClassVar[frozenset[str]] = frozenset({"seq", "grid"})
    continuous_inputs: ClassVar[bool] = False  # True: models Layout(dims=D) values too
    raster_only: ClassVar[bool] = False  # True: its structure assumes raster order (no `order:`)
    format_version: ClassVar[int] = 1
    exact_coder_class: ClassVar[type[ExactCoder] | None] = None  # priors/integer.py

    def __init__(self, config: PriorConfig, vocab_size: int, layout: Layout,
                 heads: Registry | None = None):
        super().__init__()
        self.config = config
        self.vocab_size = int(vocab_size)
        self.layout = layout
        self.space = layout.space(vocab_size)  # what one position holds
        self.distribution: Head = build_head(config.head, self.space, heads)

    @classmethod
    def check_layout(cls, layout: Layout, config: PriorConfig) -> list[str]:
        """Problems that stop this prior from modelling `layout` (empty if none)."""
        if layout.kind not in cls.layouts:
            return [
                f"prior '{cls.name}' models {' or '.join(sorted(cls.layouts))} layouts, but the "
                f"tokenizer produces a {layout.kind} layout ({layout}); pick a tokenizer/prior pair "
                "that fit (see `tokar plugins`)."
            ]
        if layout.continuous and not cls.continuous_inputs:
            return [f"prior '{cls.name}' models token ids, but the tokenizer produces real values "
                    f"({layout}); use a prior that reads them (gpt, lstm, wavenet)."]
        return []

    @property
    def n_params(self) -> int:
        """Numbers the body outputs per position: the head's parameters."""
        return self.distribution.n_params

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
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced head params (B, T, n_params); params[:, t] depend only on x[:, :t]
        and cond."""

    @abstractmethod
    def init_state(self, batch_size: int, cond: torch.Tensor | None = None) -> StepOutput:
        """Start decoding: params (B, n_params) of the first position, and the decoding state."""

    @abstractmethod
    def step(self, state: Any, x: torch.Tensor) -> StepOutput:
        """Append x (B, k) ids or (B, k, D) reals: params (B, k, n_params) of the position after
        each, and the new state. The state may be updated in place; always use the one returned."""

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

    def step_horizon(self, state: Any) -> int | None:
        """How many tokens `step` can take from `state` before it rebuilds the state at a
        cost (the GPT's window sliding past block_size); None: no such limit.
        Speculative decoding ends its drafts there, so a rejection never undoes a rebuild."""
        return None

    def early_exit(self, n_layer: int) -> Prior:
        """A draft for self-speculative decoding: this prior's first `n_layer` layers and its
        output head, sharing its weights."""
        raise DecodingError(f"prior '{self.name}' cannot draft with its own first layers "
                            "(self-speculation needs a prior that implements early_exit, such "
                            "as gpt); use a draft prior or the 'ngram' draft.")

    def compile_step(self) -> None:
        """Make `step` one compiled program from here on (`DecodeConfig.compile`), where the
        prior's step is a chain of ops small enough that their fixed cost decides its speed."""
        raise DecodingError(f"prior '{self.name}' has no compiled step (wavenet has one): "
                            "drop --compile (sample.compile in a recipe).")

    def exact_coder(self) -> ExactCoder:
        """This prior's coding step in integer arithmetic (priors/integer.py), built from its
        weights: the same pmfs on every machine."""
        if self.exact_coder_class is None:
            raise CompressionError(f"prior '{self.name}' has no portable (integer-exact) coding "
                                   "step; compress with --no-portable, or use gpt, lstm, "
                                   "pixelcnn or wavenet")
        return self.exact_coder_class.from_prior(self)

    # -- shared behaviour ------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-likelihood of each sequence in nats, (B,)."""
        return -token_nll(self, self, x, cond).sum(dim=1)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood in nats per position (the training objective)."""
        return token_nll(self, self, x, cond).mean()

    def ensemble_log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                          n: int | None = None) -> torch.Tensor:
        """log (1/n) sum_k p_k(x), (B,): the test-time ensemble of the first n (default all) of
        the orderings the prior was trained over. Only priors trained over several orderings
        (MADE's masks) have one."""
        raise TokarError(f"prior '{self.name}' has no ensemble of orderings; drop --ensemble")

    def fingerprint(self) -> str:
        """The model's identity: SHA-256 (16 hex digits) of its class, vocabulary, config and every
        weight's bytes (int8 weights by their integers and scales). Anything keyed on a trained
        model uses it (compressed files, detection caches, distilled drafts), beside
        `Tokenizer.fingerprint()`."""
        h = hashlib.sha256(f"{type(self).__qualname__}:{self.vocab_size}:".encode())
        h.update(json.dumps(self.config.model_dump(mode="json"), sort_keys=True).encode())
        for name, value in sorted(self.state_dict().items()):
            h.update(name.encode())
            _hash_value(h, value)
        return h.hexdigest()[:16]

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
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu",
                        heads: Registry | None = None) -> Prior:
        directory = Path(directory)
        payload = read_config(directory, "prior", cls.format_version)
        try:
            config, layout = cls.Config(**payload.get("config", {})), Layout.from_json(payload["layout"])
            vocab_size = payload["vocab_size"]
            # sizes from a file are checked before allocating: an edited config.json asking for a
            # 26 GB embedding is one error, not minutes of swapping
            prior = built_within_memory(
                lambda: construct(cls, config, vocab_size, layout, heads),
                f"the saved prior in {directory} (as its config.json describes it)",
                "its config.json is corrupt or was made for a far larger machine.")
        except (ValidationError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"{directory / 'config.json'} does not describe a valid '{cls.name}' prior "
                f"({type(exc).__name__}: {exc}); it is corrupt or from an incompatible version."
            ) from exc
        load_weights(prior, directory / WEIGHTS_FILE, map_location)
        return prior.eval()


def _hash_value(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:  # int8 inference weights: their integers, scale and zero point
            h.update(repr((t.q_scale(), t.q_zero_point()) if t.qscheme() == torch.per_tensor_affine
                          else t.q_per_channel_scales().tolist()).encode())
            t = t.int_repr()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, (tuple, list)):
        for v in value:
            _hash_value(h, v)
    else:
        h.update(repr(value).encode())


def construct(cls: type[Prior], config: PriorConfig, vocab_size: int, layout: Layout,
              heads: Registry | None = None) -> Prior:
    """`cls(config, vocab_size, layout, heads)`: the one way tokar builds a prior. A prior whose
    `__init__` takes no `heads` (written before heads were passed) is built without them and
    reads the built-in heads."""
    if heads is not None and "heads" in inspect.signature(cls.__init__).parameters:
        return cls(config, vocab_size=vocab_size, layout=layout, heads=heads)
    return cls(config, vocab_size=vocab_size, layout=layout)


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
