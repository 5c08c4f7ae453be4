"""One trainer per run folder: an exclusive, non-blocking ``flock`` on ``<run folder>/.lock``.

The kernel drops the lock when its process ends, however it ends (``kill -9`` included), so a lock
is never stale; the file itself only records who held it last (pid and host) for the message.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunBusyError(ValueError):
    """Another process is training this run."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block; ``RunBusyError`` at once if another process holds it."""
    folder = Path(run_dir)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; single trainer assumed
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunBusyError(f"{folder}: cannot create the run's lock file {path} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunBusyError(
                f"{folder}: this run is being trained by {holder}; wait for it to finish (or stop it) before resuming"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
