"""A registry maps names used in recipes to component classes, and remembers who provided each.

Names, never import paths, are what a recipe may mention: a recipe from a stranger can only pick
among components that installed plugins chose to register.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plugins.errors import RegistryError, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    component: Any
    provider: str  # distribution (e.g. "tokar 0.1.0") or plugin name that registered it


class Registry:
    """Name -> component for one kind ("tokenizer", "prior", "source")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, component: Any, provider: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(
                f"{self.kind} name {name!r} from {provider} is not valid: use letters, digits and "
                "underscores, starting with a letter (it is written in YAML recipes)."
            )
        if name in self._entries:
            first = self._entries[name].provider
            raise RegistryError(
                f"{self.kind} '{name}' is registered twice: by {first} and by {provider}. "
                "Uninstall one of the two plugins, or have one register under another name."
            )
        self._entries[name] = Entry(name, component, provider)

    def get(self, name: str) -> Any:
        return self.entry(name).component

    def entry(self, name: str) -> Entry:
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
