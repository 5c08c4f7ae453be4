"""Peak host memory while a block runs (the degree study's ``MemoryProbe``): Linux /proc sampling, else ru_maxrss."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so an RSS baseline means something."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssProbe:
    """Peak growth of this process's resident set while the block runs (sampled every 50 ms; Linux /proc, else ru_maxrss)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_bytes = float("nan")

    @staticmethod
    def _rss() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> "RssProbe":
        _release_free_memory()
        self._start = self._rss()
        self._peak = self._start or 0.0
        self._stop = threading.Event()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            import resource

            self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self._rss()
            if rss is not None:
                self._peak = max(self._peak, rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._start is not None:
            self._thread.join()
            self.peak_bytes = float(max(self._peak, self._rss() or 0) - self._start)
        else:
            import resource

            self.peak_bytes = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._maxrss0)
