"""A progress bar that shows nothing (the ports ``ProgressBar`` / ``ProgressFactory`` live in :mod:`locdiff.ports`)."""

from __future__ import annotations

from typing import Any

from locdiff.ports import ProgressBar, ProgressFactory

__all__ = ["NullProgress", "ProgressBar", "ProgressFactory"]


class NullProgress:
    """A progress bar that shows nothing."""

    def __init__(self, *, total: int = 0, desc: str = "", initial: int = 0) -> None:
        self.n = initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
