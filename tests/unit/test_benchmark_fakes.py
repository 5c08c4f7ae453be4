"""The benchmarks' stand-in ports keep up with the ports they stand in for.

``benchmarks/bench_training.py`` trains through the real use case with a checkpoint store that writes
nothing; when the :class:`locdiff.ports.CheckpointStore` port gained ``clean`` (#13) the stand-in did
not, and the benchmark died at its first row without any test noticing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from locdiff.ports import CheckpointStore

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_training_benchmark_checkpoint_store_is_a_checkpoint_store(tmp_path):
    fake = _load("bench_training")._DiscardCheckpoints()
    assert isinstance(fake, CheckpointStore)  # every method of the port (runtime_checkable: by name)
    assert fake.latest(tmp_path) is None and fake.clean(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # it writes nothing
