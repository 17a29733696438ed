"""What a plugin registers is checked when it registers it (pytest checks its hook
implementations the same way): the right kind of component, with what tokar will call on it, so
a mistake fails at once with the plugin's name, not later inside training with an
AttributeError.

Here are the pieces every check is made of. The checks themselves live with the base classes
they check (`check_tokenizer` in tokenizers_ar/plugin.py, `check_prior`, `check_head` and
`check_processor` in priors/plugin.py, `check_source` in pipelines/plugin.py) and reach the
registries through the `tokar_register_checks` hook: `plugins` sits below every package and
imports none of them.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel


def class_problems(component: Any, base: type, base_name: str) -> list[str]:
    if not inspect.isclass(component) or not issubclass(component, base):
        what = type(component).__name__ if not inspect.isclass(component) else component.__name__
        return [f"expected a subclass of {base_name}, got {what}"]
    if inspect.isabstract(component):
        missing = ", ".join(sorted(component.__abstractmethods__))
        return [f"{component.__name__} does not implement {missing} (abstract in {base_name})"]
    return []


def config_problems(component: type, base_config: type[BaseModel] | None = None) -> list[str]:
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


def attr_problems(component: type, attrs: dict[str, tuple]) -> list[str]:
    out = []
    for attr, allowed in attrs.items():
        value = getattr(component, attr, None)
        if value is None or (allowed and value not in allowed):
            want = f"one of {', '.join(map(repr, allowed))}" if allowed else "a value"
            out.append(f"{component.__name__}.{attr} must be {want}, got {value!r}")
    return out
