"""Writing files and folders atomically: a reader sees the old version or the new one, never half
of one, and a failure (a full disk included) is one StorageError naming the path.

Files: `output_target` is the one rule for where a write lands: a regular or missing file gets a
hidden temporary file renamed into place, a symlink keeps being a link (its target is replaced),
a character device or FIFO is written through (/dev/null stays /dev/null, even for root), `-` is
standard output. `write_bytes_atomically`, `write_text_atomically`, `write_json_atomically` (NaN
and infinities become null: JSON has none) and `write_file_atomically` (for libraries that want a
file name: matplotlib, soundfile, PIL) follow it.

Folders: `write_atomically(final, write)` calls write(tmp_dir) and moves the folder into place in
one rename after flushing it (`publish`): checkpoints, saved tokenizers and priors, codecs.
`remove_atomically` renames a folder aside before deleting it. Temporary names carry a
`writer_id` (PID and randomness, shared by the processes of one launch), so two writers never
collide.

Not here: reading (pipelines/io/safe.py, which also turns OS errors into StorageErrors:
`writing`), what a checkpoint holds (pipelines/training/checkpoint.py).
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.utils import broadcast_object_list
from torch import nn

from pipelines.io.safe import file_kind, remove_quietly, write_error, writing
from plugins.errors import StorageError

STDOUT = "-"  # `--out -`: standard output


def is_stdout(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDOUT


def is_stream(path: str | Path) -> bool:
    """`-`, a character device or a FIFO (symlinks followed): outputs that take one stream of
    bytes, never a folder of files."""
    if is_stdout(path):
        return True
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def output_target(path: str | Path) -> tuple[str, Path]:
    """Where a write of `path` lands, and how: ("stdout", path) for `-`; ("through", path) for a
    character device or FIFO (/dev/null, a pipe a reader waits on: opened and written, never
    replaced by a regular file); ("atomic", target) for a regular file or a missing one, where
    `target` is the path a symlink resolves to (the link stays a link; its target is replaced).
    The one rule every writer of tokar follows; anything else (a folder, a block device, a
    socket, a symlink loop) is a StorageError naming `path`."""
    if is_stdout(path):
        return "stdout", Path(path)
    path = Path(path)
    target = path
    if path.is_symlink():
        try:
            target = path.resolve(strict=False)
        except (RuntimeError, OSError) as exc:  # a loop of links
            raise StorageError(f"could not write {path}: it is a symlink that never reaches a file "
                               f"(a loop?); remove it or name another output ({exc}).") from exc
    try:
        st = target.stat()
    except FileNotFoundError:
        return "atomic", target
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"could not write {path}: it is a symlink that never reaches a "
                               "file (a loop); remove it or name another output.") from exc
        raise write_error(exc, path) or exc from exc
    if stat.S_ISREG(st.st_mode):
        return "atomic", target
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return "through", target
    if stat.S_ISDIR(st.st_mode):
        raise StorageError(f"could not write {path}: it is a folder; give a file path.")
    raise StorageError(f"could not write {path}: it is a {file_kind(st.st_mode)}; tokar writes "
                       "regular files, character devices (/dev/null) and named pipes only.")


def _write_through(target: Path, data: bytes, shown: Path) -> None:
    # a device or FIFO: opened and written, no truncation, no rename
    with writing(shown, len(data)), open(target, "wb", buffering=0) as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` following output_target(): to standard output for `-`, straight
    through to a device or FIFO, else to a hidden temporary file beside the (symlink-resolved)
    target, renamed into place."""
    kind, target = output_target(path)
    if kind == "stdout":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return target
    if kind == "through":
        _write_through(target, data, Path(path))
        return Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    with writing(path, len(data), cleanup=(tmp,)):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        os.replace(tmp, target)
    return Path(path)


def write_file_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp_path) (a library that wants a file name: matplotlib, soundfile, PIL), then
    put the result where output_target() says: renamed into place for a regular file (a
    symlink's target), copied through to a device or FIFO, to standard output for `-`. A failure
    (a full disk included) removes the temporary file and is one StorageError naming `path`."""
    kind, target = output_target(path)
    if kind != "atomic":  # render into a private temporary folder, then pass the bytes on
        with tempfile.TemporaryDirectory(prefix="tokar-out-") as folder:
            tmp = Path(folder) / f"out{Path(path).suffix}"
            with writing(path):
                write(tmp)
            return write_bytes_atomically(path, tmp.read_bytes())
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    with writing(path, cleanup=(tmp,)):
        write(tmp)
        os.replace(tmp, target)
    remove_quietly(tmp)
    return Path(path)


def remove_atomically(path: Path) -> None:
    if path.exists():
        old = path.with_name(f".old-{path.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None: JSON has no NaN, and a reader's json
    module would reject the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json_atomically(path: Path, payload: Any) -> None:
    write_text_atomically(path, json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")


def fsync_tree(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Flush `tmp` to disk and move it to `final` in one rename (replacing an older `final`)."""
    fsync_tree(tmp)
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_atomically(final: Path, write: Any) -> Path:
    """Call write(tmp_dir), then move tmp_dir to `final` in one rename. A failure removes tmp_dir;
    a full disk is reported naming `final` and the space needed."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}-{writer_id()}"
    with writing(final, saved_bytes(getattr(write, "__self__", None)), cleanup=(tmp,)):
        tmp.mkdir(parents=True)
        write(tmp)
        publish(tmp, final)
    return final


def saved_bytes(obj: Any) -> int | None:
    """What saving `obj` will about take on disk (a module's tensors, a tokenizer's), if known."""
    tensors = obj.state_dict().values() if isinstance(obj, nn.Module) else \
        obj.tensors().values() if hasattr(obj, "tensors") else None
    return sum(t.numel() * t.element_size() for t in tensors) if tensors is not None else None


def writer_id(accelerator: Any = None) -> str:
    """A token unique to this writer (PID and randomness), the same on every process of a launch:
    names of temporary folders never collide between two writers."""
    token = f"{os.getpid()}-{secrets.token_hex(3)}"
    if accelerator is not None and accelerator.num_processes > 1:
        token = broadcast_object_list([token])[0]
    return token
