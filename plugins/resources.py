"""How much memory tokar may plan to use, and the check every size is held to before allocating.

A size that comes from outside (a recipe's model width, a WAV header's sample rate, `-n` on the
command line) is compared with this machine's memory before anything is allocated: too large is
one ResourceError with the estimate, instead of minutes of swapping and an out-of-memory kill.
The figure is the smallest of physical memory and the cgroup (container) limit; set
TOKAR_MAX_MEMORY_GB to use another one (a larger figure if an estimate is wrong for your setup).

It sits in `plugins`, the lowest layer, beside the errors, so that tokenizers and pipelines check
against the same figure without importing each other.

`built_within_memory(build, what, fix)` is the check for what a saved config.json builds (a prior,
a tokenizer's network): `build()` runs first on PyTorch's meta device (shapes, no storage), its
tensors are counted, and only a build that fits runs for real. A config.json edited to ask for a
26 GB embedding is one error, not an allocation that swaps the machine to death.

Not here: the estimates themselves (pipelines/recipe/limits.py for models and decoding; the tokenizers
for what they decode).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from plugins.errors import ResourceError

logger = logging.getLogger(__name__)

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


class MetaShapes(TorchFunctionMode):
    """On the meta device, answer value questions (`bool(t)`, `t.item()`) with placeholders:
    constructors that read a tensor's values (a mask's `.all()`) still build, by shape."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__bool__, torch.Tensor.item) and args \
                and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return True if func is torch.Tensor.__bool__ else 0
        return func(*args, **kwargs)


def on_meta(build: Callable[[], Any]) -> Any:
    """build() with every tensor on the meta device (no memory), or None when it cannot be built
    there (then there is nothing to check this way)."""
    try:
        with torch.device("meta"), MetaShapes():
            return build()
    except Exception as exc:  # noqa: BLE001 - any failure only means: no estimate
        logger.debug("cannot be built on the meta device: %s", exc)
        return None


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers (0 for anything that is not a module)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def built_within_memory(build: Callable[[], Any], what: str, fix: str,
                        size: Callable[[Any], int] = module_bytes) -> Any:
    """build(), after the same build on the meta device was measured (size(result), bytes) and
    found to fit in memory; a ResourceError naming `what` otherwise."""
    meta = on_meta(build)
    if meta is not None:
        check_fits(float(size(meta)), what, fix)
    return build()


def use_threads(n: int | None, what: str = "--threads") -> None:
    """Set torch's intra-op threads to `n` (None: leave torch's default, one per core), and its
    inter-op threads too while that is still possible: torch allows that once, before any
    parallel work, and raises afterwards, so a later call keeps what it has. For shared machines,
    where torch's default takes every core."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ResourceError(f"{what} must be a whole number of at least 1, got {n!r}.")
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # inter-op pool already started: intra-op is what counts
        torch.set_num_interop_threads(n)
