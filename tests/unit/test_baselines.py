"""Baselines (kNN retrieval, grid classification, unit-vector regression) on synthetic data."""

from __future__ import annotations

import pytest
import torch

from locdiff.core import anchors, geo
from locdiff.core.baselines import (
    GridClassifier,
    KNNRetrieval,
    UnitVectorRegressor,
    baseline_fitters,
    nearest_points,
    selection_score,
    spherical_kmeans,
)
from locdiff.core.metrics import random_guess_accuracy, summarize


def synthetic(n: int, seed: int, *, cities: int = 24, spread_km: float = 60.0, noise: float = 0.3, dim: int = 32):
    """Points around a few 'cities'; the condition is a fixed random projection of location features plus noise."""
    g = torch.Generator().manual_seed(1234)  # the cities and the projection are shared by every split
    centres = anchors.uniform_random(cities, g, dtype=torch.float64)
    proj = torch.randn(9, dim, generator=g, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, cities, (n,), generator=g)
    xyz = geo.to_xyz(centres[which]) + torch.randn(n, 3, generator=g, dtype=torch.float64) * (spread_km / geo.EARTH_RADIUS_KM)
    latlon = geo.to_latlon(xyz)
    v = geo.to_xyz(latlon)
    feats = torch.cat((v, torch.sin(3 * v), torch.cos(3 * v)), 1)
    cond = feats @ proj + noise * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return cond.float(), latlon


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits():
    return synthetic(1500, 1), synthetic(200, 2), synthetic(300, 3)


def test_selection_score_is_the_mean_of_the_five_accuracies():
    truth = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    # errors 0 km and ~1112 km (10 degrees of longitude on the equator): 50 % within 1/25/200/750 km, 100 % within 2500
    pred = torch.tensor([[0.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    assert selection_score(pred, truth) == pytest.approx((50 + 50 + 50 + 50 + 100) / 5)


def test_knn_k1_returns_the_nearest_training_location():
    cond = torch.eye(4)
    latlon = torch.tensor([[10.0, 20.0], [-30.0, 40.0], [50.0, -60.0], [0.0, 179.0]], dtype=torch.float64)
    model = KNNRetrieval.fit(cond, latlon, k=1)
    query = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    torch.testing.assert_close(model.predict(query), latlon[[1, 3]])


def test_knn_weighted_picks_the_best_weighted_cluster_not_the_top_hit():
    # neighbour 0 is the most similar but alone in Asia; neighbours 1-3 agree on Paris
    latlon = torch.tensor([[35.0, 139.0], [48.85, 2.35], [48.9, 2.3], [48.8, 2.4]], dtype=torch.float64)
    cond = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6], [0.7, 0.71]])
    query = torch.tensor([[1.0, 0.0]])
    flat = KNNRetrieval(torch.nn.functional.normalize(cond, dim=-1), latlon, k=4, temperature=10.0, radius_km=50.0)
    sharp = KNNRetrieval(torch.nn.functional.normalize(cond, dim=-1), latlon, k=4, temperature=0.001, radius_km=50.0)
    assert float(geo.great_circle_km(flat.predict(query)[0], latlon[1])) < 20  # one of the Paris points
    torch.testing.assert_close(sharp.predict(query)[0], latlon[0])  # weight concentrates on the top hit


def test_knn_chooses_temperature_and_radius_on_validation(splits):
    (tc, tl), (vc, vl), _ = splits
    model = KNNRetrieval.fit(tc, tl, vc, vl, k=10, temperatures=(0.01, 1.0), radii_km=(25.0, 750.0))
    assert model.temperature in (0.01, 1.0) and model.radius_km in (25.0, 750.0)
    assert set(model.settings()) == {"k", "temperature", "radius_km"}


def test_spherical_kmeans_cells_and_centroids():
    a = torch.tensor([[10.0, 10.0], [10.2, 10.1], [9.9, 10.0]], dtype=torch.float64)
    b = torch.tensor([[-40.0, -70.0], [-40.1, -70.2]], dtype=torch.float64)
    assign, centroids = spherical_kmeans(torch.cat((a, b)), 2, seed=0)
    assert assign[:3].unique().numel() == 1 and assign[3:].unique().numel() == 1 and assign[0] != assign[3]
    torch.testing.assert_close(centroids[assign[0]], geo.spherical_mean(a), atol=1e-9, rtol=0)
    torch.testing.assert_close(centroids[assign[3]], geo.spherical_mean(b), atol=1e-9, rtol=0)


def test_spherical_kmeans_never_returns_empty_cells():
    pts = anchors.uniform_random(300, torch.Generator().manual_seed(0), dtype=torch.float64)
    assign, centroids = spherical_kmeans(pts, 64, seed=1)
    assert torch.bincount(assign, minlength=centroids.shape[0]).min() >= 1
    assert centroids.shape[0] <= 64


def test_nearest_points_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    q = anchors.uniform_random(50, g, dtype=torch.float64)
    pts = anchors.fibonacci(3000)
    idx = nearest_points(q, pts, chunk=700)
    torch.testing.assert_close(idx, geo.pairwise_km(q, pts).argmin(1))


@pytest.mark.parametrize("kind", ["knn1", "knn10", "grid", "regression"])
def test_each_baseline_beats_random_when_the_condition_encodes_location(splits, kind):
    (tc, tl), (vc, vl), (qc, ql) = splits
    if kind == "knn1":
        model = KNNRetrieval.fit(tc, tl, vc, vl, k=1)
    elif kind == "knn10":
        model = KNNRetrieval.fit(tc, tl, vc, vl, k=10)
    elif kind == "grid":
        model = GridClassifier.fit(tc, tl, vc, vl, steps=150, cells=(16, 32), eval_every=50, hidden=128, batch_size=128)
    else:
        model = UnitVectorRegressor.fit(tc, tl, vc, vl, steps=250, eval_every=50, hidden=128, batch_size=128)
    pred = model.predict(qc)
    assert pred.shape == (qc.shape[0], 2) and torch.isfinite(pred).all()
    m = summarize(pred.double(), ql)
    rnd = random_guess_accuracy()
    assert m["acc@750km"] > 10 * rnd["acc@750km"] and m["acc@750km"] > 40, (kind, m)
    assert m["median_km"] < 2000, (kind, m)


def test_grid_classifier_predicts_cell_centroids_and_probabilities(splits):
    (tc, tl), (vc, vl), (qc, _) = splits
    model = GridClassifier.fit(tc, tl, vc, vl, steps=20, cells=(8,), eval_every=10, hidden=64)
    p = model.probabilities(qc[:5])
    assert p.shape == (5, model.centroids.shape[0])
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    pred = model.predict(qc[:5])
    assert all(any(torch.allclose(row, c.cpu().to(row.dtype)) for c in model.centroids) for row in pred)


def test_baseline_fitters_fit_the_four_rows(splits):
    (tc, tl), (vc, vl), _ = splits
    models = {name: fit(tc[:300], tl[:300], vc[:50], vl[:50]) for name, fit in baseline_fitters(steps=20, cells=(8,)).items()}
    assert list(models) == ["kNN (k=1)", "kNN (k=10, weighted)", "grid classifier", "regression (unit vector)"]


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same N"):
        KNNRetrieval.fit(torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="outside"):
        KNNRetrieval.fit(torch.zeros(1, 4), torch.tensor([[95.0, 0.0]]))
    with pytest.raises(ValueError, match="k must be"):
        KNNRetrieval.fit(torch.zeros(1, 4), torch.zeros(1, 2), k=0)
