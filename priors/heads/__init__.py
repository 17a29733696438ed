"""Output distributions (heads): what a prior outputs per position. See priors/heads/base.py."""

from typing import Any

from pydantic import ValidationError

from plugins.errors import LayoutError
from plugins.manager import get_registries
from plugins.registry import Registry
from plugins.shared import ValueSpace
from priors.heads.base import PMF_PRECISION, Head, HeadConfig, head_spec
from priors.heads.bernoulli import Bernoulli
from priors.heads.categorical import Categorical
from priors.heads.gaussian import Gaussian, GaussianMixture
from priors.heads.logistic_mixture import LogisticMixture

BUILTIN_HEADS = {h.name: h for h in (Categorical, Bernoulli, LogisticMixture, Gaussian, GaussianMixture)}


def build_head(spec: Any, space: ValueSpace, heads: Registry | None = None) -> Head:
    """The head a prior's config names, looked up in `heads`: the registry a pipeline resolved
    its recipe in. A prior built by hand (a notebook, a plugin's own tests) passes none and gets
    the process-wide registry: built-ins and every installed plugin's heads."""
    name, settings = head_spec(spec)
    cls = (heads if heads is not None else get_registries().heads).get(name)
    try:
        config = cls.Config(**settings)
    except ValidationError as exc:
        raise LayoutError(f"head '{name}' settings {settings}: {exc.errors()[0]['msg']}") from exc
    return cls(config, space)


__all__ = ["BUILTIN_HEADS", "PMF_PRECISION", "Bernoulli", "Categorical", "Gaussian",
           "GaussianMixture", "Head", "HeadConfig", "LogisticMixture", "build_head",
           "head_spec"]
