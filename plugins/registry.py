"""A registry maps names used in recipes to component classes, and remembers who provided each.

Names, never import paths, are what a recipe may mention: a recipe from a stranger can only pick
among components that installed plugins chose to register.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from plugins.errors import RegistryError, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    component: Any
    provider: str  # distribution (e.g. "tokar 0.1.0") or plugin name that registered it


class Registry:
    """Name -> component for one kind ("tokenizer", "prior", "source", "head", "logits
    processor"). `check(component)` lists what is wrong with a component (plugins/checks.py);
    a component with problems is refused at registration, naming who registered it.

    Clashes: a built-in (registered with `builtin=True`, tokar's own plugins) keeps its name, so
    installing a plugin never takes `gpt` away from anyone; the plugin's registration is refused,
    naming it. Two third-party plugins under one name make it ambiguous: neither is picked."""

    def __init__(self, kind: str, check: Callable[[Any], list[str]] | None = None):
        self.kind = kind
        self.check = check
        self._entries: dict[str, Entry] = {}
        self._clashes: dict[str, list[str]] = {}  # name -> every provider that registered it
        self._builtin: set[str] = set()  # names a built-in holds: they win every clash

    def register(self, name: str, component: Any, provider: str, builtin: bool = False) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(
                f"{self.kind} name {name!r} from {provider} is not valid: use letters, digits and "
                "underscores, starting with a letter (it is written in YAML recipes)."
            )
        problems = self.check(component) if self.check is not None else []
        if problems:
            raise RegistryError(f"{self.kind} '{name}' from {provider} is not registered: "
                                + "; ".join(problems) + ".")
        if name in self._builtin and not builtin:
            raise RegistryError(self._builtin_message(name, provider))
        if builtin and name not in self._builtin and (name in self._entries or name in self._clashes):
            # a plugin got there first (hook order is pluggy's): the built-in takes its name back
            others = self._clashes.pop(name, None) or [self._entries[name].provider]
            self._entries[name] = Entry(name, component, provider)
            self._builtin.add(name)
            raise RegistryError(" ".join(self._builtin_message(name, other) for other in others))
        if name in self._entries or name in self._clashes:
            providers = self._clashes.setdefault(name, [self._entries.pop(name).provider]
                                                 if name in self._entries else [])
            providers.append(provider)
            raise RegistryError(self._clash_message(name))
        self._entries[name] = Entry(name, component, provider)
        if builtin:
            self._builtin.add(name)

    def _builtin_message(self, name: str, provider: str) -> str:
        prefix = "".join(c if c.isalnum() else "_" for c in provider.split()[0]).strip("_").lower()
        return (f"{self.kind} '{name}' from {provider} is not registered: '{name}' is a tokar "
                f"built-in ({self._entries[name].provider}), which keeps its name. Register it "
                f"under another name, e.g. '{prefix if prefix[:1].isalpha() else 'my'}_{name}'.")

    def _clash_message(self, name: str) -> str:
        providers = self._clashes[name]
        return (f"{self.kind} '{name}' is registered twice: by {' and by '.join(providers)}. "
                "Uninstall one of the plugins, or have one register under another name.")

    def get(self, name: str) -> Any:
        return self.entry(name).component

    def entry(self, name: str) -> Entry:
        if name in self._clashes:  # ambiguous: refusing is safer than picking one silently
            raise RegistryError(self._clash_message(name))
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{did_you_mean(str(name), self._entries)} "
                f"Known {self.kind}s: {known}. Run `tokar plugins` to see where each comes from."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Registries:
    tokenizers: Registry
    priors: Registry
    sources: Registry
    processors: Registry
    heads: Registry
    problems: list[str] = field(default_factory=list)  # registrations refused, names that clash
