"""The window's history: predictions saved to the experiment store and reopened from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gui import viewdata
from gui.viewdata import ViewPrediction

HISTORY_LIMIT = 200


class HistoryMixin:
    """Needs the window's ``store``, ``history_panel``, ``messages`` and ``show_prediction``."""

    def _save_history(self, preds: Sequence[ViewPrediction]) -> None:
        if self.store is None:
            return
        try:
            self.store.add_predictions(None, [viewdata.store_row(vp) for vp in preds])
        except Exception as exc:  # noqa: BLE001 - history is a convenience
            self.messages.add(f"Could not save to history: {exc}", error=True)
            return
        self.refresh_history()

    def refresh_history(self) -> None:
        if self.store is None:
            self.history_panel.set_rows([])
            return
        try:
            rows = list(self.store.predictions(HISTORY_LIMIT))
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Could not read the history: {exc}", error=True)
            return
        self.history_panel.set_rows(rows)

    def reopen_history_row(self, row: dict) -> None:
        payload = row.get("payload") or {}
        item = str(row.get("item", "?"))
        try:
            vp = viewdata.from_payload(item, payload)
        except Exception:  # noqa: BLE001 - rows made elsewhere (CLI, evaluation) hold just the point
            try:
                vp = ViewPrediction(item=item, kind="image", point=(float(row["lat"]), float(row["lon"])),
                                    samples=np.zeros((0, 2)), modes=())
                self.messages.add(f"{Path(item).name}: no stored density, showing the point only")
            except Exception as exc:  # noqa: BLE001
                self.messages.add(f"Cannot reopen {item}: {exc}", error=True)
                return
        self.show_prediction(vp)
