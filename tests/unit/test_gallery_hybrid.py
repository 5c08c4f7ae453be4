"""LocDiff-H for any embedder: the choice rules (radius, density), their validation selection, the memory-mapped
training-split gallery (exact top-k, reuse, invalidation) and no leakage of val/test items into the gallery."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from adapters.gallery_retriever import GalleryCache, MappedGallery
from adapters.hybrid_file import load_hybrid_rule, save_hybrid_rule
from locdiff.core import geo
from locdiff.core.baselines import KNN_RADII_KM, KNN_TEMPERATURES, KNNRetrieval
from locdiff.core.hybrid import HybridRule, Matches, candidate_rules, choose, select_rule, within_radius
from locdiff.core.shdd import encode
from locdiff.services.data import PreparedData
from locdiff.services.hybrid import HybridSelection, gallery_of, match, refine_with_gallery

PARIS, LYON, TOKYO = (48.8566, 2.3522), (45.764, 4.8357), (35.6762, 139.6503)
NEAR_PARIS = (48.95, 2.55)  # ~17 km from Paris


def _matches(rows):
    """One query; rows of (similarity, (lat, lon))."""
    sims = torch.tensor([[s for s, _ in rows]], dtype=torch.float32)
    latlon = torch.tensor([[p for _, p in rows]], dtype=torch.float64)
    return Matches(sims, latlon)


def _around(centre, n=4, spread=0.05):
    return torch.tensor([[(centre[0] + spread * i, centre[1] - spread * i) for i in range(n)]], dtype=torch.float64)


FALLBACK = torch.tensor([[0.0, 0.0]], dtype=torch.float64)


# --------------------------------------------------------------------------- rules
def test_radius_rule_picks_the_most_similar_match_inside_the_radius():
    m = _matches([(0.9, TOKYO), (0.7, LYON), (0.6, NEAR_PARIS)])
    samples = _around(PARIS)
    out, used = choose(m, samples, FALLBACK, HybridRule("radius", 100.0))
    assert bool(used[0]) and torch.allclose(out[0], torch.tensor(NEAR_PARIS, dtype=torch.float64))
    out, _ = choose(m, samples, FALLBACK, HybridRule("radius", 500.0))  # Lyon (~390 km) now in reach, and more similar
    assert torch.allclose(out[0], torch.tensor(LYON, dtype=torch.float64))
    out, _ = choose(m, samples, FALLBACK, HybridRule("radius", 20000.0))  # everything in reach: plain retrieval
    assert torch.allclose(out[0], torch.tensor(TOKYO, dtype=torch.float64))


def test_radius_rule_falls_back_to_the_locdiffusion_point_when_nothing_is_in_reach():
    m = _matches([(0.9, TOKYO), (0.7, LYON)])
    out, used = choose(m, _around(PARIS), FALLBACK, HybridRule("radius", 10.0))
    assert not bool(used[0]) and torch.equal(out, FALLBACK)


def test_padding_never_chosen():
    m = Matches(torch.tensor([[0.5, -math.inf]]), torch.tensor([[LYON, (math.nan, math.nan)]], dtype=torch.float64))
    out, used = choose(m, _around(PARIS), FALLBACK, HybridRule("radius", 500.0))
    assert bool(used[0]) and torch.allclose(out[0], torch.tensor(LYON, dtype=torch.float64))


def test_within_radius_matches_great_circle_distance():
    g = torch.Generator().manual_seed(0)
    pts = torch.stack((torch.rand(3, 50, generator=g) * 160 - 80, torch.rand(3, 50, generator=g) * 360 - 180), -1).double()
    samples = pts[:, :5] + 3.0
    got = within_radius(pts, samples, 800.0)
    d = geo.great_circle_km(pts[:, :, None, :], samples[:, None, :, :]).amin(-1)
    assert torch.equal(got, d <= 800.0)


def test_density_rule_trades_similarity_for_the_samples_density():
    # 15 samples at Paris, 1 at Tokyo: the mixture is dense at Paris
    samples = torch.tensor([[PARIS] * 15 + [TOKYO]], dtype=torch.float64)
    coeffs = encode(samples.reshape(-1, 2), 11).reshape(1, 16, -1)
    m = _matches([(0.80, TOKYO), (0.75, NEAR_PARIS)])
    _, log_density = match(_Fixed(m), torch.zeros(1, 3), coeffs, depth=2)
    assert log_density[0, 1] > log_density[0, 0]  # Paris holds more of the mixture
    everywhere = math.inf
    out, _ = choose(m, samples, FALLBACK, HybridRule("density", everywhere, 0.0), log_density)
    assert torch.allclose(out[0], torch.tensor(TOKYO, dtype=torch.float64))  # λ = 0: most similar
    out, _ = choose(m, samples, FALLBACK, HybridRule("density", everywhere, 0.1), log_density)
    assert torch.allclose(out[0], torch.tensor(NEAR_PARIS, dtype=torch.float64))  # density wins
    # the paper's radius rule cannot tell: a sample is at Tokyo, so Tokyo is in reach
    out, _ = choose(m, samples, FALLBACK, HybridRule("radius", 50.0))
    assert torch.allclose(out[0], torch.tensor(TOKYO, dtype=torch.float64))
    with pytest.raises(ValueError, match="density"):
        choose(m, samples, FALLBACK, HybridRule("density", 50.0, 0.1))


class _Fixed:
    """An EmbeddingRetriever that returns fixed matches."""

    id = "fixed"

    def __init__(self, m: Matches) -> None:
        self.m = m

    def __len__(self) -> int:
        return self.m.sims.shape[1]

    def search(self, queries, k):
        return self.m.sims[:, :k], self.m.latlon[:, :k]


def test_select_rule_chooses_the_radius_that_is_right_on_validation():
    # every query: truth near Paris, samples at Paris; the best overall match is far (Lyon), a weaker one near the truth
    n = 6
    m = Matches(torch.tensor([[0.9, 0.6]] * n), torch.tensor([[LYON, NEAR_PARIS]] * n, dtype=torch.float64))
    samples = _around(PARIS).repeat(n, 1, 1)
    truth = torch.tensor([NEAR_PARIS] * n, dtype=torch.float64)
    fallback = torch.tensor([TOKYO] * n, dtype=torch.float64)
    rule, table = select_rule(m, samples, fallback, truth, candidate_rules(("radius",), radii=(10.0, 50.0, 1000.0)))
    assert rule == HybridRule("radius", 50.0)  # 10 km: fallback (Tokyo); 1000 km: Lyon
    assert [r.radius_km for r, _, _ in table] == [10.0, 50.0, 1000.0]
    assert table[0][2] == 0.0 and table[1][2] == 1.0  # share answered by retrieval


def test_candidate_rules_sweep_every_rule_and_reject_unknown():
    rules = candidate_rules()
    assert {r.rule for r in rules} == {"radius", "density", "consensus"}
    assert any(math.isinf(r.radius_km) for r in rules if r.rule == "density")
    # weighted kNN-10 (λ = 0, any distance) with every (T, r) of its own sweep is among the consensus candidates
    knn = {(r.temperature, r.consensus_km) for r in rules if r.rule == "consensus" and r.lam == 0 and r.k == 10 and math.isinf(r.radius_km)}
    assert knn == {(t, r) for t in KNN_TEMPERATURES for r in KNN_RADII_KM}
    assert {r.radius_km for r in candidate_rules(("consensus",), radii=(300.0,))} == {300.0}
    with pytest.raises(ValueError):
        HybridRule("nearest", 10.0)
    with pytest.raises(ValueError):
        HybridRule("radius", 0.0)


def test_consensus_rule_with_no_density_weight_is_weighted_knn():
    """λ = 0, R = inf: the consensus rule answers exactly what the weighted kNN baseline answers, query by query."""
    g = torch.Generator().manual_seed(3)
    n, d, q = 400, 16, 60
    train = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    centres = torch.tensor([PARIS, LYON, TOKYO, (40.7, -74.0), (-33.9, 151.2)], dtype=torch.float64)
    latlon = centres[torch.randint(0, 5, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    queries = torch.nn.functional.normalize(train[:q] + 0.8 * torch.randn(q, d, generator=g), dim=1)
    for k, temp, r in ((10, 0.05, 25.0), (10, 1.0, 200.0), (20, 0.01, 750.0)):
        knn = KNNRetrieval.fit(train, latlon, k=k)
        knn.temperature, knn.radius_km = temp, r
        sims, idx = torch.topk(queries @ train.T, 64, dim=1)
        m = Matches(sims.float(), latlon[idx])
        rule = HybridRule("consensus", math.inf, 0.0, k, temp, r)
        out, used = choose(m, torch.zeros(q, 1, 2, dtype=torch.float64), torch.zeros(q, 2, dtype=torch.float64), rule)
        assert bool(used.all())
        assert torch.equal(out, knn.predict(queries).double())


def test_consensus_rule_lets_the_density_break_a_split_vote():
    """Two places with equal retrieval votes: λ > 0 picks the one the diffusion samples favour; λ = 0 the first."""
    m = _matches([(0.90, TOKYO), (0.90, PARIS), (0.80, TOKYO), (0.80, PARIS)])
    samples = _around(PARIS)
    log_q = torch.tensor([[-5.0, 3.0, -5.0, 3.0]], dtype=torch.float64)
    plain, _ = choose(m, samples, FALLBACK, HybridRule("consensus", math.inf, 0.0, 4, 0.05, 25.0), log_q)
    tilted, _ = choose(m, samples, FALLBACK, HybridRule("consensus", math.inf, 0.1, 4, 0.05, 25.0), log_q)
    assert torch.allclose(plain[0], torch.tensor(TOKYO, dtype=torch.float64))
    assert torch.allclose(tilted[0], torch.tensor(PARIS, dtype=torch.float64))
    inside, used = choose(m, samples, FALLBACK, HybridRule("consensus", 500.0, 0.0, 4, 0.05, 25.0), log_q)  # Tokyo out of reach
    assert bool(used[0]) and torch.allclose(inside[0], torch.tensor(PARIS, dtype=torch.float64))
    only_first, _ = choose(m, samples, FALLBACK, HybridRule("consensus", math.inf, 0.1, 1, 0.05, 25.0), log_q)  # k = 1: one voter
    assert torch.allclose(only_first[0], torch.tensor(TOKYO, dtype=torch.float64))


def test_a_consensus_rule_round_trips_through_its_dict():
    rule = HybridRule("consensus", math.inf, 0.03, 50, 0.02, 200.0)
    assert HybridRule.from_dict(rule.to_dict()) == rule
    assert "k=50" in rule.describe() and "λ=0.03" in rule.describe()
    assert HybridRule.from_dict({"rule": "density", "radius_km": 750.0, "lam": 0.03}) == HybridRule("density", 750.0, 0.03)
    with pytest.raises(ValueError, match="hybrid rule"):
        HybridRule.from_dict({"rule": "consensus", "radius_km": 750.0, "k": 0})


# --------------------------------------------------------------------------- the memory-mapped gallery
def _random_gallery(n=53, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=g)
    latlon = torch.stack((torch.rand(n, generator=g) * 160 - 80, torch.rand(n, generator=g) * 360 - 180), 1).double()
    return vectors, latlon


def test_search_equals_brute_force_topk_across_chunks(tmp_path):
    vectors, latlon = _random_gallery()
    gallery = GalleryCache(tmp_path, chunk=7).open(vectors, latlon, embedder_id="test/emb")
    assert isinstance(gallery.vectors, np.memmap)  # read memory-mapped, not loaded
    queries = torch.randn(11, 8, generator=torch.Generator().manual_seed(1))
    sims, where = gallery.search(queries, 5)
    full = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(vectors, dim=1).T
    best, idx = full.topk(5, dim=1)
    assert torch.allclose(sims, best, atol=1e-6)
    assert torch.equal(where, latlon[idx])
    sims, where = gallery.search(queries[:2], 60)  # more than the gallery holds: padded
    assert torch.isinf(sims[:, 53:]).all() and torch.isnan(where[:, 53:]).all() and torch.isfinite(sims[:, :53]).all()


def test_gallery_cache_is_reused_and_rebuilt_when_the_training_data_changes(tmp_path):
    vectors, latlon = _random_gallery()
    cache = GalleryCache(tmp_path)
    first = cache.open(vectors, latlon, embedder_id="emb")
    stamp = (first.directory / "vectors.npy").stat().st_mtime_ns
    again = GalleryCache(tmp_path).open(vectors.clone(), latlon.clone(), embedder_id="emb")
    assert again.directory == first.directory and (again.directory / "vectors.npy").stat().st_mtime_ns == stamp
    assert cache.builds == 1
    moved = latlon.clone()
    moved[3, 0] += 1.0  # one training location changed
    other = cache.open(vectors, moved, embedder_id="emb")
    assert other.directory != first.directory and cache.builds == 2
    assert cache.open(vectors, latlon, embedder_id="other-embedder").directory not in (first.directory, other.directory)
    (first.directory / "meta.json").write_text("{broken")  # a damaged folder is written again
    fixed = GalleryCache(tmp_path).open(vectors, latlon, embedder_id="emb")
    assert fixed.meta["size"] == 53 and isinstance(MappedGallery(fixed.directory).vectors, np.memmap)


def test_gallery_refuses_bad_input(tmp_path):
    vectors, latlon = _random_gallery()
    cache = GalleryCache(tmp_path)
    with pytest.raises(ValueError, match="same N"):
        cache.open(vectors[:5], latlon, embedder_id="e")
    with pytest.raises(ValueError, match="empty"):
        cache.open(vectors[:0], latlon[:0], embedder_id="e")
    bad = vectors.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.open(bad, latlon, embedder_id="e")
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        cache.open(vectors, latlon, embedder_id="e").search(torch.zeros(2, 3), 1)


def test_gallery_holds_the_training_split_only(tmp_path):
    vectors, latlon = _random_gallery(n=40)
    ids = tuple(f"i{i}" for i in range(40))
    splits = {"train": torch.arange(0, 30), "val": torch.arange(30, 35), "test": torch.arange(35, 40),
              "holdout": torch.empty(0, dtype=torch.long)}
    data = PreparedData("toy", vectors, latlon, ids, ids, splits, "emb")
    gallery = gallery_of(GalleryCache(tmp_path), data)
    assert len(gallery) == 30
    held = torch.cat((splits["val"], splits["test"]))
    sims, where = gallery.search(vectors[held], 30)
    # the query's own vector is not in the gallery: no similarity of 1, and its own location never returned
    assert float(sims.max()) < 0.9999
    for row, i in enumerate(held.tolist()):
        assert not (where[row] == latlon[i]).all(-1).any()
    # a fixed rule end to end: points come from training locations or the fallback
    samples = latlon[held][:, None, :].repeat(1, 3, 1)
    points, used = refine_with_gallery(gallery, vectors[held], samples, latlon[held], HybridRule("radius", 20000.0))
    assert bool(used.all())
    train_set = {tuple(p) for p in latlon[:30].tolist()}
    assert all(tuple(p) in train_set for p in points.tolist())


def test_hybrid_rule_file_round_trip(tmp_path):
    ckpt = tmp_path / "run-0001" / "checkpoints" / "step-00000100"
    ckpt.mkdir(parents=True)
    rule = HybridRule("density", math.inf, 0.03)
    path = save_hybrid_rule(ckpt, HybridSelection(rule, ((rule, 50.0, 1.0),), 10).to_dict())
    assert path == tmp_path / "run-0001" / "hybrid.json"
    assert load_hybrid_rule(ckpt) == rule
    other = tmp_path / "run-0001" / "checkpoints" / "step-00000200"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_hybrid_rule(other) is None
    assert any("chosen for checkpoint" in str(w.message) for w in caught)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="hybrid.json"):
        load_hybrid_rule(ckpt)
