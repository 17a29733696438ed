"""One writer per run directory: an exclusive lock held while a process trains or resumes a run.

`RUN_DIR/.tokar.lock` is locked with flock (through `filelock`), without waiting: a second
`tokar train` / `--resume` on the same directory fails at once with one line naming the holder's
PID, instead of both writing checkpoints over each other. The kernel drops the lock when its
process ends, however it ends (SIGKILL included), so a crash never leaves a stale lock behind.

While held, the lock file holds the holder's PID, host, start time and command line (what the
second writer reports); on release it is emptied again, so a resume that fails leaves the run's
files exactly as they were.

`lock_run_dir` takes the lock. Inside a function decorated with `@releases_run_locks`
(Pipeline.train, Pipeline.resume) it is released when that function returns or raises; outside
one it is held until the process exits. Under `torchrun`/`accelerate launch` only the main
process takes it (it is the only one that writes the run's files).

Not here: whether a directory may be written at all (pipelines/runs/rundir.py decides, before locking),
waiting for a lock (queueing two trainings of one run is never what was meant).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from pipelines.io.safe import write_error
from plugins.errors import RunLockedError, StorageError

LOCK_FILE = ".tokar.lock"

_local = threading.local()
_process_locks: list[RunLock] = []  # taken outside any scope: held until the process exits
F = TypeVar("F", bound=Callable[..., Any])


class RunLock:
    """The exclusive lock of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._lock = FileLock(str(self.path), timeout=0)

    @property
    def is_locked(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> RunLock:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunLockedError(f"{self.run_dir} is in use: {describe_holder(self.path)} is "
                                 "writing to it. Wait for it to finish (or stop it), then try "
                                 "again; two processes must never write one run.") from None
        except OSError as exc:
            error = write_error(exc, self.path) or StorageError(f"could not lock {self.path}: {exc}.")
            raise error from exc
        try:
            with open(self.path, "r+") as f:  # the holder's identity, for the next contender
                f.write(json.dumps(_identity()))
        except OSError:
            pass  # the lock still holds; a contender then reports the holder without a PID
        return self

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        try:
            with open(self.path, "r+") as f:  # empty again: a released run is byte-identical
                f.truncate(0)
        except OSError:
            pass
        self._lock.release(force=True)


def _identity() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}


def describe_holder(path: Path) -> str:
    """'another tokar process (PID 123, since ...)' from the lock file, as well as it can."""
    try:
        owner = json.loads(path.read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"another process (it holds {path})"
    host = owner.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    since = f", since {owner['since']}" if owner.get("since") else ""
    command = f": {owner['command']}" if owner.get("command") else ""
    return f"another tokar process (PID {pid}{where}{since}{command})"


def lock_run_dir(run_dir: str | Path) -> RunLock:
    """Lock `run_dir` for this process (see the module docstring for how long)."""
    lock = RunLock(run_dir).acquire()
    scopes = getattr(_local, "scopes", None)
    (scopes[-1] if scopes else _process_locks).append(lock)
    return lock


def releases_run_locks(fn: F) -> F:
    """Run locks taken inside `fn` are released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scopes = _local.__dict__.setdefault("scopes", [])
        scopes.append([])
        try:
            return fn(*args, **kwargs)
        finally:
            for lock in reversed(scopes.pop()):
                lock.release()

    return wrapper  # type: ignore[return-value]
