"""What a plugin registers is checked when it registers it (pytest checks its hook
implementations the same way): the right kind of component, with what tokar will call on it, so
a mistake fails at once with the plugin's name, not later inside training with an
AttributeError.

One function per registry kind, each returning the problems it finds (empty: fine). The base
classes are imported lazily: `plugins` sits below both stages and must not import them at import
time (importing `plugins` stays free of torch).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def _class_problems(component: Any, base: type, base_name: str) -> list[str]:
    if not inspect.isclass(component) or not issubclass(component, base):
        what = type(component).__name__ if not inspect.isclass(component) else component.__name__
        return [f"expected a subclass of {base_name}, got {what}"]
    if inspect.isabstract(component):
        missing = ", ".join(sorted(component.__abstractmethods__))
        return [f"{component.__name__} does not implement {missing} (abstract in {base_name})"]
    return []


def _config_problems(component: type, base_config: type[BaseModel] | None = None) -> list[str]:
    config = getattr(component, "Config", None)
    if not inspect.isclass(config) or not issubclass(config, BaseModel):
        return [f"{component.__name__}.Config must be a pydantic model (the recipe section's schema)"]
    if base_config is not None and not issubclass(config, base_config):
        return [f"{component.__name__}.Config must subclass {base_config.__module__}.{base_config.__name__}"]
    if config.model_config.get("extra") != "forbid":
        return [f"{component.__name__}.Config must reject unknown keys, or a misspelled recipe key is "
                "silently ignored: subclass tokar's config base class or set "
                "model_config = ConfigDict(extra='forbid')"]
    return []


def _attr_problems(component: type, attrs: dict[str, tuple]) -> list[str]:
    out = []
    for attr, allowed in attrs.items():
        value = getattr(component, attr, None)
        if value is None or (allowed and value not in allowed):
            want = f"one of {', '.join(map(repr, allowed))}" if allowed else "a value"
            out.append(f"{component.__name__}.{attr} must be {want}, got {value!r}")
    return out


def check_tokenizer(component: Any) -> list[str]:
    from tokenizers_ar.base import Tokenizer, TokenizerConfig

    problems = _class_problems(component, Tokenizer, "tokenizers_ar.Tokenizer")
    if problems:
        return problems
    return _config_problems(component, TokenizerConfig) + _attr_problems(component, {
        "modality": (), "unit": (), "layout_kind": ("seq", "grid")})


def check_prior(component: Any) -> list[str]:
    from priors.base import Prior, PriorConfig

    problems = _class_problems(component, Prior, "priors.Prior")
    if problems:
        return problems
    problems = _config_problems(component, PriorConfig)
    layouts = getattr(component, "layouts", None)
    if not layouts or not set(layouts) <= {"seq", "grid"}:
        problems.append(f"{component.__name__}.layouts must be a non-empty set of 'seq' and 'grid', "
                        f"got {layouts!r}")
    return problems


def check_source(component: Any) -> list[str]:
    from pipelines.data import Source

    problems = _class_problems(component, Source, "pipelines.data.Source")
    return problems or _config_problems(component)


def check_head(component: Any) -> list[str]:
    from priors.heads.base import Head, HeadConfig

    problems = _class_problems(component, Head, "priors.heads.Head")
    if problems:
        return problems
    problems = _config_problems(component, HeadConfig)
    if component.n_params is Head.n_params:
        problems.append(f"{component.__name__} must define n_params (parameters per position)")
    if component.continuous and component.sample is Head.sample:
        problems.append(f"{component.__name__} is continuous: it must define sample()")
    if not component.continuous and component.logits is Head.logits:
        problems.append(f"{component.__name__} is discrete: it must define logits() (the V "
                        "log-masses that sampling, beam search and entropy coding use)")
    return problems


def check_processor(component: Any) -> list[str]:
    if not callable(component):
        return [f"a logits processor is registered as a factory: a callable settings -> "
                f"processor, got {type(component).__name__}"]
    return []


CHECKS: dict[str, Callable[[Any], list[str]]] = {
    "tokenizer": check_tokenizer, "prior": check_prior, "source": check_source,
    "head": check_head, "logits processor": check_processor,
}
