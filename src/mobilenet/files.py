"""Atomic files: write a temporary file beside the target, flush, fsync, rename.

A reader (or a run resumed after `kill -9`) sees the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import MobileNetError, first_line, printable

PRODUCER = "mobilenet"  # our mark in the files we write (run/ownership.py reads it)
TEMP_PREFIX = ".mobilenet-"  # temporary files: no file of the user's (".config.json.backup.tmp") has our shape
JSON_LIMIT = 8 << 20  # config.json, sidecars: a thousand class names fill about 40 kB
FILE_LIMIT = 1 << 30  # an exported model (.onnx, .pte, .tflite); MobileNet V1 at α = 1 with 1,000 classes takes 17 MB


def make_dir(path, option: str = "--out") -> Path:
    """mkdir -p, with one clear line (naming the option that gave the path) if it fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MobileNetError(f"{option} {path}: cannot create the folder ({e.strerror})") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MobileNetError(f"cannot write {path}: {e.strerror}; choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise MobileNetError(f"cannot write {path}: {e.strerror}; the previous file, if any, is intact") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def remove_unfinished(folder, names) -> int:
    """Delete the temporary files that a killed writer left beside `names` in `folder`;
    the caller must be the folder's only writer of those names. Returns how many."""
    removed = 0
    for name in names:
        for tmp in Path(folder).glob(f"{TEMP_PREFIX}{name}.????????.tmp"):  # mkstemp's 8 random characters
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class NotRegular(ValueError):
    """A path that names a FIFO, a device or a folder where a file was expected."""


def open_regular(path):
    """`path` opened for reading if it is a regular file: a FIFO would block a read forever
    and a device never ends. O_NONBLOCK keeps the open itself from waiting on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def read_regular(path, limit: int, what: str) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; one clear line
    otherwise. Nothing past the limit is read. FileNotFoundError passes through, for the
    caller to say what the file should have been."""
    with _opened(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MobileNetError(f"{what} {printable(path)}: larger than the {limit:,} bytes such a file can hold "
                             "here; give the file this toolkit wrote")
    return data


def check_readable(path, what: str) -> None:
    """read_regular's checks, without the read."""
    _opened(path, what).close()


def _opened(path, what: str):
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise
    except NotRegular:
        raise MobileNetError(f"{what} {printable(path)}: not a regular file (a FIFO, a device or a folder); "
                             "give the file itself") from None
    except OSError as e:
        raise MobileNetError(f"{what} {printable(path)}: cannot read it ({e.strerror})") from None


def open_append(path, what: str = "--out"):
    """`path` opened for appending text, never through a symbolic link (O_NOFOLLOW): a
    link planted in a shared folder cannot make us write into a file it points at."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise MobileNetError(_refusal(path, e, what)) from None
    return os.fdopen(fd, "a", encoding="utf-8")


def open_lock_file(path, what: str = "--out") -> int:
    """A lock file's descriptor, opened (and made) without following a link."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise MobileNetError(_refusal(Path(path), e, what)) from None


def _refusal(path: Path, e: OSError, what: str) -> str:
    if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
        return (f"{what} {path.parent}: {path.name} is a symbolic link; a run folder's files must be its own "
                "(remove the link, or choose another folder)")
    return f"{what} {path.parent}: cannot write {path.name} ({e.strerror}); choose a writable folder"


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def figure_bytes(figure, tight: bool = True, fmt: str = "png") -> bytes:
    """The figure as a file's bytes, marked as ours. `tight`: cropped to what it draws (a
    second layout pass, for labels of unknown length); else the figure's own margins."""
    buf = io.BytesIO()
    figure.savefig(buf, format=fmt, dpi=110, bbox_inches="tight" if tight else None, metadata={"Software": PRODUCER})
    return buf.getvalue()


def atomic_savefig(path, figure) -> None:
    atomic_write_bytes(path, figure_bytes(figure, fmt=Path(path).suffix.lstrip(".") or "png"))


def load_json_object(path, what: str, fix: str) -> dict:
    """The JSON object in `path`, read to JSON_LIMIT: the one reader of the JSON files this
    toolkit writes. One clear line naming the file and `fix` (what to do) if it is not one;
    FileNotFoundError passes through, for the caller to say what the file should have been."""
    try:
        found = json.loads(read_regular(path, JSON_LIMIT, what))
    except (FileNotFoundError, MobileNetError):
        raise
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise MobileNetError(f"{printable(path)} is not readable JSON ({first_line(e)}); {fix}") from None
    if not isinstance(found, dict):
        raise MobileNetError(f"{printable(path)} is not a JSON object; {fix}")
    return found


def read_json_object(path, what: str = "--model") -> dict:
    """load_json_object's, or {} when the file is missing or not a readable object: for
    records whose absence only leaves a line out."""
    try:
        return load_json_object(path, what, "")
    except (OSError, MobileNetError):
        return {}
