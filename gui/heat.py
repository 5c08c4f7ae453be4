"""Colouring of a density grid: the colour map, the alpha ramp and the RGBA heat texture (no Qt).

The globe's heat layer, the flat map's colour bar and the PNG export all use the same lookup
table so that they agree. Low densities fade to transparent so the Earth stays visible.
"""

from __future__ import annotations

import numpy as np

# matplotlib's "inferno", sampled at 17 evenly spaced points (black -> purple -> orange -> pale yellow).
_INFERNO = np.array(
    [
        (0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
        (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49),
        (241, 115, 29), (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105),
        (252, 255, 164),
    ],
    dtype=np.float64,
)

#: Part of inferno used: the near-black start is invisible on the dark ocean, so begin at purple.
CMAP_START = 0.22
ALPHA_MAX = 0.6  # towns, coastlines and borders stay visible through the strongest heat
#: Relative value (0..1 of the colour scale) above which the heat is fully opaque (ALPHA_MAX).
ALPHA_KNEE = 0.30
LOG_DECADES = 3.0
#: The colour scales (one source: ``heat_rgba`` and the app's Display box) and the labels the app shows.
SCALE_LABELS = {"sqrt": "square root", "linear": "linear", "log": f"log ({LOG_DECADES:g} decades)"}
SCALES = tuple(SCALE_LABELS)


def colors(n: int = 256) -> np.ndarray:
    """RGB ``[n, 3]`` float in 0..255 of the heat colour map (low to high)."""
    x = np.linspace(CMAP_START, 1.0, n) * (len(_INFERNO) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(_INFERNO) - 2)
    f = (x - i)[:, None]
    return _INFERNO[i] * (1 - f) + _INFERNO[i + 1] * f


def alphas(n: int = 256) -> np.ndarray:
    """Opacity ``[n]`` in 0..1 along the colour scale: a smooth ramp up to ``ALPHA_KNEE``."""
    t = np.linspace(0.0, 1.0, n)
    r = np.clip(t / ALPHA_KNEE, 0.0, 1.0)
    return ALPHA_MAX * r * r * (3 - 2 * r)  # smoothstep


def lut(n: int = 256) -> np.ndarray:
    """RGBA lookup table ``[n, 4]`` uint8 (straight, not premultiplied, alpha)."""
    out = np.empty((n, 4), np.uint8)
    out[:, :3] = np.round(colors(n)).astype(np.uint8)
    out[:, 3] = np.round(alphas(n) * 255).astype(np.uint8)
    return out


_LUT = lut(256)


def scale_values(density: np.ndarray, scale: str = "linear") -> tuple[np.ndarray, float, float]:
    """Values shown for ``density`` on a given scale, and their (low, high) display levels.

    ``linear``: the density itself, levels (0, max). ``sqrt``: its square root, levels (0, sqrt max)
    (secondary modes stay visible). ``log``: log10 of the density, levels
    (log10 max - LOG_DECADES, log10 max).
    """
    d = np.asarray(density, dtype=np.float32)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    vmax = float(np.nanmax(d)) if d.size else 0.0
    if not np.isfinite(vmax) or vmax <= 0:
        vmax = 1.0
    if scale == "linear":
        return d, 0.0, vmax
    if scale == "sqrt":
        return np.sqrt(np.maximum(d, 0.0)), 0.0, float(np.sqrt(vmax))
    floor = vmax * 10.0 ** (-LOG_DECADES)
    with np.errstate(divide="ignore"):
        v = np.log10(np.maximum(d, floor * 1e-3)).astype(np.float32)
    hi = float(np.log10(vmax))
    return v, hi - LOG_DECADES, hi


def heat_rgba(density: np.ndarray, scale: str = "linear", out: np.ndarray | None = None) -> np.ndarray:
    """RGBA ``[n_lat, n_lon, 4]`` uint8 of a density grid (row 0 = north), transparent where low."""
    v, lo, hi = scale_values(density, scale)
    span = hi - lo if hi > lo else 1.0
    idx = (v - lo) * (255.0 / span)
    np.clip(idx, 0, 255, out=idx)
    idx = idx.astype(np.intp)
    if out is None:
        return _LUT[idx]
    np.take(_LUT, idx, axis=0, out=out)
    return out


def composite(base_rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Alpha-blend a heat RGBA grid (any resolution) over an RGB image; nearest-neighbour upsampling."""
    h, w = base_rgb.shape[:2]
    rows = (np.arange(h) * heat.shape[0] // h).clip(0, heat.shape[0] - 1)
    cols = (np.arange(w) * heat.shape[1] // w).clip(0, heat.shape[1] - 1)
    up = heat[rows][:, cols].astype(np.float32)
    a = up[..., 3:4] / 255.0
    out = base_rgb.astype(np.float32) * (1 - a) + up[..., :3] * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def format_value(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 0.01:
        return f"{v:.2g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _nice(x: float) -> float:
    """Round ``x`` > 0 to 1, 2 or 5 times a power of ten (downwards)."""
    if x <= 0 or not np.isfinite(x):
        return 0.0
    e = np.floor(np.log10(x))
    f = x / 10**e
    return float((5 if f >= 5 else 2 if f >= 2 else 1) * 10**e)


def ticks(density_max: float, scale: str = "linear", n: int = 4) -> list[tuple[float, str]]:
    """Colour-bar ticks as (position in the scale's display units, label in density units)."""
    vmax = density_max if density_max > 0 and np.isfinite(density_max) else 1.0
    out: list[tuple[float, str]] = []
    if scale == "log":
        hi = np.log10(vmax)
        for k in range(int(np.ceil(hi - LOG_DECADES)), int(np.floor(hi)) + 1):
            out.append((float(k), format_value(10.0**k)))
        return out
    step = _nice(vmax / n)
    while step > 0 and vmax / step > n:  # next of 1, 2, 5 x 10^k until at most n steps
        f = step / 10 ** np.floor(np.log10(step))
        step *= 2.5 if round(f) == 2 else 2.0
    if scale == "sqrt":
        values = sorted({0.0, *(_nice(vmax * f * f) for f in (0.36, 0.7, 1.0))})
        values = [v for v in values if v <= vmax]
        return [(float(np.sqrt(v)), format_value(v)) for v in values]
    values = np.arange(0.0, vmax + 1e-12, step) if step > 0 else np.array([0.0])
    return [(float(v), format_value(float(v))) for v in values]


#: 1 steradian of the Earth's surface, in km² (R² with R = 6371.0088 km).
KM2_PER_SR = 6371.0088**2


def legend_title(scale: str = "linear") -> str:
    """The heat legend's title in plain words, then the unit (short lines separated by newlines)."""
    note = "" if scale == "linear" else f"\n({scale} colour scale)"
    return (f"brighter = more likely here{note}\n"
            f"probability per area, 1/sr\n"
            f"(1 sr = {KM2_PER_SR / 1e6:.1f} million km\u00b2)")


def legend_label(scale: str = "linear") -> str:
    """The same in one short line (the flat map's colour-bar axis)."""
    note = "" if scale == "linear" else f" ({scale} scale)"
    return f"brighter = more likely{note} \u00b7 1/sr, 1 sr = {KM2_PER_SR / 1e6:.1f} M km\u00b2"
