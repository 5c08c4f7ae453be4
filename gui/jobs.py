"""What a background job does, without Qt: load a model, run predictions, post-process the results.

These functions run in a worker thread (see :mod:`gui.workers`). They never raise for a bad input:
every problem becomes a :class:`Failure` the window lists, and the other inputs still run.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs

from gui import viewdata
from gui.geocode import Geocoder
from gui.viewdata import ViewPrediction
from locdiff.ports import PredictionService

GpsReader = Callable[[Path], "tuple[float, float] | None"]
Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]

NO_MODEL = "no model loaded"
#: One message (for the banner) when photos meet a model that reads text only.
TEXT_MODEL = "this model reads text; open a CLIP checkpoint \u2014 Model \u2192 Open\u2026"

ServiceFactory = Callable[["Path | None"], PredictionService]


@dataclass(frozen=True)
class Failure:
    item: str
    reason: str


@dataclass
class JobResult:
    """The outcome of one job, handed to the UI thread."""

    kind: str  # "load", "images" or "text"
    predictions: list[ViewPrediction] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    requested: int = 0
    cancelled: bool = False
    error: str | None = None  # a job-level problem (e.g. the checkpoint would not load, photos on a text model)
    service: Any = None
    model_info: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


class ServiceHolder:
    """The current prediction service, shared by the UI thread and the worker (under a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._service: PredictionService | None = None
        self.error: str | None = None
        self.checkpoint: Path | None = None

    @property
    def service(self) -> PredictionService | None:
        with self._lock:
            return self._service

    def set(self, service: PredictionService | None, error: str | None, checkpoint: Path | None) -> None:
        with self._lock:
            self._service = service
            self.error = error
            self.checkpoint = checkpoint


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip()
    if isinstance(exc, ValueError) and msg:
        return msg
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def load_service(holder: ServiceHolder, factory: ServiceFactory, checkpoint: Path | None) -> JobResult:
    """Call the factory; on failure keep no model and report why (a ``ValueError`` message verbatim)."""
    t0 = time.perf_counter()
    try:
        service = factory(checkpoint)
        info = dict(service.model_info or {})
    except Exception as exc:  # noqa: BLE001 - shown in the window
        reason = _describe(exc)
        holder.set(None, reason, checkpoint)
        return JobResult("load", error=reason, elapsed_s=time.perf_counter() - t0)
    holder.set(service, None, checkpoint)
    return JobResult("load", service=service, model_info=info, elapsed_s=time.perf_counter() - t0)


def _settings_dict(settings: Any) -> dict:
    try:
        return attrs.asdict(settings)
    except Exception:  # noqa: BLE001
        return {}


def _safe_gps(reader: GpsReader | None, path: Path) -> tuple[float, float] | None:
    if reader is None:
        return None
    try:
        ll = reader(path)
    except Exception:  # noqa: BLE001 - broken EXIF is not an error worth showing
        return None
    if ll is None:
        return None
    try:
        lat, lon = float(ll[0]), float(ll[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def _with_places(vp: ViewPrediction, geocoder: Geocoder | None) -> ViewPrediction:
    if geocoder is None:
        return vp
    pts = [vp.point] + [(m.lat, m.lon) for m in vp.modes] + ([vp.truth] if vp.truth else [])
    try:
        names = list(geocoder(pts))
    except Exception:  # noqa: BLE001 - names are optional
        return vp
    names += [""] * (len(pts) - len(names))
    n_modes = len(vp.modes)
    truth_place = names[1 + n_modes] if vp.truth else ""
    return vp.with_places(names[0], names[1:1 + n_modes], truth_place)


def _is_failure(r: Any) -> bool:
    return hasattr(r, "reason") and not hasattr(r, "point")


def predict_images(
    holder: ServiceHolder,
    paths: Sequence[Path],
    settings: Any,
    gps_reader: GpsReader | None,
    geocoder: Geocoder | None,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> JobResult:
    """Predict a batch of images. Falls back to one call per file if the batched call raises."""
    t0 = time.perf_counter()
    cancelled = cancelled or (lambda: False)
    result = JobResult("images", requested=len(paths))
    service = holder.service
    if service is None:
        reason = NO_MODEL + (f": {holder.error}" if holder.error else " (choose a checkpoint: Model \u25b8 Open checkpoint\u2026)")
        result.failures = [Failure(str(p), reason) for p in paths]
        return result
    todo: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            result.failures.append(Failure(str(p), "file not found"))
        elif p.is_dir():
            result.failures.append(Failure(str(p), "is a folder"))
        else:
            todo.append(p)
    if cancelled():
        result.cancelled = True
        return result
    if todo and "image" not in _reads(service):
        result.error = TEXT_MODEL  # one message for the whole drop, not one red line per file
        return result
    raw: list[Any] = []
    if todo:
        try:
            raw = list(service.predict_images(todo, settings, progress, cancelled))
        except Exception as exc:  # noqa: BLE001
            if cancelled():
                result.cancelled = True
            elif len(todo) == 1:
                result.failures.append(Failure(str(todo[0]), _describe(exc)))
            else:  # isolate the culprit: one call per file, so the other files still run
                raw = []
                for i, p in enumerate(todo):
                    if cancelled():
                        break
                    try:
                        raw.extend(service.predict_images([p], settings, None, cancelled))
                    except Exception as exc1:  # noqa: BLE001
                        if cancelled():
                            break
                        result.failures.append(Failure(str(p), _describe(exc1)))
                    if progress is not None:
                        progress(i + 1, len(todo))
    if cancelled():  # the photos finished before Cancel are kept; the one being sampled was dropped
        result.cancelled = True
    info = _model_info(service)
    sdict = _settings_dict(settings)
    by_item = {str(p): p for p in todo}
    for r in raw:
        if _is_failure(r):
            result.failures.append(Failure(str(r.item), str(r.reason)))
            continue
        try:
            path = by_item.get(str(r.item), Path(str(r.item)))
            vp = viewdata.from_prediction(r, "image", _safe_gps(gps_reader, path), info, sdict)
            result.predictions.append(_with_places(vp, geocoder))
        except Exception as exc:  # noqa: BLE001 - a malformed result must not take the batch down
            result.failures.append(Failure(str(getattr(r, "item", "?")), f"could not display result: {_describe(exc)}"))
            traceback.print_exc()
    result.elapsed_s = time.perf_counter() - t0
    return result


def predict_text(holder: ServiceHolder, text: str, settings: Any, geocoder: Geocoder | None,
                 cancelled: Cancelled | None = None, progress: Progress | None = None) -> JobResult:
    """Predict a place description; a cancelled job returns no prediction (``cancelled`` reaches the sampler)."""
    t0 = time.perf_counter()
    cancelled = cancelled or (lambda: False)
    result = JobResult("text", requested=1)
    service = holder.service
    if service is None:
        reason = NO_MODEL + (f": {holder.error}" if holder.error else "")
        result.failures.append(Failure(text, reason))
        return result
    if cancelled():
        result.cancelled = True
        return result
    try:
        r = service.predict_text(text, settings, cancelled=cancelled, progress=progress)
        if cancelled():
            pass
        elif _is_failure(r):
            result.failures.append(Failure(text, str(r.reason)))
        else:
            vp = viewdata.from_prediction(r, "text", None, _model_info(service), _settings_dict(settings))
            result.predictions.append(_with_places(vp, geocoder))
    except Exception as exc:  # noqa: BLE001
        if not cancelled():
            result.failures.append(Failure(text, _describe(exc)))
    if cancelled():
        result.cancelled = True
        result.predictions = []
    result.elapsed_s = time.perf_counter() - t0
    return result


def _reads(service: Any) -> tuple[str, ...]:
    try:
        return tuple(service.reads)
    except Exception:  # noqa: BLE001 - a service that does not say takes both
        return ("image", "text")


def _model_info(service: Any) -> dict:
    try:
        return dict(service.model_info or {})
    except Exception:  # noqa: BLE001
        return {}
