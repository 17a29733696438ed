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


class CausalityError(TokarError):
    """A prior that sees the future: its prediction at a position depends on that token or a
    later one, so it is no autoregressive model (found by `tokar train`'s probe)."""


class DecodingError(TokarError):
    """Decoding settings that cannot work together (or with this prior or layout)."""


class CheckpointError(TokarError):
    """A missing, truncated or corrupt checkpoint or saved component."""


class RunDirError(TokarError):
    """A directory that is not a tokar run directory (or not one tokar may write into)."""


class RunLockedError(RunDirError):
    """A run directory that another tokar process is writing to."""


class StorageError(TokarError):
    """A file tokar could not write (or open): a full disk, missing permissions, a folder where
    a file should be."""


class ResourceError(TokarError):
    """A size (from a recipe, a file header or the command line) that would not fit in memory."""


# -- errors that are not tokar's fault: the environment, not a bug ------------------------------
def environment_error(exc: BaseException) -> TokarError | None:
    """The TokarError to show for an exception that an environment, not a bug in tokar, caused:
    a file the OS refused (OSError naming its path), memory that ran out. None for anything else,
    which is then a bug and deserves its traceback.

    Call sites translate the errors they expect where they happen, with the context they know
    (which recipe key, which run); this is the net under them, so that a path the code did not
    foresee still gets one line that names the file instead of a traceback."""
    if isinstance(exc, TokarError):
        return exc
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's, by name:
        return ResourceError(  # this module imports nothing heavy
            f"out of memory ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}"
            "); use smaller sizes (batch_size, -n, --max-new-tokens, the model's width) or a "
            "machine with more memory."
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        reason = exc.strerror or str(exc)
        return StorageError(f"{where}: {reason}.")
    if isinstance(exc, UnicodeDecodeError):
        return DataError(f"a file is not valid {exc.encoding}: byte {exc.start} cannot be decoded "
                         f"({exc.reason}); convert it to UTF-8.")
    return None


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
