"""YAML recipes: load, extend, override, interpolate, validate.

    data:      {source: text, path: "${data_dir}/tinyshakespeare.txt", val_fraction: 0.1}
    tokenizer: {name: char}
    prior:     {name: gpt, n_layer: 4, n_head: 4, n_embd: 128, block_size: 64}
    train:     {batch_size: 12, lr: 1.0e-3, max_steps: 2000}

- `extends: other.yaml` (a path relative to this file, or a list of them) is deep-merged under it;
  a section that names another component (`prior: {name: lstm}` over a gpt) replaces it.
- Overrides `a.b=value` (the value is parsed as YAML) and `~a.b` (delete) apply after loading.
- `${data_dir}` is the top-level `data_dir` key, else $TOKAR_DATA_DIR, else ./data.
- `tokenizer: {name: vqvae, pretrained: RUN_DIR}` loads a trained tokenizer (a run directory or a
  saved tokenizer folder) instead of fitting one: stage 1 trained once, reused by many priors.
- `order: {name: snake}` sets the order in which the prior sees each example's positions
  (pipelines/data/order.py); raster by default.
- `source:`/`name:` pick registered components by name (never import paths); each section is then
  checked against that component's config schema, and values against what training accepts
  (seeds the random generators take, betas in [0, 1), logits processors that exist and take their
  settings). Every problem is reported at once, each with its key path, the valid keys and the
  closest match.
YAML is read with a safe loader only, and bounded: a recipe file is at most 1 MiB of UTF-8, its
aliases may expand to at most 100,000 values (a "billion laughs" file fails at once instead of
filling memory), and `extends` chains are at most 16 files deep, 64 files in all, without cycles.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.data.order import OrderConfig, order_problems
from pipelines.recipe.files import load_raw, parse_yaml
from pipelines.training.scheduled_sampling import ScheduledSamplingConfig
from plugins.errors import RecipeError, RegistryError, TokarError, did_you_mean
from plugins.manager import get_registries
from plugins.registry import Registries
from plugins.shared import ValueSpace
from priors.decoding import DecodeConfig
from priors.heads.base import head_spec

SECTIONS = ("data_dir", "data", "tokenizer", "prior", "order", "train", "sample")
_VAR = re.compile(r"\$\{([^}]*)\}")
SEED_BITS = 64  # torch generators take seeds below 2**64


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(1000, ge=1)
    max_seconds: float | None = Field(None, gt=0, description="stop after this much training time")
    batch_size: int = Field(32, ge=1)
    seq_len: int | None = Field(None, ge=2, description="stream training window; default: block_size")
    lr: float = Field(1e-3, gt=0)
    min_lr: float | None = Field(None, ge=0, description="floor of the cosine schedule; default lr/10")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null disables")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    mixed_precision: str = Field("no", pattern="^(no|fp16|bf16)$")
    compile: bool = Field(False, description="torch.compile the prior (opt-in)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (intra-op); default: "
                                "torch's, one per core. Set it on a shared machine")
    log_with: list[str] = Field(default_factory=list, description="trackers: tensorboard, wandb...")
    eval_every: int = Field(250, ge=1)
    eval_batches: int | None = Field(20, ge=1, description="global validation batches; null = whole split")
    checkpoint_every: int | None = Field(None, ge=1, description="default: eval_every")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (and the best)")
    early_stopping_patience: int | None = Field(None, ge=1, description="evals without improvement")
    early_stopping_min_delta: float = Field(0.0, ge=0)
    eval_samples: int = Field(4, ge=0, description="samples written at each evaluation; 0: none")
    log_every: int = Field(10, ge=1)
    # numpy's global generator (seeded with it, as torch's and Python's are) takes 32 bits
    seed: int = Field(1337, ge=0, lt=2**32, description="seeds every random generator of training")
    memory_limit_gb: float | None = Field(None, gt=0, description="refuse a model and batch "
                                          "estimated to need more; default: this machine's memory")
    scheduled_sampling: ScheduledSamplingConfig | None = Field(
        None, description="feed the model its own samples during training (Bengio et al. 2015): "
        "{schedule: linear, max_p: 0.25, ramp_steps: 1000}; see pipelines/training/scheduled_sampling.py")

    @model_validator(mode="after")
    def _check_min_lr(self) -> TrainConfig:
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each lie in [0, 1) (AdamW's moment decay), got {list(self.betas)}")
        return self


class SampleConfig(DecodeConfig):
    """Defaults of `tokar sample` / Pipeline.sample: a DecodeConfig plus what to sample."""

    n: int = Field(16, ge=1)
    seed: int = Field(0, ge=0, lt=2**SEED_BITS)
    prompt: str | None = Field(None, description="text to continue (text runs)")
    stop: list[str] = Field(default_factory=list, description="strings of one token that end a sample")


@dataclass
class Component:
    """A recipe section resolved to a registered component and its validated config."""

    name: str
    cls: type
    config: BaseModel
    pretrained: str | None = None  # tokenizers only: load a trained one from this folder


@dataclass
class Recipe:
    data: Component
    tokenizer: Component
    prior: Component
    train: TrainConfig
    sample: SampleConfig
    data_dir: str
    source: str | None = None  # where it was loaded from, for messages
    order: OrderConfig = field(default_factory=OrderConfig)  # the prior's order of positions
    # the registries the names were resolved in: heads and logits processors are looked up there
    registries: Registries | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (defaults filled in): what a run directory stores."""
        return {
            "data_dir": self.data_dir,
            "data": {"source": self.data.name, **self.data.config.model_dump(mode="json")},
            "tokenizer": {"name": self.tokenizer.name,
                          **({"pretrained": self.tokenizer.pretrained} if self.tokenizer.pretrained else {}),
                          **self.tokenizer.config.model_dump(mode="json")},
            "prior": {"name": self.prior.name, **self.prior.config.model_dump(mode="json")},
            "order": self.order.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "sample": self.sample.model_dump(mode="json"),
        }

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b=value` (value parsed as YAML) and `~a.b` (delete) overrides, in order."""
    raw = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        if item.startswith("~"):
            keys = item[1:].split(".")
            node = raw
            for k in keys[:-1]:
                node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict) or keys[-1] not in node:
                problems.append(f"override '{item}': there is no key '{item[1:]}' to delete")
            else:
                del node[keys[-1]]
            continue
        if "=" not in item:
            problems.append(f"override '{item}' should look like key.path=value or ~key.path")
            continue
        dotted, text = item.split("=", 1)
        try:
            value = parse_yaml(text, f"override '{item}'") if text else None
        except RecipeError as exc:
            if not isinstance(exc.__cause__, yaml.YAMLError):
                raise  # too large or too deep: not a plain string either
            value = text
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string; users mean a number
        keys = dotted.split(".")
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    if problems:
        raise RecipeError(problems, "command-line overrides")
    return raw


def interpolate(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill `${data_dir}` in every string; other `${...}` references are errors."""
    data_dir = os.path.abspath(str(raw.get("data_dir") or os.environ.get("TOKAR_DATA_DIR") or "data"))
    problems: list[str] = []

    def fill(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: fill(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            for name in _VAR.findall(value):
                if name != "data_dir":
                    problems.append(
                        f"{where}: unknown reference ${{{name}}}; only ${{data_dir}} is available"
                    )
            return value.replace("${data_dir}", data_dir)
        return value

    out = fill(raw, "")
    out["data_dir"] = data_dir
    if problems:
        raise RecipeError(problems)
    return out


# -- validation -----------------------------------------------------------------------------------
def load_recipe(
    recipe: str | Path | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    registries: Registries | None = None,
) -> Recipe:
    """Load (from a path or a dict), extend, override, interpolate and validate a recipe."""
    if isinstance(recipe, dict):
        source = None
        raw = copy.deepcopy(recipe)
        if "extends" in raw:
            raise RecipeError(["'extends' is only supported in recipe files"])
    else:
        source = str(recipe)
        raw = load_raw(recipe)
    raw = interpolate(apply_overrides(raw, overrides))
    return validate(raw, registries, source)


def validate(raw: dict[str, Any], registries: Registries | None = None, source: str | None = None) -> Recipe:
    if registries is None:
        registries = get_registries()
    problems: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            problems.append(
                f"unknown section '{key}'.{did_you_mean(str(key), SECTIONS)} Valid sections: "
                f"{', '.join(s for s in SECTIONS if s != 'data_dir')}, data_dir, extends."
            )

    data = _component(raw, "data", "source", registries.sources, problems)
    tokenizer = _component(raw, "tokenizer", "name", registries.tokenizers, problems)
    prior = _component(raw, "prior", "name", registries.priors, problems)
    train = _model(TrainConfig, raw.get("train") or {}, "train", problems)
    sample = _model(SampleConfig, raw.get("sample") or {}, "sample", problems)
    if sample is not None:
        problems += check_processors(sample.processors, registries)
    order = _model(OrderConfig, raw.get("order") or {}, "order", problems)
    if order is not None:
        problems += order_problems(order, getattr(tokenizer.cls, "layout_kind", None) if tokenizer else None,
                                   prior.cls if prior else None)

    if tokenizer and prior:
        kind = getattr(tokenizer.cls, "layout_kind", None)
        if kind is not None and kind not in prior.cls.layouts:
            problems.append(
                f"prior: '{prior.name}' models {' or '.join(sorted(prior.cls.layouts))} layouts but "
                f"tokenizer '{tokenizer.name}' produces {kind} layouts; choose a matching pair."
            )
        problems += _head_problems(prior, tokenizer, registries)
    if tokenizer and sample is not None and getattr(tokenizer.cls, "modality", "text") != "text":
        for key in ("prompt", "stop"):
            if getattr(sample, key):
                problems.append(f"sample.{key}: takes text, but tokenizer '{tokenizer.name}' encodes "
                                f"{tokenizer.cls.modality}; remove it")
    if tokenizer and data:
        augment = getattr(data.config, "augment", None)
        if augment is not None and augment.mutate > 0 and getattr(tokenizer.cls, "continuous", False):
            problems.append(
                f"data.augment.mutate: tokenizer '{tokenizer.name}' produces real values, and "
                "mutation replaces token ids by random ids; use a discrete tokenizer (e.g. mulaw) "
                "or remove data.augment."
            )
        want, have = getattr(tokenizer.cls, "modality", None), getattr(data.cls, "modality", None)
        if want and have and want != have:
            problems.append(
                f"tokenizer: '{tokenizer.name}' encodes {want} but source '{data.name}' gives {have}."
            )
    if problems:
        raise RecipeError(problems, source)
    return Recipe(data, tokenizer, prior, train, sample, raw["data_dir"], source, order, registries)


def check_processors(specs: list[Any], registries: Registries) -> list[str]:
    """Problems with `sample.processors`: each entry must name a registered logits processor and
    give it settings it accepts (built here once, as decoding would)."""
    problems = []
    for i, spec in enumerate(specs):
        where = f"sample.processors[{i}]"
        if not isinstance(spec, dict) or "name" not in spec:
            problems.append(f"{where}: expected {{name: <processor>, ...settings}}, got {spec!r}; "
                            f"processors: {', '.join(registries.processors.names())}")
            continue
        settings = {k: v for k, v in spec.items() if k != "name"}
        try:
            factory = registries.processors.get(str(spec["name"]))
            factory(**settings)
        except RegistryError as exc:
            problems.append(f"{where}.name: {exc}")
        except (TypeError, ValueError, TokarError) as exc:
            problems.append(f"{where}: processor '{spec['name']}' does not take {settings}: {exc}")
    return problems


def _component(raw, section, selector, registry, problems) -> Component | None:
    body = raw.get(section)
    if body is None:
        problems.append(f"missing section '{section}' (with '{selector}: <registered name>')")
        return None
    if not isinstance(body, dict):
        problems.append(f"{section}: expected a mapping, got {type(body).__name__}")
        return None
    settings = dict(body)
    name = settings.pop(selector, None)
    pretrained = settings.pop("pretrained", None) if section == "tokenizer" else None
    if pretrained is not None and not isinstance(pretrained, str):
        problems.append(f"tokenizer.pretrained: expected a folder path, got {pretrained!r}")
        pretrained = None
    if name is None:
        problems.append(
            f"{section}.{selector}: missing; choose one of {', '.join(registry.names())}"
        )
        return None
    try:
        cls = registry.get(str(name))
    except RegistryError as exc:
        problems.append(f"{section}.{selector}: {exc}")
        return None
    config = _model(cls.Config, settings, section, problems)
    return Component(str(name), cls, config, pretrained) if config is not None else None


def _head_problems(prior: Component, tokenizer: Component, registries: Registries) -> list[str]:
    """The prior's head against what the tokenizer produces, as far as settings tell before any
    fitting: real values or ids, and (when the settings fix it) how many ids."""
    name, settings = head_spec(prior.config.head)
    try:
        cls = registries.heads.get(name)
    except RegistryError as exc:
        return [f"prior.head: {exc}"]
    problems: list[str] = []
    config = _model(cls.Config, settings, "prior.head", problems)
    if config is None:
        return problems
    continuous = bool(getattr(tokenizer.cls, "continuous", False))
    if continuous and not prior.cls.continuous_inputs:
        return [f"prior: '{prior.name}' models token ids, but tokenizer '{tokenizer.name}' "
                "produces real values; use a prior that reads them (gpt, lstm, wavenet)."]
    known = getattr(tokenizer.cls, "known_vocab_size", None)
    size = known(tokenizer.config) if known is not None and not continuous else None
    if cls.continuous != continuous:  # ids vs reals: the message names the kind of head to use
        found = cls.check_space(ValueSpace(continuous, size or 2), config)
    elif size is not None:  # the settings fix the number of ids (pixel levels, mu, a codebook)
        found = cls.check_space(ValueSpace.discrete(size), config)
    else:  # fitting decides the vocabulary (char, BPE) or the dims: checked when the prior is built
        found = []
    return [f"prior.head: tokenizer '{tokenizer.name}' and head '{name}' do not fit: {p}"
            for p in found]


def _valid_keys(model: type[BaseModel]) -> list[str]:
    """A config's keys, its own before those it inherits (prior.head comes last)."""
    own = [k for k in model.model_fields if k in getattr(model, "__annotations__", {})]
    return own + [k for k in model.model_fields if k not in own]


def _model(model: type[BaseModel], settings: Any, section: str, problems: list[str]):
    if not isinstance(settings, dict):
        problems.append(f"{section}: expected a mapping, got {type(settings).__name__}")
        return None
    try:
        return model(**settings)
    except ValidationError as exc:
        valid = _valid_keys(model)
        for err in exc.errors():
            path = ".".join([section, *map(str, err["loc"])])
            if err["type"] == "extra_forbidden":
                key = str(err["loc"][-1])
                problems.append(
                    f"{path}: unknown key.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}"
                )
            elif err["type"] == "missing":
                problems.append(f"{path}: required key is missing")
            else:
                given = err.get("input")
                problems.append(f"{path}: {err['msg']} (given: {given!r})")
        return None
