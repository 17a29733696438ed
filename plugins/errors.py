"""Every error tokar raises on purpose, in one place.

Each message says what was given, what was expected and how to fix it. The module sits in
`plugins`, the lowest layer, so that tokenizers, priors and pipelines can all raise these without
importing each other. `assert` is kept for internal invariants only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokarError(Exception):
    """Base class: catch this to handle any error tokar raises deliberately."""


class RegistryError(TokarError):
    """An unknown or duplicate component name."""


class RecipeError(TokarError):
    """A recipe that cannot be used. `problems` lists every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} {noun}{where}:\n{lines}")


class DataError(TokarError):
    """Missing, empty or unreadable data."""


class TokenizerError(TokarError):
    """Input a tokenizer cannot encode, or ids it cannot decode."""


class LayoutError(TokarError):
    """A tokenizer layout that the chosen prior cannot model."""


class DecodingError(TokarError):
    """Decoding settings that cannot work together (or with this prior or layout)."""


class CheckpointError(TokarError):
    """A missing, truncated or corrupt checkpoint or saved component."""


class RunDirError(TokarError):
    """A directory that is not a tokar run directory."""


class CompressionError(TokarError):
    """Data that cannot be compressed losslessly, or a compressed file that cannot be decoded
    (damaged, from another model, from a newer format version)."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest spelling of `name` among `choices`, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' when a choice is close to `name`, else ''."""
    match = closest(name, choices)
    return f" Did you mean '{match}'?" if match else ""
