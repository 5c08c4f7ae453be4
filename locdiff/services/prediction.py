"""Use case: where was this photo (or place name) taken? A distribution, its modes and a point.

K diffusion samples are decoded (continuous decoder), reduced to a point, and their mixture
density is evaluated on a grid for heatmaps, top modes with their mass, and credible regions.
Optionally the GeoCLIP retriever refines the point within a radius of the samples (the paper's
"Ours + GeoCLIP").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from locdiff.core.bundle import ModelBundle
from locdiff.core.calibration import LEVELS, Calibrator
from locdiff.core.decoding import decode, default_radius_km, find_modes
from locdiff.core.hybrid import HybridRule
from locdiff.ports import EmbeddingRetriever, Embedder, ItemFailure, Retriever
from locdiff.core.results import Prediction
from locdiff.core.sampling import PredictSettings
from locdiff.core.reduction import reduce_samples
from locdiff.core.summaries import predictions
from locdiff.services.hybrid import refine_with_gallery
from locdiff.services.sampling import SamplingCancelled, cancel_check, input_seed, per_input_noise, sample_coefficients

Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]

#: What a model of each embedder can read (MiniLM: text only; CLIP: photos, and text in the same space).
READS = {"minilm": ("text",), "clip": ("image", "text")}


#: modes of a calibrated map below this mass are not listed (they print as p = 0.000)
MIN_MODE_MASS = 1e-3


class PredictionService:
    """Predicts from images or text with one trained model (the GUI and ``cli predict`` use it)."""

    def __init__(self, bundle: ModelBundle, embedder: Embedder, device: torch.device, retriever: Retriever | None = None, source: str = "",
                 calibrator: Calibrator | None = None, gallery: EmbeddingRetriever | None = None, hybrid_rule: HybridRule | None = None):
        if bundle.embedder_id != embedder.id:
            raise ValueError(
                f"model {source or ''} was trained on embeddings from {bundle.embedder_id!r}, "
                f"but the configured embedder is {embedder.id!r}"
            )
        self.bundle, self.embedder, self.device, self.retriever, self.source = bundle, embedder, device, retriever, source
        self.calibrator = calibrator  # fitted on validation data (study calibration --run): map + credible levels
        # LocDiff-H from the training split (any embedder), with the rule chosen on validation (else the paper's, R from settings)
        self.gallery, self.hybrid_rule = gallery, hybrid_rule

    @property
    def reads(self) -> tuple[str, ...]:
        """The inputs this model takes: ``("text",)`` or ``("image", "text")``."""
        kind = getattr(getattr(getattr(self.bundle, "config", None), "data", None), "embedder", None)
        return READS.get(kind, ("image", "text"))

    @property
    def model_info(self) -> dict[str, Any]:
        return {"checkpoint": self.source, "degree": self.bundle.degree, "embedder": self.bundle.embedder_id,
                "calibration": self.calibrator.describe() if self.calibrator is not None else "raw",
                "reads": list(self.reads), **self.sampling_info}

    @property
    def sampling_info(self) -> dict[str, Any]:
        """How the run was selected to be sampled (its config's eval section): the app starts from it."""
        saved = getattr(getattr(self.bundle, "config", None), "eval", None)
        if saved is None:
            return {}
        return {"sampler": saved.sampler, "sampler_steps": saved.sampler_steps, "projection": saved.projection}

    def predict_images(
        self,
        paths: Sequence[Path],
        settings: PredictSettings,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Prediction | ItemFailure]:
        """One result per path, in order; unreadable files become ``ItemFailure``s.

        A model that reads no images raises ``ValueError`` once (not one failure per file).
        ``cancelled()`` is checked between diffusion steps: once true, the photo being sampled is dropped
        and the results of the photos finished before are returned. Each photo is seeded from its bytes
        (:func:`input_seed`), so its answer does not depend on the batch.
        """
        if "image" not in self.reads:
            raise ValueError(f"this model reads text ({self.bundle.embedder_id}); photos need a CLIP checkpoint")
        out: list[Prediction | ItemFailure] = []
        for i, path in enumerate(paths):
            if cancelled is not None and cancelled():
                break
            emb = self.embedder.embed_images([Path(path)])
            if not emb.index:
                reason = emb.failures[0].reason if emb.failures else "could not be embedded"
                out.append(ItemFailure(str(path), reason))
            else:
                key = _file_bytes(Path(path))
                try:
                    out.append(self._predict(emb.vectors, str(path), settings, images=[Path(path)], key=key,
                                             cancelled=cancelled))
                except SamplingCancelled:
                    break
            if progress is not None:
                progress(i + 1, len(paths))
        return out

    def predict_text(self, text: str, settings: PredictSettings, cancelled: Cancelled | None = None,
                     progress: Progress | None = None) -> Prediction:
        """The prediction for a place description, seeded from its text; raises :class:`SamplingCancelled` on cancel."""
        emb = self.embedder.embed_texts([text])
        if not emb.index:
            raise ValueError(f"cannot embed {text!r}: {emb.failures[0].reason if emb.failures else 'unknown reason'}")
        return self._predict(emb.vectors, text, settings, key=text.encode("utf-8"), cancelled=cancelled, progress=progress)

    def predict_vectors(self, cond: torch.Tensor, item: str, settings: PredictSettings) -> Prediction:
        return self._predict(cond, item, settings, key=item.encode("utf-8"))

    @torch.no_grad()
    def _predict(self, cond: torch.Tensor, item: str, settings: PredictSettings, images: list[Path] | None = None,
                 key: bytes | None = None, cancelled: Cancelled | None = None, progress: Progress | None = None) -> Prediction:
        # each input is seeded on its own (sha256 of its content + the user seed): the same input gives the same
        # answer in any batch; seed None draws fresh noise
        seed = settings.seed if settings.seed is not None else int(torch.randint(0, 2**62, ()).item())
        noise = per_input_noise([input_seed(key if key is not None else item, seed)], settings.samples)
        e = sample_coefficients(
            self.bundle, cond.to(self.device), samples=settings.samples, sampler=settings.sampler, steps=settings.steps,
            projection=settings.projection, noise=noise, on_step=cancel_check(cancelled, progress),
        )[0].float()
        if self.calibrator is None:  # the raw map: the summary every path shares (batch rows, the API) — same answers
            base = predictions(e.cpu()[None], [item], reducer=settings.reducer, grid_lat=settings.grid_lat,
                               grid_lon=settings.grid_lon, top_modes=settings.top_modes)[0]
            samples, point = base.samples, torch.tensor(base.point, dtype=torch.float64)
            grid, credible, modes = base.grid, base.credible, base.modes
        else:  # the calibrated map, each α-region drawn at the HPD level the calibration assigns to α
            samples = decode(e).double().cpu()
            radius = default_radius_km(self.bundle.degree)
            point = reduce_samples(samples[None], settings.reducer, radius_km=2 * radius)[0]
            cal = attrs.evolve(self.calibrator, n_lat=settings.grid_lat, n_lon=settings.grid_lon)
            grid = cal.grid(e.cpu(), samples)
            credible = cal.thresholds(grid, LEVELS)
            # mode masses from the calibrated map too (on at most 90×180 cells: cost grows with K × cells)
            small = grid if grid.mass.numel() <= 90 * 180 else attrs.evolve(cal, n_lat=90, n_lon=180).grid(e.cpu(), samples)
            modes = find_modes(e.cpu(), top=settings.top_modes, radius_km=radius, grid=small)
            # a sample's minor peak that holds nothing on the calibrated map is not a mode worth listing
            modes = modes[:1] + tuple(m for m in modes[1:] if m.mass >= MIN_MODE_MASS)
        refined = None
        if settings.hybrid and self.gallery is not None:
            rule = self.hybrid_rule or HybridRule("radius", settings.hybrid_radius_km)
            top, _ = refine_with_gallery(self.gallery, cond.cpu(), samples[None], point[None].double(), rule, e.cpu()[None])
            refined = (float(top[0, 0]), float(top[0, 1]))  # the LocDiffusion point where no match is in reach (the paper's rule)
        elif settings.hybrid and self.retriever is not None and images:
            latlon, _ = self.retriever.retrieve(images, samples[None], settings.hybrid_radius_km, top_k=1)
            if torch.isfinite(latlon[0, 0]).all():
                refined = (float(latlon[0, 0, 0]), float(latlon[0, 0, 1]))
        return Prediction(
            item=item,
            samples=samples,
            point=(float(point[0]), float(point[1])),
            reducer=settings.reducer,
            modes=modes,
            grid=grid,
            credible=credible,
            refined=refined,
            calibration=self.calibrator.describe() if self.calibrator is not None else "",
        )


def _file_bytes(path: Path) -> bytes:
    """A photo's content for seeding (the bytes, so a renamed copy gets the same answer)."""
    try:
        return path.read_bytes()
    except OSError:
        return str(path).encode("utf-8")
