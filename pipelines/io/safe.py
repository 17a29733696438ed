"""Reading and writing files so that every failure is one clear error that names the file.

Writes: `writing(path, needed)` wraps any write. A full disk (OSError ENOSPC/EDQUOT/EFBIG, a
`SafetensorError` wrapping "No space left", torch.save's "unexpected pos" / "file write failed"
RuntimeError) becomes a `StorageError` naming the path, the space needed and the space free; any
other OSError becomes one naming the path and the OS's reason (a folder where a file should be,
permissions, a read-only disk). Temporary files given to it are removed first, so a failed write
never keeps holding the space. `write_bytes_atomically` writes through a hidden temporary file
renamed into place: a reader sees the old file or the new one, never half of one.
`output_target` is the one rule for where a write lands: a regular or missing file gets the
temporary file and rename, a symlink keeps being a link (its target is replaced), a character
device or FIFO is written through (/dev/null stays /dev/null, even for root), `-` is standard
output; `write_file_atomically` does the same for libraries that want a file name.

Reads: `check_regular_file` refuses what is not a regular file before anything opens it (opening a
FIFO blocks forever; /dev/zero never ends), `read_text` adds a size bound and reports a file that
is not valid in its encoding with the byte that failed, `read_json` reports corrupt or wrongly
typed metadata, `read_image` checks an image header's size against memory before decoding it.
Each takes the error class to raise, so that the caller's meaning survives
(a corrupt `classes.json` is a RunDirError, a bad data file a DataError).

Not here: what to do after a failure (callers add their advice), directories of checkpoints
(pipelines/training/checkpoint.py publishes those, with this module's translation).
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plugins.errors import DataError, StorageError, TokarError
from plugins.resources import check_fits

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How full-disk failures read when a library wraps the OSError in its own exception type:
# safetensors (Rust io::Error kind StorageFull, "os error 28") and torch's zip writer, which
# reports only that the stream position no longer matches what it wrote.
DISK_FULL_MARKERS = ("no space left", "storagefull", "os error 28", "disk quota", "unexpected pos",
                     "file write failed")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int | None:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(e, OSError | RuntimeError) or type(e).__name__ == "SafetensorError":
            text = str(e).lower()
            if any(marker in text for marker in DISK_FULL_MARKERS):
                return True
    return False


def write_error(exc: BaseException, path: str | Path, needed: int | None = None) -> StorageError | None:
    """The StorageError for a failed write of `path`, or None when `exc` is not a storage failure
    (then it is a bug, or already a TokarError, and goes on unchanged)."""
    if isinstance(exc, TokarError):
        return None
    if is_disk_full(exc):
        free = free_bytes(path)
        need = f"about {human_bytes(needed)} needed" if needed else "more space needed"
        have = f", {human_bytes(free)} free there" if free is not None else ""
        return StorageError(f"could not write {path}: the disk is full ({need}{have}). Free some "
                            "space, then run the command again.")
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError)), None)
    if os_error is None:
        library = next((e for e in _chain(exc) if type(e).__name__ == "SafetensorError"
                        and "os error" in str(e).lower()), None)
        if library is not None:  # safetensors reports the OS's error as text only
            return StorageError(f"could not write {path}: {library}.")
        return None
    where = os_error.filename or path
    if isinstance(os_error, IsADirectoryError):
        reason = f"{where} is a folder; give a file path"
    elif isinstance(os_error, NotADirectoryError | FileExistsError):
        reason = f"{where} (or a folder above it) is an existing file where a folder is needed"
    elif isinstance(os_error, PermissionError):
        reason = f"permission denied on {where}"
    elif os_error.errno == errno.EROFS:
        reason = f"{where} is on a read-only file system"
    else:
        reason = f"{os_error.strerror or os_error} ({where})"
    return StorageError(f"could not write {path}: {reason}.")


@contextlib.contextmanager
def writing(path: str | Path, needed: int | None = None, cleanup: tuple[Path, ...] = ()) -> Iterator[None]:
    """Run a write of `path`: on failure remove `cleanup` (temporary files and folders) and raise
    a StorageError for storage failures (disk full, permissions...); other errors pass unchanged."""
    try:
        yield
    except BaseException as exc:
        for tmp in cleanup:
            remove_quietly(tmp)
        error = write_error(exc, path, needed)
        if error is None:
            raise
        raise error from exc


def remove_quietly(path: Path) -> None:
    """Remove a file or folder tree if it is there; never raises (it runs on error paths)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def ensure_folder(path: str | Path) -> Path:
    """`path` as a folder to write into: created if missing, an error if a file is in the way."""
    path = Path(path)
    with writing(path):
        if path.exists() and not path.is_dir():
            raise StorageError(f"could not write into {path}: it is an existing file, and a folder "
                               "is needed here; give a folder path (or a file name with its "
                               "extension, where one file is written).")
        path.mkdir(parents=True, exist_ok=True)
    return path


# -- reads -----------------------------------------------------------------------------------------
def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def check_regular_file(path: str | Path, what: str = "file",
                       error: type[TokarError] = DataError) -> Path:
    """`path` if it is a regular file (symlinks followed); else `error` saying what it is. Done
    with stat, before any open: opening a FIFO waits forever for a writer."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}.") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = file_kind(st.st_mode)
        raise error(f"{what} {path} is a {kind}, not a regular file; tokar reads only regular files.")
    return path


def read_bytes(path: str | Path, what: str = "file", error: type[TokarError] = DataError,
               max_bytes: int | None = None) -> bytes:
    path = check_regular_file(path, what, error)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise error(f"{what} {path} is {human_bytes(size)}, more than the {human_bytes(max_bytes)} "
                        f"a {what} may be; is it the right file?")
        return path.read_bytes()
    except TokarError:
        raise
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}.") from exc


def decode_text(data: bytes, path: str | Path, what: str = "file", error: type[TokarError] = DataError,
                encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        kind = "binary" if b"\0" in data[:8192] else f"not valid {encoding}"
        raise error(f"{what} {path} is {kind}: byte {exc.start} (0x{data[exc.start]:02x}) cannot be "
                    f"decoded as {encoding}; give a {encoding} text file"
                    f"{'' if encoding != 'utf-8' else ' (or convert it: iconv -t utf-8)'}.") from exc
    except LookupError as exc:
        raise error(f"unknown text encoding {encoding!r} for {path}.") from exc


def read_text(path: str | Path, what: str = "file", error: type[TokarError] = DataError,
              encoding: str = "utf-8", max_bytes: int | None = None) -> str:
    """The text of a regular file, every failure an `error` naming the file."""
    return decode_text(read_bytes(path, what, error, max_bytes), path, what, error, encoding)


def read_json(path: str | Path, what: str = "file", error: type[TokarError] = DataError,
              expect: type | tuple[type, ...] = dict, max_bytes: int | None = 64 << 20) -> Any:
    """Parsed JSON of `path`, which must be of type `expect` (an object, by default)."""
    text = read_text(path, what, error, max_bytes=max_bytes)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise error(f"{what} {path} is corrupt: not valid JSON ({exc}).") from exc
    if not isinstance(value, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"{what} {path} is corrupt: expected a JSON {names}, found {type(value).__name__}.")
    return value


def read_image(path: str | Path) -> Any:
    """One image file, decoded: its header's size is checked against memory before decoding."""

    from PIL import Image


    path = check_regular_file(path, "image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                check_fits(float(w) * h * max(len(im.getbands()), 1) * 8,
                           f"image file {path} ({w}x{h} pixels, as its header says)",
                           "give images of the size the run was trained on.")
                im.load()
                image = im.copy()
                image.filename = str(path)  # so a tokenizer's error can name the file
                return image
    except TokarError:  # the memory check's ResourceError
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"image file {path} cannot be read: {exc}.") from exc
