"""Qt plumbing for background jobs: a ``QRunnable`` per job, reporting through queued signals.

Model work (loading a checkpoint, predicting) runs on a one-thread ``QThreadPool`` so jobs run in
submission order and never concurrently against the same model; the UI thread only receives
:class:`gui.jobs.JobResult` values and draws them.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import threading
import traceback
from collections.abc import Callable

from PySide6 import QtCore

from gui.jobs import Failure, JobResult


class JobSignals(QtCore.QObject):
    progress = QtCore.Signal(int, int, int)  # job id, done, total
    finished = QtCore.Signal(int, object)  # job id, JobResult


class Job(QtCore.QRunnable):
    """Runs ``fn(progress, cancelled) -> JobResult`` in a pool thread; cancel with :meth:`cancel`.

    Connect ``signals`` to methods of a QObject living in the UI thread (queued delivery).
    """

    _next_id = 0

    def __init__(self, kind: str, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], JobResult],
                 label: str = "", total: int = 1) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the window keeps a reference until ``finished`` is handled
        Job._next_id += 1
        self.id = Job._next_id
        self.kind = kind
        self.label = label
        self.total = max(1, int(total))
        self.fn = fn
        self.signals = JobSignals()
        self._cancel = threading.Event()
        self.started = threading.Event()
        self.done = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:  # worker thread
        self.started.set()
        try:
            if self._cancel.is_set():
                result = JobResult(self.kind, cancelled=True)
            else:
                result = self.fn(self._progress, self._cancel.is_set)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape a worker
            traceback.print_exc()
            result = JobResult(self.kind, error=f"{type(exc).__name__}: {exc}",
                               failures=[Failure(self.label or self.kind, f"{type(exc).__name__}: {exc}")])
        self.done.set()
        self.signals.finished.emit(self.id, result)

    def _progress(self, done: int, total: int) -> None:
        self.signals.progress.emit(self.id, int(done), int(total))


def model_pool() -> QtCore.QThreadPool:
    pool = QtCore.QThreadPool()
    pool.setMaxThreadCount(1)
    pool.setExpiryTimeout(-1)
    return pool
