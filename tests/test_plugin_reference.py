"""docs/plugins.md's reference agrees with the code: every public member of the base classes a
plugin implements or calls, every hook, StepOutput and example_data are listed with the parameter
names they have, properties and class attributes without parentheses, and nothing listed is
missing from the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from pipelines.data.sources import Source
from plugins import hookspecs
from priors.base import Prior, StepOutput
from priors.heads.base import Head
from tokenizers_ar.base import Tokenizer
from tokenizers_ar.testing import example_data

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
REFERENCE = GUIDE[GUIDE.index("## 9. Reference"):]
BASES = {"Tokenizer": Tokenizer, "Prior": Prior, "Head": Head, "Source": Source}
# `Name.member` or `Name.member(a, b=1, **c)` in backticks
MENTION = re.compile(r"`(Tokenizer|Prior|Head|Source)\.(\w+)(\(([^)`]*)\))?`")


def documented() -> dict[tuple[str, str], list[str | None]]:
    """(class, member) -> the parameter lists written for it (None: a mention without
    parentheses, which prose may make of a method too)."""
    out: dict[tuple[str, str], list[str | None]] = {}
    for cls, member, parens, params in MENTION.findall(REFERENCE):
        out.setdefault((cls, member), []).append(params if parens else None)
    return out


def names(params: str) -> list[str]:
    """'state, x=None, **settings' -> ['state', 'x', '**settings']."""
    out = []
    for part in filter(None, (p.strip() for p in params.split(","))):
        name = part.split("=")[0].strip()
        out.append(name if name.startswith("*") else name.lstrip("*"))
    return out


def code_names(func) -> list[str]:
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name in ("self", "cls"):
            continue
        out.append({p.VAR_KEYWORD: "**", p.VAR_POSITIONAL: "*"}.get(p.kind, "") + p.name)
    return out


def public_members(base: type) -> dict[str, object]:
    members = {name: value for name, value in vars(base).items()
               if (not name.startswith("_") or name == "__init__")
               and (inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)))}
    for name in vars(base).get("__annotations__", {}):  # class attributes: name, Config...
        members.setdefault(name, None)
    return members


@pytest.mark.parametrize("cls_name", sorted(BASES))
def test_every_member_is_in_the_reference_with_its_parameters(cls_name):
    base, docs = BASES[cls_name], documented()
    for name, value in public_members(base).items():
        assert (cls_name, name) in docs, f"docs/plugins.md's reference lacks `{cls_name}.{name}`"
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if inspect.isfunction(func):
            written = [p for p in docs[cls_name, name] if p is not None]
            assert written, f"`{cls_name}.{name}` is a method: write its parameters, " \
                            f"`{cls_name}.{name}({', '.join(code_names(func))})`"
            for params in written:
                assert names(params) == code_names(func), \
                    f"docs write `{cls_name}.{name}({params})`, the code has {code_names(func)}"
        else:  # a property or a class attribute
            assert docs[cls_name, name] == [None] * len(docs[cls_name, name]), \
                f"`{cls_name}.{name}` is not a method: write it without parentheses"


def test_everything_in_the_reference_exists():
    for cls_name, name in documented():
        base = BASES[cls_name]
        assert hasattr(base, name) or name in vars(base).get("__annotations__", {}), \
            f"docs/plugins.md mentions `{cls_name}.{name}`, which {cls_name} does not have"


def test_every_hook_is_in_the_reference_and_nothing_else():
    hooks = {name: func for name, func in vars(hookspecs).items() if name.startswith("tokar_")}
    written = dict(re.findall(r"`(tokar_register_\w+)\(([^)`]*)\)`", REFERENCE))
    assert set(written) == set(hooks), f"hooks in the code {sorted(hooks)}, in the docs {sorted(written)}"
    for name, params in written.items():
        assert names(params) == code_names(hooks[name]), f"`{name}({params})`"


def test_step_output_and_example_data_match():
    fields = re.search(r"`StepOutput\(([^)]*)\)`", REFERENCE).group(1)
    assert names(fields) == list(StepOutput._fields)
    params = re.search(r"`example_data\(([^)]*)\)`", REFERENCE).group(1)
    assert names(params) == code_names(example_data)


def test_the_checker_catches_a_wrong_parameter_name():
    assert names("state, x") == code_names(Prior.step)
    assert names("state, tokens") != code_names(Prior.step)
    assert names("config=None, **settings") == code_names(Tokenizer.__init__)
