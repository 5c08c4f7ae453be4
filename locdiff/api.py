"""The Python API: a trained model as an object, for notebooks and other programs (issue #15).

::

    import locdiff
    model = locdiff.load("runs/run-0001")                # device "auto", as everywhere else
    [p] = model.predict(["Springfield, Illinois"])         # list[Prediction]: .point, .modes, .samples, .grid
    grid = model.density(["Springfield, Illinois"])[0]     # DensityGrid: .lat, .lon, .density, .mass

A driving entry point like the CLI: :func:`load` reaches the adapters through :mod:`locdiff.container` when it is
called, so ``import locdiff`` imports none. Predictions are batched (:class:`BatchPredictor`) and seeded from each
input's content: the same input gives the same answer in any batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from locdiff.core.results import DensityGrid, Prediction
from locdiff.core.sampling import PredictSettings, SamplingSettings
from locdiff.core.summaries import density_at
from locdiff.ports import BatchInput, ItemFailure

Input = str | os.PathLike


def load(run: str | os.PathLike, *, device: str = "auto", workdir: str = "runs", places: bool = False, chunk: int = 64) -> "Model":
    """A trained model from a run folder or a checkpoint folder (its embedder rebuilt from the checkpoint's config).

    ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:1`` | ``mps``; ``workdir`` holds the embedding cache
    (``LOCDIFF_CACHE`` overrides it); ``places=True`` names the places of points and modes (offline geocoder).
    """
    from locdiff.container import build_batch_predictor

    return Model(build_batch_predictor(Path(run), device=device, workdir=workdir, places=places, chunk=chunk))


def _inputs(items: Sequence[Input] | Input) -> list[BatchInput]:
    from locdiff.container import inputs_from_values

    return inputs_from_values([items] if isinstance(items, (str, os.PathLike)) else list(items))


class Model:
    """A loaded model: :meth:`predict` and :meth:`density` for texts and photo paths (``pathlib.Path``, or a string
    naming an existing photo file; any other string is a text)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    @property
    def reads(self) -> tuple[str, ...]:
        """``("text",)`` (a MiniLM model) or ``("image", "text")`` (a CLIP model)."""
        return self.predictor.reads

    @property
    def device(self) -> torch.device:
        return self.predictor.service.device

    def predict(self, inputs: Sequence[Input] | Input, samples: int = 16, *, steps: int | None = None, sampler: str | None = None,
                reducer: str = "mode", seed: int | None = 0, top: int = 5, grid: tuple[int, int] = (90, 180),
                errors: str = "raise") -> list[Prediction | ItemFailure]:
        """One :class:`Prediction` per input, in order (K = ``samples`` diffusion samples each).

        ``sampler``/``steps`` None: the run's own (its config's ``eval`` section), and always its x0 projection.

        ``seed`` None draws fresh noise; an integer gives every input its own reproducible draw. A bad input raises
        ``ValueError`` naming it, or with ``errors="return"`` comes back as an :class:`ItemFailure` in its place.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        saved = self.predictor.service.bundle.config.eval
        sampling = SamplingSettings(sampler=sampler or saved.sampler, steps=steps or saved.sampler_steps, projection=saved.projection,
                                    samples=samples, reducer=reducer, seed=seed)
        settings = PredictSettings(sampling, top_modes=top, grid_lat=grid[0], grid_lon=grid[1])
        out = self.predictor.predict(_inputs(inputs), settings)
        bad = next((r for r in out if isinstance(r, ItemFailure)), None)
        if bad is not None and errors == "raise":
            raise ValueError(f"{bad.item[:80]!r}: {bad.reason}")
        return out

    def density(self, inputs: Sequence[Input] | Input, latlon: torch.Tensor | None = None, *, samples: int = 16,
                grid: tuple[int, int] = (180, 360), seed: int | None = 0, **kwargs: Any) -> list[DensityGrid] | torch.Tensor:
        """The predicted density of each input (the mixture of its K samples' ``q_e``, eq. 11).

        Without ``latlon``: one :class:`DensityGrid` per input (``grid`` cells, per-steradian density and cell mass).
        With ``latlon`` [M, 2] degrees: a [N, M] float64 tensor, each input's density per steradian at those points
        (the mean over the grid cell holding each point: choose ``grid`` fine enough).
        """
        preds = self.predict(inputs, samples, seed=seed, grid=grid, **kwargs)
        if latlon is None:
            return [p.grid for p in preds]
        points = torch.as_tensor(latlon, dtype=torch.float64).reshape(-1, 2)
        return torch.stack([density_at(p.grid, points) for p in preds])
