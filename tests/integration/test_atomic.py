"""Atomic whole-file writes: the old file or the new one, never a half-written one or a stray temp file."""

from __future__ import annotations

import pytest

from adapters.atomic import atomic_open


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.json"
    with atomic_open(target, "w", encoding="utf-8") as f:
        f.write("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target, "w", encoding="utf-8") as f:
            f.write("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]
    with atomic_open(target, "wb") as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass
