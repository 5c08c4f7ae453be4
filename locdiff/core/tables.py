"""A study's results as a value: tables, curves and notes, their experiment-store records and Markdown.

A :class:`StudyResult` crosses two ports — the ``ExperimentStore`` (one evaluation per table cell,
:meth:`StudyResult.records` / :meth:`StudyResult.from_run`) and the report adapter — so it lives here,
beside the other result values, not in a use case.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from locdiff.core.metrics import SCALES_KM, format_table
from locdiff.core.scores import SCORE_KEYS, format_scores_table

ACC_KEYS = tuple(f"acc@{s:g}km" for s in SCALES_KM)
TABLE_SEP = "::"  # evaluation dataset names: "<table>::<row>" and "curve::<name>"


@attrs.define
class StudyResult:
    """Tables (title → row → column → value), curves (name → (x, y)), notes, settings."""

    name: str
    tables: dict[str, dict[str, dict[str, float]]] = attrs.field(factory=dict)
    curves: dict[str, tuple[list[float], list[float]]] = attrs.field(factory=dict)
    notes: list[str] = attrs.field(factory=list)
    settings: dict[str, Any] = attrs.field(factory=dict)
    run_id: int | None = None
    model_runs: dict[str, int] = attrs.field(factory=dict)

    def add_row(self, table: str, row: str, values: Mapping[str, float]) -> None:
        self.tables.setdefault(table, {})[row] = {k: float(v) for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "run_id": self.run_id, "model_runs": dict(self.model_runs), "settings": self.settings,
            "notes": list(self.notes), "tables": self.tables, "curves": {k: [list(x), list(y)] for k, (x, y) in self.curves.items()},
        }

    def records(self) -> list[tuple[str, dict[str, float]]]:
        """(evaluation dataset name, figures) pairs that hold the whole result in an ``ExperimentStore``."""
        out = []
        order = 0
        for table, rows in self.tables.items():
            for row, values in rows.items():
                out.append((f"{table}{TABLE_SEP}{row}", dict(values) | {"_order": float(order)}))
                order += 1
        for name, (x, y) in self.curves.items():
            out.append((f"curve{TABLE_SEP}{name}", {f"x={a:.6g}": float(b) for a, b in zip(x, y)} | {"_order": float(order)}))
            order += 1
        return out

    @classmethod
    def from_run(cls, record: Any) -> "StudyResult":
        """Rebuild a study's tables and curves from its run (a ``locdiff.ports.RunRecord``) in the experiment store."""
        config = dict(record.config)
        result = cls(name=str(config.get("study", record.experiment.removeprefix("study-"))), run_id=record.run_id,
                     settings=dict(config.get("settings", {})), notes=list(config.get("notes", [])))
        cells: dict[str, dict[str, float]] = {}
        for key, value in record.metrics.items():
            dataset, _, metric = key.rpartition("/")
            if TABLE_SEP in dataset:
                cells.setdefault(dataset, {})[metric] = value
        for dataset in sorted(cells, key=lambda d: cells[d].get("_order", 0.0)):
            values = {k: v for k, v in cells[dataset].items() if k != "_order"}
            table, _, row = dataset.partition(TABLE_SEP)
            if table == "curve":
                pts = sorted((float(k.removeprefix("x=")), v) for k, v in values.items())
                result.curves[row] = ([p[0] for p in pts], [p[1] for p in pts])
            elif table == "models":
                result.model_runs = {k: int(v) for k, v in values.items() if not math.isnan(v)}
            else:
                result.tables.setdefault(table, {})[row] = values
        return result


def format_generic_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] | None = None, *, digits: int = 1) -> str:
    """Markdown table of any figures (NaN shown as '–')."""
    if columns is None:
        columns = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, values in rows.items():
        cells = []
        for c in columns:
            v = values.get(c, math.nan)
            cells.append("–" if v is None or math.isnan(v) else (f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.3g}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_result(result: StudyResult) -> str:
    """All tables of a study as Markdown (accuracy tables in the paper's layout)."""
    parts = []
    for title, rows in result.tables.items():
        parts.append(f"### {title}\n")
        if rows and all(all(k in v for k in ACC_KEYS + ("median_km", "geoscore")) for v in rows.values()):
            parts.append(format_table(rows))
            if any("nll" in v or "energy_km" in v for v in rows.values()):
                parts.append("\nProper scores (95 % intervals; NLL in nats on the unit sphere, lower is better; raw = uncalibrated "
                             "HPD coverage; '—' where a method has no density):\n\n" + format_scores_table(rows))
            shown = set(ACC_KEYS) | set(SCORE_KEYS) | {"median_km", "geoscore", "mean_km", "n"}
            extra = sorted({k for v in rows.values() for k in v if k not in shown and not k.endswith(("_lo", "_hi"))})
            if extra:
                parts.append("\n" + format_generic_table(rows, extra, digits=2))
        else:
            parts.append(format_generic_table(rows))
        parts.append("")
    if result.notes:
        parts.append("\n".join(f"* {n}" for n in result.notes))
    return "\n".join(parts)

