"""Opening user-named input files safely: regular files only, bounded size, never a device or a pipe.

A named pipe, socket or device given where a file is expected would block a reader forever or
stream without end; files under ``/proc``, ``/sys`` and ``/dev`` report sizes that mean nothing.
:func:`open_regular` opens without blocking, checks the *opened* descriptor (no swap between the
check and the read) and only then hands back an ordinary blocking file object.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileInputError", "MAX_IMAGE_BYTES", "check_regular_file", "open_regular", "inside", "special_path"]

#: Largest image file read (1 GiB): far above any photo, far below what exhausts memory or time.
MAX_IMAGE_BYTES = 1 << 30

_SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


class FileInputError(ValueError):
    """A user-named file that must not be read; the message names the file and why."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def special_path(path: str | os.PathLike[str]) -> bool:
    """True for paths that resolve into ``/proc``, ``/sys`` or ``/dev`` (pseudo-files)."""
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + os.sep) for root in _SPECIAL_ROOTS)


def _size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _check(path: Path, st: os.stat_result, max_bytes: int | None, what: str) -> int:
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        detail = f" ({kind})" if kind != "not a regular file" else ""
        raise FileInputError(f"{path}: not a regular file{detail}; expected {what}")
    if special_path(path):
        raise FileInputError(f"{path}: a system pseudo-file (/proc, /sys, /dev), not {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise FileInputError(f"{path}: {_size_text(st.st_size)}, larger than the {_size_text(max_bytes)} limit for {what}")
    return st.st_size


def check_regular_file(path: str | os.PathLike[str], *, max_bytes: int | None = None, what: str = "a file") -> int:
    """The size of ``path`` after checking it is a regular file within ``max_bytes`` (``FileInputError``)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileInputError(f"{p}: file not found") from None
    except OSError as exc:
        raise FileInputError(f"{p}: cannot access file ({exc.strerror or exc})") from None
    return _check(p, st, max_bytes, what)


def open_regular(path: str | os.PathLike[str], *, max_bytes: int | None = None, what: str = "a file") -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file within ``max_bytes``; never blocks.

    The descriptor is opened with ``O_NONBLOCK`` (a pipe without a writer would otherwise block in
    ``open``) and checked with ``fstat``; raises :class:`FileInputError` naming the file.
    """
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise FileInputError(f"{p}: file not found") from None
    except OSError as exc:
        raise FileInputError(f"{p}: cannot open file ({exc.strerror or exc})") from None
    try:
        _check(p, os.fstat(fd), max_bytes, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """True if ``path`` (symlinks resolved) lies within ``folder`` (symlinks resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
