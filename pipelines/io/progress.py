"""Progress bars that suit where they are shown: a live tqdm bar on a terminal, and, when stderr is
a file or a pipe (CI logs, `nohup`, `make demo > log`), one plain line every
`TOKAR_PROGRESS_INTERVAL` seconds (default 30) instead of dozens of `\\r` redraws a second.

`quiet_library_bars()` does the same for the bars of libraries tokar drives (Hugging Face
`datasets`' map): off when stderr is not a terminal.

Not here: what a bar shows (its caller's business), logging (the CLI configures it).
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

DEFAULT_INTERVAL = 30.0  # seconds between two progress lines in a log file


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("TOKAR_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class _Lines:
    """A file-like that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """The log-file bar: a line only when its interval has passed. tqdm redraws on every
    set_postfix / set_description; in a log file that was a line every few steps."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def progress_bar(**kwargs: Any) -> tqdm:
    """tqdm(**kwargs) on a terminal; elsewhere a bar that prints a plain line every interval()
    (and when it starts and ends), whatever its caller updates in between."""
    if is_terminal():
        return tqdm(**kwargs)
    kwargs.pop("dynamic_ncols", None)
    # miniters=1 with mininterval: each update checks the clock, and prints once the interval passed
    return _LogBar(**{**kwargs, "file": _Lines(sys.stderr), "mininterval": interval(),
                      "maxinterval": max(interval(), 10.0), "miniters": 1, "ascii": True,
                      "ncols": 100})


def budget_total(first_step: int, step: int, elapsed: float, max_steps: int,
                 max_seconds: float | None) -> int:
    """The step a training will end at: max_steps, or sooner, where its time budget (seconds
    from `first_step`, at the pace so far) runs out first. What a bar's total and ETA should say."""
    if max_seconds is None or step <= first_step or elapsed <= 0:
        return max_steps
    pace = (step - first_step) / elapsed  # steps per second, this session
    return max(step, min(max_steps, first_step + int(pace * max_seconds)))


def quiet_library_bars() -> None:
    """No `datasets` progress bars when stderr is not a terminal (their redraws flood log files)."""
    if is_terminal():
        return
    try:
        import datasets

        datasets.disable_progress_bars()
    except (ImportError, AttributeError):
        pass
