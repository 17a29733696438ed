"""How much memory tokar may plan to use, and the check every size is held to before allocating.

A size that comes from outside (a recipe's model width, a WAV header's sample rate, `-n` on the
command line) is compared with this machine's memory before anything is allocated: too large is
one ResourceError with the estimate, instead of minutes of swapping and an out-of-memory kill.
The figure is the smallest of physical memory and the cgroup (container) limit; set
TOKAR_MAX_MEMORY_GB to use another one (a larger figure if an estimate is wrong for your setup).

It sits in `plugins`, the lowest layer, beside the errors, so that tokenizers and pipelines check
against the same figure without importing each other.

Not here: the estimates themselves (pipelines/recipe/limits.py for models and decoding; the tokenizers
for what they decode).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from plugins.errors import ResourceError

ENV = "TOKAR_MAX_MEMORY_GB"
GiB = 1 << 30


def machine_memory() -> int:
    """Bytes of memory tokar may plan for: $TOKAR_MAX_MEMORY_GB, else min(physical, cgroup)."""
    override = os.environ.get(ENV)
    if override:
        try:
            return int(float(override) * GiB)
        except ValueError:
            raise ResourceError(f"{ENV}={override!r} is not a number of gigabytes.") from None
    sizes = []
    with contextlib.suppress(ValueError, OSError, AttributeError):  # not POSIX
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for limit_file in (Path("/sys/fs/cgroup/memory.max"),
                       Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):  # "max" or a huge number: no limit
            sizes.append(int(text))
    return min(sizes) if sizes else 1 << 62


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


def check_fits(needed: float, what: str, fix: str, limit: float | None = None,
               error: type[ResourceError] = ResourceError) -> None:
    """Raise when `needed` bytes exceed `limit` (default: machine_memory())."""
    limit = machine_memory() if limit is None else limit
    if needed > limit:
        raise error(f"{what} needs an estimated {gib(needed)}, more than the {gib(limit)} of memory "
                    f"available ({'set by ' + ENV if os.environ.get(ENV) else 'this machine'}); {fix}")
