"""Label placement in screen pixels (pure Python, no Qt): labels never overlap the markers, each other,
or the edge of the view.

Each label tries positions around its marker (right, left, above, below; then further out) and takes
the first that stays inside the view and clear of every marker and every label already placed.
Labels are placed in order (mode 1 first); one that finds no room is left out (the side panel still
lists it).
"""

from __future__ import annotations

from collections.abc import Sequence

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 (y grows downwards)


def intersects(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(a: Rect, bounds: Rect) -> bool:
    return a[0] >= bounds[0] and a[1] >= bounds[1] and a[2] <= bounds[2] and a[3] <= bounds[3]


def marker_rect(x: float, y: float, radius: float, pad: float = 2.0) -> Rect:
    r = radius + pad
    return (x - r, y - r, x + r, y + r)


def _candidates(x: float, y: float, w: float, h: float, r: float, gap: float) -> list[Rect]:
    out = []
    for k in (1.0, 2.0, 3.5):
        d = r + gap * k
        for cx, cy in ((x + d, y - d - h), (x + d, y + d), (x - d - w, y - d - h), (x - d - w, y + d),
                       (x + d, y - h / 2), (x - d - w, y - h / 2), (x - w / 2, y - d - h), (x - w / 2, y + d)):
            out.append((cx, cy, cx + w, cy + h))
    return out


def place_labels(
    labels: Sequence[tuple[float, float, float, float, float]],
    obstacles: Sequence[Rect],
    bounds: Rect,
    gap: float = 4.0,
) -> list[Rect | None]:
    """``labels``: (x, y, width, height, marker radius) per label, in priority order; ``obstacles``: rectangles
    labels must not cover (every marker). Returns each label's rectangle, or None where none fits."""
    placed: list[Rect] = []
    out: list[Rect | None] = []
    for x, y, w, h, r in labels:
        choice = None
        for rect in _candidates(x, y, w, h, r, gap):
            if not inside(rect, bounds):
                continue
            if any(intersects(rect, o) for o in obstacles) or any(intersects(rect, p) for p in placed):
                continue
            choice = rect
            break
        out.append(choice)
        if choice is not None:
            placed.append(choice)
    return out
