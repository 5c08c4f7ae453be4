"""Stand-ins for running the window without a trained model: ``locdiff-gui --demo``, the screenshot
script, the benchmark and the GUI tests.

:class:`DemoPredictionService` implements the prediction-service interface the window drives
(``predict_images``, ``predict_text``, ``model_info``) and returns real ``Prediction`` values whose
density is a mixture of von Mises-Fisher blobs on the sphere. It does not look at pixels: it places
the main blob at a known location for a file name it recognises (or one derived from a hash of the
name), and reports unreadable images as ``ItemFailure`` as the real service does.
:class:`MemoryHistory` is the two-method slice of ``ExperimentStore`` the window uses, in memory.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gui.viewdata import cell_areas, grid_axes

# (lat, lon) of a few places, used for demo photos and text queries.
PLACES: dict[str, tuple[float, float]] = {
    "bay-area": (37.80, -122.35),
    "san francisco": (37.77, -122.42),
    "beijing": (39.916, 116.397),
    "sylt": (55.04, 8.42),
    "stockholm": (59.33, 18.07),
    "paris": (48.857, 2.352),
    "london": (51.507, -0.128),
    "new york": (40.713, -74.006),
    "tokyo": (35.68, 139.77),
    "sydney": (-33.87, 151.21),
    "rio de janeiro": (-22.91, -43.17),
    "cairo": (30.04, 31.24),
    "nairobi": (-1.29, 36.82),
    "mumbai": (19.08, 72.88),
    "mexico city": (19.43, -99.13),
    "cape town": (-33.92, 18.42),
    "moscow": (55.76, 37.62),
    "buenos aires": (-34.60, -58.38),
}


def _xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack((np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)), axis=-1)


def _offset(lat: float, lon: float, bearing_deg: float, dist_km: float) -> tuple[float, float]:
    """Destination point at ``dist_km`` along ``bearing_deg`` (great circle)."""
    d = dist_km / 6371.0088
    la1, lo1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    la2 = math.asin(math.sin(la1) * math.cos(d) + math.cos(la1) * math.sin(d) * math.cos(b))
    lo2 = lo1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(la1), math.cos(d) - math.sin(la1) * math.sin(la2))
    return math.degrees(la2), (math.degrees(lo2) + 180.0) % 360.0 - 180.0


def mixture(
    centres: Sequence[tuple[float, float]], weights: Sequence[float], kappas: Sequence[float],
    n_lat: int = 180, n_lon: int = 360,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A normalised vMF mixture on an equiangular grid: (lat, lon, density [1/sr], mass)."""
    lat, lon = grid_axes(n_lat, n_lon)
    glat, glon = np.meshgrid(lat, lon, indexing="ij")
    x = _xyz(glat, glon)
    dens = np.zeros((n_lat, n_lon))
    for (clat, clon), w, k in zip(centres, weights, kappas):
        mu = _xyz(np.array(clat), np.array(clon))
        # vMF density on S^2: k / (4 pi sinh k) exp(k mu.x) = k / (2 pi (1 - e^{-2k})) exp(k (mu.x - 1))
        norm = k / (2 * math.pi * (1 - math.exp(-2 * k)))
        dens += w * norm * np.exp(k * (x @ mu - 1.0))
    mass = dens * cell_areas(lat, n_lon)[:, None]
    total = mass.sum()
    return lat, lon, dens / total, mass / total


class DemoPredictionService:
    """A fake prediction service with the real interface (see the module docstring).

    ``locations`` maps a file-name stem prefix or a text (lower case) to the main blob's (lat, lon).
    ``delay_s`` makes each item take that long (sleeping in small steps that honour ``cancelled``);
    ``busy`` spends that time computing instead of sleeping (to load the CPU like a model).
    """

    def __init__(
        self,
        locations: Mapping[str, tuple[float, float]] | None = None,
        delay_s: float = 0.0,
        busy: bool = False,
        checkpoint: str = "demo",
        reads: tuple[str, ...] = ("image", "text"),
    ) -> None:
        self.locations = dict(PLACES if locations is None else locations)
        self.delay_s = delay_s
        self.busy = busy
        self.checkpoint = checkpoint
        self.reads = tuple(reads)
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def model_info(self) -> dict:
        return {"checkpoint": self.checkpoint, "degree": 0, "embedder": "demo (no model: synthetic densities)",
                "reads": list(self.reads)}

    # ------------------------------------------------------------------ interface
    def predict_images(self, paths, settings, progress=None, cancelled=None):
        from locdiff.ports import ItemFailure

        with self._lock:
            self.calls.append(("images", (tuple(str(p) for p in paths), settings)))
        out = []
        n = len(paths)
        for i, path in enumerate(paths):
            if cancelled is not None and cancelled():
                break
            self._work(cancelled)
            if cancelled is not None and cancelled():
                break
            reason = self._unreadable(Path(path))
            if reason:
                out.append(ItemFailure(str(path), reason))
            else:
                out.append(self._predict(str(path), Path(path).stem.lower(), settings))
            if progress is not None:
                progress(i + 1, n)
        return out

    def predict_text(self, text, settings, cancelled=None, progress=None):
        with self._lock:
            self.calls.append(("text", (text, settings)))
        self._work(cancelled)
        if cancelled is not None and cancelled():
            raise RuntimeError("cancelled")
        if progress is not None:
            progress(1, 1)
        return self._predict(text, text.strip().lower(), settings)

    # ------------------------------------------------------------------ internals
    def _work(self, cancelled: Callable[[], bool] | None) -> None:
        end = time.perf_counter() + self.delay_s
        a = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
        while time.perf_counter() < end:
            if cancelled is not None and cancelled():
                return
            if self.busy:
                a = np.tanh(a @ a.T * 1e-2)  # numpy drops the GIL inside the matmul, like torch
            else:
                time.sleep(min(0.01, max(0.0, end - time.perf_counter())))

    @staticmethod
    def _unreadable(path: Path) -> str | None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
        except FileNotFoundError:
            return "file not found"
        except UnidentifiedImageError:
            return "not an image (unsupported or unknown format)"
        except (OSError, ValueError, SyntaxError) as exc:
            return f"cannot read image: {exc}"
        return None

    def _location(self, key: str) -> tuple[float, float]:
        for name, latlon in self.locations.items():
            if key.startswith(name) or name in key:
                return latlon
        h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        names = sorted(PLACES)
        return PLACES[names[h % len(names)]]

    def _predict(self, item: str, key: str, settings):
        import torch

        from locdiff.core.results import DensityGrid, Mode, Prediction

        # like the real service: one draw per (input, seed); seed None draws afresh
        salt = str(settings.seed) if settings.seed is not None else str(np.random.SeedSequence().entropy)
        rng = np.random.default_rng(int(hashlib.sha256(f"{key}\0{salt}".encode()).hexdigest()[:16], 16))
        lat0, lon0 = self._location(key)
        true_lat, true_lon = _offset(lat0, lon0, rng.uniform(0, 360), rng.uniform(20, 120))
        centres = [(true_lat, true_lon)]
        for dist in (700, 1400, 2300, 3500):
            centres.append(_offset(true_lat, true_lon, rng.uniform(0, 360), dist * rng.uniform(0.8, 1.2)))
        weights = np.array([0.52, 0.2, 0.13, 0.09, 0.06])
        kappas = np.array([900.0, 500.0, 400.0, 300.0, 250.0])
        lat, lon, dens, mass = mixture(centres, weights, kappas, settings.grid_lat, settings.grid_lon)
        # samples: tangent-plane Gaussians around the components
        comp = rng.choice(len(weights), size=settings.samples, p=weights / weights.sum())
        samples = []
        for c in comp:
            sd_km = 6371.0 / math.sqrt(kappas[c])
            samples.append(_offset(*centres[c], rng.uniform(0, 360), abs(rng.normal(0, sd_km))))
        modes = []
        radius = 500.0
        gl, go = np.meshgrid(lat, lon, indexing="ij")
        x = _xyz(gl, go)
        for (clat, clon), k in zip(centres, kappas):
            ang = np.arccos(np.clip(x @ _xyz(np.array(clat), np.array(clon)), -1, 1)) * 6371.0088
            m = float(mass[ang <= radius].sum())
            modes.append(Mode(lat=clat, lon=clon, mass=m, radius_km=radius, logit=math.log(max(m, 1e-12))))
        modes.sort(key=lambda m: -m.mass)
        modes = modes[: settings.top_modes]
        grid = DensityGrid(lat=torch.from_numpy(lat), lon=torch.from_numpy(lon),
                           density=torch.from_numpy(dens), mass=torch.from_numpy(mass))
        return Prediction(
            item=item,
            samples=torch.tensor(samples, dtype=torch.float64),
            point=(modes[0].lat, modes[0].lon),
            reducer=settings.reducer,
            modes=tuple(modes),
            grid=grid,
        )


def demo_service_factory(checkpoint: Path | None) -> DemoPredictionService:
    """``load_service`` for demo mode: any checkpoint 'loads' (its name is shown as the model)."""
    return DemoPredictionService(checkpoint=str(checkpoint) if checkpoint else "demo")


def demo_gps_reader(path: Path) -> tuple[float, float] | None:
    """EXIF GPS of a photo via Pillow, for demo mode only (the app proper gets the adapters' reader)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            gps = im.getexif().get_ifd(0x8825)
        if not gps or 2 not in gps or 4 not in gps:
            return None

        def deg(v) -> float:
            d, m, s = (float(x) for x in v)
            return d + m / 60.0 + s / 3600.0

        lat = deg(gps[2]) * (-1 if str(gps.get(1, "N")).upper().startswith("S") else 1)
        lon = deg(gps[4]) * (-1 if str(gps.get(3, "E")).upper().startswith("W") else 1)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not (math.isfinite(lat) and math.isfinite(lon)):
            return None
        return lat, lon
    except Exception:  # noqa: BLE001 - a broken EXIF block just means "no GPS"
        return None


class MemoryHistory:
    """``add_predictions`` / ``predictions`` of ``ExperimentStore``, kept in memory (newest first)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add_predictions(self, run_id: int | None, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                self.rows.append(dict(row, id=len(self.rows) + 1, run_id=run_id,
                                      created_at=datetime.now(timezone.utc)))

    def predictions(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in reversed(self.rows[-limit:])] if limit > 0 else []
