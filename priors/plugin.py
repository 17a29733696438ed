"""tokar's own priors, output distributions (heads) and logits processors, registered through the
hooks every third-party plugin uses.

The manager loads this module by name (plugins.manager.BUILTIN_PLUGINS), so `plugins` itself
imports no prior.
"""

from __future__ import annotations

from typing import Any

from plugins.checks import class_problems, config_problems
from plugins.hookspecs import Register, hookimpl
from priors.base import Prior, PriorConfig
from priors.fvsbn import FVSBN
from priors.gpt import GPT
from priors.heads import BUILTIN_HEADS
from priors.heads.base import Head, HeadConfig
from priors.lstm import LSTM
from priors.made import MADE
from priors.nade import NADE
from priors.ngram_lm import NGramLM
from priors.pixelcnn import PixelCNN
from priors.processors import BUILTIN_PROCESSORS
from priors.rnn import RNN
from priors.wavenet import WaveNet


def check_prior(component: Any) -> list[str]:
    """What stops `component` from being a prior tokar can train and decode (empty: nothing)."""
    problems = class_problems(component, Prior, "priors.Prior")
    if problems:
        return problems
    problems = config_problems(component, PriorConfig)
    layouts = getattr(component, "layouts", None)
    if not layouts or not set(layouts) <= {"seq", "grid"}:
        problems.append(f"{component.__name__}.layouts must be a non-empty set of 'seq' and 'grid', "
                        f"got {layouts!r}")
    return problems


def check_head(component: Any) -> list[str]:
    """What stops `component` from being an output distribution (empty: nothing)."""
    problems = class_problems(component, Head, "priors.heads.Head")
    if problems:
        return problems
    problems = config_problems(component, HeadConfig)
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


@hookimpl
def tokar_register_checks(register: Register) -> None:
    register("prior", check_prior)
    register("head", check_head)
    register("logits processor", check_processor)


@hookimpl
def tokar_register_priors(register: Register) -> None:
    register("gpt", GPT)
    register("lstm", LSTM)
    register("pixelcnn", PixelCNN)
    register("wavenet", WaveNet)
    register("fvsbn", FVSBN)
    register("nade", NADE)
    register("made", MADE)
    register("rnn", RNN)
    register("ngram_lm", NGramLM)


@hookimpl
def tokar_register_logits_processors(register: Register) -> None:
    for name, factory in BUILTIN_PROCESSORS.items():
        register(name, factory)


@hookimpl
def tokar_register_heads(register: Register) -> None:
    for name, head in BUILTIN_HEADS.items():
        register(name, head)
