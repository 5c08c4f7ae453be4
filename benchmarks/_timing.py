"""Timing helpers shared by the benchmark scripts: machine status, one timed call, best of several."""

from __future__ import annotations

import gc
import math
import os
import time

import torch


def status() -> str:
    """Threads and load average at the time of a measurement (printed beside every figure)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"threads={torch.get_num_threads()} load=({load})"


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of all threads, result) of one call, after a garbage collection."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def best_time(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU time over ``repeats`` calls, and the last result."""
    wall, cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        w, c, out = timed(fn)
        wall, cpu = min(wall, w), min(cpu, c)
    return wall, cpu, out
