"""The window's exports: the heatmap or the view as PNG, the predictions as GeoJSON or CSV."""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

from pathlib import Path

from PySide6 import QtWidgets

from gui import formats
from gui.viewdata import ViewPrediction


class ExportMixin:
    """Needs the window's ``current``, ``session``, ``messages``, views and settings panel."""

    def _save_path(self, title: str, suffix: str, filt: str) -> Path | None:
        base = Path(self.current.item).stem if self.current is not None and self.current.kind == "image" else "locdiff"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, title, str(Path.cwd() / f"{base}{suffix}"), filt)
        return Path(path) if path else None

    def export_heatmap_png(self, path: Path | None = None) -> Path | None:
        if self.current is None:
            self.messages.add("Nothing to export yet", error=True)
            return None
        path = path or self._save_path("Export heatmap", "-heatmap.png", "PNG images (*.png)")
        if path is None:
            return None
        try:
            formats.write_heatmap_png(self.current, path, scale=self.settings_panel.display_scale())
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Export failed: {exc}", error=True)
            return None
        self.messages.add(f"Heatmap saved to {path}")
        return path

    def save_view_png(self, path: Path | None = None) -> Path | None:
        path = path or self._save_path("Save view", "-view.png", "PNG images (*.png)")
        if path is None:
            return None
        view = self.globe if self.view_name() == "globe" else self.flat
        if not view.export_image().save(str(path), "PNG"):
            self.messages.add(f"Could not write {path}", error=True)
            return None
        self.messages.add(f"View saved to {path}")
        return path

    def _export_set(self) -> list[ViewPrediction]:
        return list(self.session) if self.session else ([self.current] if self.current is not None else [])

    def _export(self, title: str, suffix: str, filt: str, write, path: Path | None) -> Path | None:
        preds = self._export_set()
        if not preds:
            self.messages.add("No predictions to export yet", error=True)
            return None
        path = path or self._save_path(title, suffix, filt)
        if path is None:
            return None
        try:
            write(preds, path)
        except Exception as exc:  # noqa: BLE001
            self.messages.add(f"Export failed: {exc}", error=True)
            return None
        self.messages.add(f"{len(preds)} prediction(s) saved to {path}")
        return path

    def export_geojson(self, path: Path | None = None) -> Path | None:
        """Points, modes, samples and the 50 % / 90 % credible regions as polygons (RFC 7946)."""
        return self._export("Export GeoJSON", ".geojson", "GeoJSON (*.geojson *.json)", formats.write_geojson, path)

    def export_csv(self, path: Path | None = None) -> Path | None:
        return self._export("Export CSV", ".csv", "CSV (*.csv)", formats.write_csv, path)
