"""Markdown + PNG reports of study results (matplotlib lives here, never in the core).

``render_report(results, out_dir, name)`` writes ``out_dir/<name>.md`` with every study's tables
(:func:`locdiff.core.tables.format_result`) and plots under ``out_dir/<name>-figures/``:

* accuracy per scale per method (compare, losses, spatial);
* calibration curves (nominal vs empirical coverage, raw and calibrated);
* accuracy per scale, training time and peak memory against the SHDD degree L;
* accuracy per scale against the decoding gallery (LocDiffusion and kNN side by side).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from locdiff.core.metrics import SCALES_KM
from locdiff.core.tables import ACC_KEYS, StudyResult, format_result

_SCALE_NAMES = [f"{s:g} km" for s in SCALES_KM]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "plot"


def _is_accuracy_table(rows: Mapping[str, Mapping[str, float]]) -> bool:
    return bool(rows) and all(all(k in v for k in ACC_KEYS) for v in rows.values())


def accuracy_bars(rows: Mapping[str, Mapping[str, float]], title: str, path: Path) -> Path:
    """Grouped bars: one group per scale, one bar per method (with its 95 % interval where the row has one)."""
    plt = _plt()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(ACC_KEYS) + 0.4 * len(names)), 4.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ACC_KEYS))]
        values = [rows[name][k] for k in ACC_KEYS]
        errors = None
        if all(f"{k}_lo" in rows[name] and f"{k}_hi" in rows[name] for k in ACC_KEYS):
            errors = [[v - rows[name][f"{k}_lo"] for k, v in zip(ACC_KEYS, values)],
                      [rows[name][f"{k}_hi"] - v for k, v in zip(ACC_KEYS, values)]]
        ax.bar(xs, values, width, label=name, yerr=errors, capsize=2 if errors else 0, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(ACC_KEYS)), _SCALE_NAMES)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def calibration_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str = "calibration") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--", label="perfect")
    for name, (x, y) in curves.items():
        ax.plot([100 * a for a in x], [100 * b for b in y], marker="o", ms=3, label=name)
    ax.set_xlabel("nominal credible level (%)")
    ax.set_ylabel("empirical coverage (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def degree_plot(rows: Mapping[str, Mapping[str, float]], path: Path, title: str = "SHDD degree") -> Path:
    plt = _plt()
    items = sorted(rows.values(), key=lambda v: v.get("degree", math.nan))
    degrees = [v.get("degree", math.nan) for v in items]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 4))
    for key, label in zip(ACC_KEYS, _SCALE_NAMES):
        a1.plot(degrees, [v[key] for v in items], marker="o", label=label)
    a1.set_xlabel("degree L")
    a1.set_ylabel("accuracy (%)")
    a1.set_title(title, fontsize=9)
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.plot(degrees, [v.get("train_s", math.nan) for v in items], marker="o", color="tab:red", label="training time (s)")
    a2.set_xlabel("degree L")
    a2.set_ylabel("training time (s)", color="tab:red")
    twin = a2.twinx()
    twin.plot(degrees, [v.get("peak_mem_MB", math.nan) for v in items], marker="s", color="tab:blue", label="peak memory (MB)")
    twin.set_ylabel("peak memory (MB)", color="tab:blue")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def anchor_plot(tables: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> Path:
    """One panel per accuracy table of the anchor study: accuracy per scale (lines) across galleries (x)."""
    plt = _plt()
    panels = [(t, rows) for t, rows in tables.items() if _is_accuracy_table(rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        names = list(rows)
        for key, label in zip(ACC_KEYS, _SCALE_NAMES):
            ax.plot(range(len(names)), [rows[n][key] for n in names], marker="o", label=label)
        ax.set_xticks(range(len(names)), [re.sub(r"\s*\(", "\n(", n) for n in names], fontsize=7, rotation=25, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title[:70], fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figures(result: StudyResult, folder: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    stem = f"{result.name}-{result.run_id}"
    if result.name == "calibration" and result.curves:
        out.append(("calibration curve (test)", calibration_plot(result.curves, folder / f"{stem}-calibration.png", "coverage of HPD regions (test)")))
    if result.name == "anchors":
        out.append(("accuracy by decoding gallery", anchor_plot(result.tables, folder / f"{stem}-anchors.png")))
    if result.name == "degrees":
        for title, rows in result.tables.items():
            if _is_accuracy_table(rows) and all("degree" in v for v in rows.values()):
                out.append(("accuracy, time and memory by degree", degree_plot(rows, folder / f"{stem}-degrees.png", title)))
    if result.name in ("compare", "losses", "spatial"):
        for title, rows in result.tables.items():
            if _is_accuracy_table(rows):
                rows = {k: v for k, v in rows.items() if k != "random guess"}
                out.append((title, accuracy_bars(rows, title, folder / f"{stem}-{_slug(title)}.png")))
    return out


def render_report(results: Sequence[StudyResult], out_dir: Path, name: str, *, title: str = "LocDiff studies") -> Path:
    """Write ``out_dir/<name>.md`` and its PNG figures; returns the Markdown path."""
    out_dir = Path(out_dir)
    folder = out_dir / f"{name}-figures"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for result in results:
        lines += [f"## Study `{result.name}` (run {result.run_id})", ""]
        if result.model_runs:
            lines += ["Models trained for it (runs): " + ", ".join(f"{k} → {v}" for k, v in result.model_runs.items()), ""]
        if result.settings:
            lines += ["<details><summary>settings</summary>", "", "```json", json.dumps(result.settings, indent=1, default=str), "```", "</details>", ""]
        lines += [format_result(result), ""]
        for caption, path in _figures(result, folder):
            lines += [f"![{caption}]({folder.name}/{path.name})", ""]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(lines))
    return md
