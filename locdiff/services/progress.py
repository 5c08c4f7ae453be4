"""Progress reporting as a port: entry points pass ``tqdm`` (or a Qt signal adapter); the core never prints."""

from __future__ import annotations

from typing import Any, Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...


class ProgressFactory(Protocol):
    def __call__(self, *, total: int, desc: str, initial: int = 0) -> ProgressBar: ...


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
