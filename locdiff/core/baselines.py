"""Baselines on the same embeddings, splits and metrics as LocDiffusion (pure torch, CPU-friendly).

* :class:`KNNRetrieval` — retrieval over the training set's embeddings by cosine similarity
  ([L]kNN, Vo et al. 2017). ``k = 1`` returns the nearest training location. ``k > 1`` weighs the
  k neighbours by ``softmax(similarity / T)`` and returns the **best-weighted neighbour**: the
  neighbour whose radius-``R`` neighbourhood (among the k) holds the most weight. The prediction
  is therefore always a gallery (training) location, never a point between two clusters. ``T``
  and ``R`` are chosen on the validation split only.
* :class:`GridClassifier` — PlaNet-style classification (Weyand et al. 2016): cells adapted to the
  training density by spherical k-means on the training locations (dense regions get small
  cells), a small MLP on the embedding, prediction = the training-sample centroid of the most
  probable cell. The number of cells and the training step are chosen on validation.
* :class:`UnitVectorRegressor` — direct regression: an MLP maps the embedding to R³, the output is
  normalised and trained with the cosine loss ``1 - <ŷ, y>``; the best step on validation is kept.

Each has ``fit(train_cond, train_latlon, val_cond, val_latlon, *, device, seed, ...)`` and
``predict(cond) -> [N, 2]`` (lat, lon) degrees. Validation selection uses :func:`selection_score`
(the mean of the five accuracy scales), never the test split.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

from locdiff.core import geo
from locdiff.core.metrics import SCALES_KM, summarize


def selection_score(pred_latlon: torch.Tensor, true_latlon: torch.Tensor) -> float:
    """The validation criterion of every baseline: mean accuracy (%) over 1/25/200/750/2500 km."""
    m = summarize(pred_latlon.double().cpu(), true_latlon.double().cpu())
    return sum(m[f"acc@{s:g}km"] for s in SCALES_KM) / len(SCALES_KM)


def _check_inputs(cond: torch.Tensor, latlon: torch.Tensor, name: str) -> None:
    if cond.ndim != 2 or latlon.ndim != 2 or latlon.shape[1] != 2 or cond.shape[0] != latlon.shape[0]:
        raise ValueError(f"{name}: need cond [N, d] and latlon [N, 2] with the same N, got {tuple(cond.shape)} and {tuple(latlon.shape)}")
    if cond.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    geo.validate_latlon(latlon, f"{name} latlon")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x.float(), dim=-1)


def nearest_points(query: torch.Tensor, points: torch.Tensor, *, chunk: int = 131_072) -> torch.Tensor:
    """Index [N] of the nearest of ``points`` [M, 2] to each of ``query`` [N, 2] (great circle).

    Streams over ``points`` in chunks (max inner product of unit vectors), so M may be millions.
    """
    q = geo.to_xyz(query.double())
    best_val = torch.full((q.shape[0],), -2.0, dtype=torch.float64, device=q.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for start in range(0, points.shape[0], chunk):
        p = geo.to_xyz(points[start : start + chunk].to(device=q.device, dtype=torch.float64))
        val, idx = (q @ p.T).max(1)
        better = val > best_val
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + start, best_idx)
    return best_idx


#: Weighted kNN's validation sweep (softmax temperature; radius of a neighbour's vote, km); LocDiff-H's consensus rule
#: sweeps the same values, so weighted kNN is one of its candidates.
KNN_TEMPERATURES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 1.0)
KNN_RADII_KM: tuple[float, ...] = (25.0, 200.0, 750.0)

# --------------------------------------------------------------------------- kNN retrieval
@attrs.define
class KNNRetrieval:
    """Cosine kNN over a gallery of (embedding, location) pairs; see the module docstring."""

    gallery_cond: torch.Tensor  # [M, d] unit rows
    gallery_latlon: torch.Tensor  # [M, 2]
    k: int = 10
    temperature: float = 0.05
    radius_km: float = 200.0
    name: str = "kNN"

    @classmethod
    def fit(
        cls,
        train_cond: torch.Tensor,
        train_latlon: torch.Tensor,
        val_cond: torch.Tensor | None = None,
        val_latlon: torch.Tensor | None = None,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        k: int = 10,
        temperatures: Sequence[float] = KNN_TEMPERATURES,
        radii_km: Sequence[float] = KNN_RADII_KM,
    ) -> "KNNRetrieval":
        """Store the gallery; for ``k > 1`` choose (T, R) maximising :func:`selection_score` on validation."""
        _check_inputs(train_cond, train_latlon, "kNN training data")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        model = cls(_unit(train_cond).to(device), train_latlon.double().to(device), k=min(k, train_cond.shape[0]),
                    name="kNN (k=1)" if k == 1 else f"kNN (k={k}, weighted)")
        if k == 1 or val_cond is None or val_latlon is None or val_cond.shape[0] == 0:
            return model
        _check_inputs(val_cond, val_latlon, "kNN validation data")
        sims, idx = model._neighbours(val_cond)
        best = (-math.inf, model.temperature, model.radius_km)
        for t in temperatures:
            for r in radii_km:
                score = selection_score(model._choose(sims, idx, float(t), float(r)), val_latlon)
                if score > best[0]:
                    best = (score, float(t), float(r))
        model.temperature, model.radius_km = best[1], best[2]
        return model

    def _neighbours(self, cond: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        q = _unit(cond).to(self.gallery_cond.device)
        sims, idx = [], []
        for start in range(0, q.shape[0], chunk):
            s, i = torch.topk(q[start : start + chunk] @ self.gallery_cond.T, self.k, dim=1)
            sims.append(s)
            idx.append(i)
        return torch.cat(sims), torch.cat(idx)

    def _choose(self, sims: torch.Tensor, idx: torch.Tensor, temperature: float, radius_km: float) -> torch.Tensor:
        loc = self.gallery_latlon[idx]  # [N, k, 2]
        if self.k == 1:
            return loc[:, 0]
        w = torch.softmax(sims.double() / temperature, dim=1)  # [N, k]
        near = geo.great_circle_km(loc[:, :, None, :], loc[:, None, :, :]) <= radius_km  # [N, k, k]
        score = (near.double() * w[:, None, :]).sum(-1) + 1e-9 * w  # ties: the more similar neighbour
        best = score.argmax(1)
        return loc[torch.arange(loc.shape[0], device=loc.device), best]

    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` embeddings → ``[N, 2]`` (lat, lon) of a gallery location each."""
        sims, idx = self._neighbours(cond)
        return self._choose(sims, idx, self.temperature, self.radius_km).cpu()

    def settings(self) -> dict[str, float]:
        return {"k": float(self.k), "temperature": self.temperature, "radius_km": self.radius_km}


# --------------------------------------------------------------------------- cells
def spherical_kmeans(latlon: torch.Tensor, n_cells: int, *, seed: int = 0, iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells adapted to the data density: ``(assignment [N], centroids [C, 2])``.

    Spherical k-means on unit vectors (cosine assignment, normalised mean update); empty cells
    are re-seeded at the point worst served by its centroid. Every returned cell has ≥ 1 member;
    centroids are the training-sample centroids (spherical mean) of their members.
    """
    x = geo.to_xyz(latlon.double())
    n = x.shape[0]
    n_cells = max(1, min(n_cells, n))
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(n, generator=g)[:n_cells].to(x.device)].clone()
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(iterations):
        sim = x @ centres.T
        best, assign = sim.max(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_cells)
        empty = (counts == 0).nonzero()[:, 0]
        if empty.numel():
            worst = torch.argsort(best)[: empty.numel()]
            sums[empty] = x[worst]
        centres = nn.functional.normalize(sums, dim=-1)
    assign = (x @ centres.T).argmax(1)
    used, assign = torch.unique(assign, return_inverse=True)
    sums = torch.zeros(used.numel(), 3, dtype=x.dtype, device=x.device).index_add_(0, assign, x)
    return assign, geo.to_latlon(sums)


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, d_hidden), nn.GELU(), nn.Dropout(dropout)]
        d = d_hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(nn.LayerNorm(d_in), *mods)


def _train_loop(net, loss_fn, predict, train_cond, target, val_cond, val_latlon, *, device, seed, steps, batch_size, lr, eval_every):
    """Adam on random batches; keep the weights with the best validation :func:`selection_score`."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    best_score, best_state, best_step = -math.inf, copy.deepcopy(net.state_dict()), 0
    n = train_cond.shape[0]
    for step in range(1, steps + 1):
        net.train()
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g).to(device)
        loss = loss_fn(net(train_cond[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if val_cond is not None and (step % eval_every == 0 or step == steps):
            score = selection_score(predict(val_cond), val_latlon)
            if score > best_score:
                best_score, best_state, best_step = score, copy.deepcopy(net.state_dict()), step
    if val_cond is not None:
        net.load_state_dict(best_state)
    net.eval()
    return best_score, best_step


@attrs.frozen
class MLPTraining:
    """How the learned baselines train: an MLP on the frozen embeddings (AdamW, cosine schedule),
    keeping the step that scores best on validation (:func:`selection_score`)."""

    device: torch.device | str = "cpu"
    seed: int = 0
    steps: int = attrs.field(default=1500, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    lr: float = attrs.field(default=1e-3, converter=float, validator=attrs.validators.gt(0.0))
    hidden: int = attrs.field(default=512, validator=attrs.validators.ge(1))
    dropout: float = attrs.field(default=0.1, converter=float, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)])
    eval_every: int = attrs.field(default=250, validator=attrs.validators.ge(1))


def _fit_mlp(make_model, d_out: int, loss_fn, train_cond, target, val_cond, val_latlon, t: MLPTraining):
    """Build ``make_model(net)`` around a fresh MLP and train it; returns the model with its best step and score."""
    has_val = val_cond is not None and val_latlon is not None and val_cond.shape[0] > 0
    torch.manual_seed(t.seed)
    x = train_cond.float().to(t.device)
    target = target.to(t.device)
    net = _mlp(x.shape[1], t.hidden, d_out, t.dropout).to(t.device)
    model = make_model(net)
    score, step = _train_loop(
        net, loss_fn, model._predict_device, x, target, val_cond.float().to(t.device) if has_val else None,
        val_latlon if has_val else None, device=t.device, seed=t.seed, steps=t.steps, batch_size=t.batch_size,
        lr=t.lr, eval_every=t.eval_every,
    )
    model.best_step, model.val_score = step, score
    return model


@attrs.define
class GridClassifier:
    """Classification over density-adapted cells; predicts the most probable cell's centroid."""

    net: nn.Module
    centroids: torch.Tensor  # [C, 2]
    best_step: int = 0
    val_score: float = float("nan")
    name: str = "grid classifier"

    @classmethod
    def fit(
        cls,
        train_cond: torch.Tensor,
        train_latlon: torch.Tensor,
        val_cond: torch.Tensor | None = None,
        val_latlon: torch.Tensor | None = None,
        *,
        cells: Sequence[int] = (256, 1024),
        label_smoothing: float = 0.1,
        **training,
    ) -> "GridClassifier":
        """Fit one classifier per cell count; keep the one (and the step) best on validation.

        ``training``: the fields of :class:`MLPTraining` (device, seed, steps, batch_size, lr, ...).
        """
        _check_inputs(train_cond, train_latlon, "grid classifier training data")
        t = MLPTraining(**training)
        has_val = val_cond is not None and val_latlon is not None and val_cond.shape[0] > 0
        best: GridClassifier | None = None
        for n_cells in cells:
            assign, centroids = spherical_kmeans(train_latlon, n_cells, seed=t.seed)
            model = _fit_mlp(
                lambda net, c=centroids: cls(net, c.to(t.device), name=f"grid classifier ({c.shape[0]} cells)"),
                centroids.shape[0], nn.CrossEntropyLoss(label_smoothing=label_smoothing),
                train_cond, assign, val_cond, val_latlon, t,
            )
            if best is None or (has_val and model.val_score > best.val_score):
                best = model
        assert best is not None
        return best

    @torch.no_grad()
    def probabilities(self, cond: torch.Tensor) -> torch.Tensor:
        """Cell probabilities ``[N, C]``."""
        self.net.eval()
        dev = self.centroids.device
        return torch.cat([torch.softmax(self.net(cond[s : s + 4096].float().to(dev)), -1) for s in range(0, cond.shape[0], 4096)])

    @torch.no_grad()
    def _predict_device(self, cond: torch.Tensor) -> torch.Tensor:
        was = self.net.training
        self.net.eval()
        out = self.centroids[self.probabilities(cond).argmax(1)]
        self.net.train(was)
        return out

    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        return self._predict_device(cond).cpu()

    def settings(self) -> dict[str, float]:
        return {"cells": float(self.centroids.shape[0]), "best_step": float(self.best_step)}


# --------------------------------------------------------------------------- regression
@attrs.define
class UnitVectorRegressor:
    """MLP → R³ → normalised unit vector, trained with the cosine loss."""

    net: nn.Module
    best_step: int = 0
    val_score: float = float("nan")
    name: str = "regression (unit vector)"

    @classmethod
    def fit(
        cls,
        train_cond: torch.Tensor,
        train_latlon: torch.Tensor,
        val_cond: torch.Tensor | None = None,
        val_latlon: torch.Tensor | None = None,
        **training,
    ) -> "UnitVectorRegressor":
        """``training``: the fields of :class:`MLPTraining`."""
        _check_inputs(train_cond, train_latlon, "regression training data")

        def loss_fn(out, target):
            return (1 - (nn.functional.normalize(out, dim=-1) * target).sum(-1)).mean()

        return _fit_mlp(cls, 3, loss_fn, train_cond, geo.to_xyz(train_latlon.double()).float(), val_cond, val_latlon,
                        MLPTraining(**training))

    @torch.no_grad()
    def _predict_device(self, cond: torch.Tensor) -> torch.Tensor:
        was = self.net.training
        self.net.eval()
        dev = next(self.net.parameters()).device
        out = torch.cat([self.net(cond[s : s + 4096].float().to(dev)) for s in range(0, cond.shape[0], 4096)])
        self.net.train(was)
        return geo.to_latlon(out.double())

    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        return self._predict_device(cond).cpu()

    def settings(self) -> dict[str, float]:
        return {"best_step": float(self.best_step)}


Baseline = KNNRetrieval | GridClassifier | UnitVectorRegressor


def baseline_fitters(
    *, device: torch.device | str = "cpu", seed: int = 0, steps: int = 1500, cells: Sequence[int] = (256, 1024)
) -> dict[str, Callable[..., Baseline]]:
    """The four comparison baselines by display name, each ``fit(train_cond, train_latlon, val_cond, val_latlon)``."""
    return {
        "kNN (k=1)": functools.partial(KNNRetrieval.fit, device=device, seed=seed, k=1),
        "kNN (k=10, weighted)": functools.partial(KNNRetrieval.fit, device=device, seed=seed, k=10),
        "grid classifier": functools.partial(GridClassifier.fit, device=device, seed=seed, steps=steps, cells=cells),
        "regression (unit vector)": functools.partial(UnitVectorRegressor.fit, device=device, seed=seed, steps=steps),
    }
