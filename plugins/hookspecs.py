"""Hook specifications: the whole surface a plugin can implement.

A plugin is any module or object with functions marked `@hookimpl` and named after a hook below.
Each hook receives a `register(name, component)` callback; calling it adds the component to the
matching registry under `name` (a name a built-in holds stays the built-in's; a marked function
whose name is no hook below is reported by `tokar plugins`, never called). tokar's built-ins
(tokenizers_ar/plugin.py, priors/plugin.py, pipelines/plugin.py) use exactly these hooks, so a
third-party tokenizer is a first-class citizen, not a special case::

    # my_package/plugin.py, listed under [project.entry-points.tokar] in its pyproject.toml
    from plugins import hookimpl

    @hookimpl
    def tokar_register_tokenizers(register):
        register("my_tokenizer", MyTokenizer)   # a tokenizers_ar.Tokenizer subclass
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "tokar"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Any], None]


@hookspec
def tokar_register_tokenizers(register: Register) -> None:
    """Register `tokenizers_ar.Tokenizer` subclasses: `register("name", TokenizerClass)`."""


@hookspec
def tokar_register_priors(register: Register) -> None:
    """Register `priors.Prior` subclasses: `register("name", PriorClass)`."""


@hookspec
def tokar_register_sources(register: Register) -> None:
    """Register `pipelines.data.sources.Source` subclasses: `register("name", SourceClass)`."""


@hookspec
def tokar_register_heads(register: Register) -> None:
    """Register output distributions, `priors.heads.Head` subclasses: `register("name", HeadClass)`.
    Recipes then pick them as `prior: {head: {name: "name", ...settings}}`."""


@hookspec
def tokar_register_logits_processors(register: Register) -> None:
    """Register logits-processor factories: `register("name", factory)` where
    `factory(**settings)` returns a callable `(logits (B, V), context (B, t)) -> logits`.
    Recipes then use them as `sample: {processors: [{name: "name", ...settings}]}`."""


@hookspec
def tokar_register_checks(register: Register) -> None:
    """Register what a component of one kind must satisfy: `register(kind, check)` where kind is
    "tokenizer", "prior", "source", "head" or "logits processor" and `check(component)` returns
    the problems it finds (empty: fine). Each package registers the checks of its own base
    classes; every component is checked against all checks of its kind when it registers."""
