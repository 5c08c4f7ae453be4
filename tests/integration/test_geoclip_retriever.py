"""adapters.geoclip_retriever: GeoCLIP's bundled weights, radius-restricted retrieval, gallery cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("geoclip")

from adapters.clip_embedder import OpenClipEmbedder  # noqa: E402
from tests.support.tiny_clip import save_tiny_test_model  # noqa: E402
from adapters.geoclip_retriever import EARTH_RADIUS_KM, GeoClipRetriever, geoclip_weights_dir  # noqa: E402
from locdiff.ports import Retriever  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
GALLERY_SIZE = 1500  # a slice of GeoCLIP's 100K gallery keeps encoding fast on a CPU


def haversine_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle distance between (lat, lon) rows of ``a`` [..., 2] and ``b`` [..., 2] (float64)."""
    la1, lo1, la2, lo2 = (torch.deg2rad(x.double()) for x in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))
    h = torch.sin((la2 - la1) / 2) ** 2 + torch.cos(la1) * torch.cos(la2) * torch.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(h.clamp(0, 1)))


@pytest.fixture(scope="module")
def full_gallery() -> torch.Tensor:
    return GeoClipRetriever(progress=False, cache_dir="/nonexistent-unused").gallery


@pytest.fixture(scope="module")
def small_gallery(full_gallery: torch.Tensor) -> torch.Tensor:
    return full_gallery[:GALLERY_SIZE].clone()


@pytest.fixture(scope="module")
def retriever(small_gallery: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> GeoClipRetriever:
    r = GeoClipRetriever(gallery=small_gallery, cache_dir=tmp_path_factory.mktemp("gcache"), progress=False)
    r.gallery_features()
    return r


def test_bundled_weights_and_gallery_load_offline(full_gallery: torch.Tensor) -> None:
    import geoclip
    from geoclip import LocationEncoder

    wdir = geoclip_weights_dir()
    assert Path(geoclip.__file__).parent in wdir.parents
    assert full_gallery.shape == (100_000, 2)
    assert (full_gallery[:, 0].abs() <= 90).all() and (full_gallery[:, 1].abs() <= 180).all()
    r = GeoClipRetriever(gallery=full_gallery[:10], cache_dir="/nonexistent-unused", progress=False)
    reference = LocationEncoder()  # geoclip loads its own bundled weights
    ours, theirs = r.location_encoder.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    mlp = torch.load(wdir / "image_encoder_mlp_weights.pth", map_location="cpu", weights_only=True)
    assert mlp["0.weight"].shape == (768, 768) and mlp["2.weight"].shape == (512, 768)
    assert torch.equal(r.mlp.state_dict()["2.weight"], mlp["2.weight"])
    scale = torch.load(wdir / "logit_scale_weights.pth", map_location="cpu", weights_only=True)
    assert r.logit_scale == pytest.approx(float(scale.exp()))
    points = torch.tensor([[48.8566, 2.3522], [-33.87, 151.21]])
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference(points), dim=1)
    torch.testing.assert_close(r.encode_locations(points), want)


def test_matches_geoclip_scoring_when_nothing_is_excluded(retriever: GeoClipRetriever,
                                                          small_gallery: torch.Tensor) -> None:
    from geoclip import LocationEncoder

    torch.manual_seed(1)
    feats = torch.randn(3, 768)
    cands = torch.zeros(3, 1, 2)
    latlon, probs = retriever.retrieve_features(feats, cands, radius_km=math.pi * EARTH_RADIUS_KM, top_k=4)
    # GeoCLIP.forward: normalised MLP(image) against normalised location features, times exp(scale)
    with torch.no_grad():
        img = torch.nn.functional.normalize(retriever.mlp(feats), dim=1)
        loc = torch.nn.functional.normalize(LocationEncoder()(small_gallery), dim=1)
    want = torch.softmax(retriever.logit_scale * img @ loc.T, dim=1).topk(4, dim=1)
    torch.testing.assert_close(probs, want.values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(latlon, small_gallery[want.indices].double())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_inputs=st.integers(1, 3),
    n_candidates=st.integers(1, 4),
    radius_km=st.one_of(st.floats(0.0, 3000.0), st.sampled_from([0.0, 1.0, 20_000.0])),
    top_k=st.integers(1, 12),
)
def test_every_result_lies_within_the_radius_of_a_candidate(
    retriever: GeoClipRetriever, seed: int, n_inputs: int, n_candidates: int, radius_km: float, top_k: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_inputs, 768, generator=g) * 3
    # half of the candidates sit on gallery points (so something is eligible), the rest anywhere
    pick = retriever.gallery[torch.randint(len(retriever.gallery), (n_inputs, n_candidates), generator=g)]
    anywhere = torch.stack(
        (torch.rand(n_inputs, n_candidates, generator=g) * 180 - 90,
         torch.rand(n_inputs, n_candidates, generator=g) * 360 - 180), dim=-1)
    use_pick = torch.rand(n_inputs, n_candidates, 1, generator=g) < 0.5
    cands = torch.where(use_pick, pick, anywhere).double()
    latlon, probs = retriever.retrieve_features(feats, cands, radius_km, top_k)
    assert latlon.shape == (n_inputs, top_k, 2) and probs.shape == (n_inputs, top_k)
    for b in range(n_inputs):
        dist = haversine_km(retriever.gallery.double()[:, None, :], cands[b][None, :, :]).min(dim=1).values
        n_eligible = int((dist <= radius_km).sum())
        valid = ~torch.isnan(latlon[b, :, 0])
        assert (probs[b][~valid] == 0).all()
        assert (probs[b][valid] > 0).all() and (probs[b][valid].diff() <= 1e-7).all()
        points = latlon[b][valid]
        to_cands = haversine_km(points[:, None, :], cands[b][None, :, :]).min(dim=1).values
        if n_eligible == 0 and int(((dist <= radius_km + 1e-6)).sum()) == 0:
            # fallback: the candidates themselves were ranked
            assert (to_cands < 1e-9).all() and valid.sum() == min(top_k, n_candidates)
            assert probs[b].sum() <= 1 + 1e-5
        else:
            assert (to_cands <= radius_km + 1e-6 + 1e-9 * radius_km).all()
            assert valid.sum() >= min(top_k, n_eligible)
            assert probs[b].sum() <= 1 + 1e-5


def test_fallback_to_candidates_when_no_gallery_point_is_near(retriever: GeoClipRetriever) -> None:
    ocean = torch.tensor([[[-48.0, -125.0], [-50.0, -130.0]]], dtype=torch.float64)  # Point Nemo area
    dist = haversine_km(retriever.gallery.double()[:, None, :], ocean[0][None]).min()
    assert dist > 50
    latlon, probs = retriever.retrieve_features(torch.randn(1, 768), ocean, radius_km=5.0, top_k=3)
    assert {tuple(p) for p in latlon[0, :2].tolist()} == {tuple(p) for p in ocean[0].tolist()}
    assert torch.isnan(latlon[0, 2]).all() and probs[0, 2] == 0
    assert probs[0, :2].sum() == pytest.approx(1.0, abs=1e-6)


def test_cache_hit_skips_gallery_encoding(small_gallery: torch.Tensor, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cold = GeoClipRetriever(gallery=small_gallery[:300], cache_dir=tmp_path, progress=False)
    features = cold.gallery_features()
    assert cold.cache_hit is False and cold.cache_path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [cold.cache_path.name]  # no temp file left

    def must_not_encode(self: GeoClipRetriever, latlon: torch.Tensor) -> torch.Tensor:
        raise AssertionError("gallery was re-encoded despite a cache hit")

    warm = GeoClipRetriever(gallery=small_gallery[:300], cache_dir=tmp_path, progress=False)
    with monkeypatch.context() as m:
        m.setattr(GeoClipRetriever, "encode_locations", must_not_encode)
        cached = warm.gallery_features()
    assert warm.cache_hit is True and torch.equal(cached, features)
    # another gallery is another key; a damaged cache file is re-encoded, not trusted
    other = GeoClipRetriever(gallery=small_gallery[:200], cache_dir=tmp_path, progress=False)
    assert other.cache_path != cold.cache_path
    cold.cache_path.write_bytes(b"\x93NUMPY garbage")
    again = GeoClipRetriever(gallery=small_gallery[:300], cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(again.gallery_features(), features)
    assert again.cache_hit is False
    assert np.load(again.cache_path).shape == (300, 512)


def test_bad_arguments(retriever: GeoClipRetriever, tmp_path: Path) -> None:
    feats, cands = torch.randn(2, 768), torch.zeros(2, 3, 2)
    with pytest.raises(ValueError, match=r"image_features must be \[B, 768\]"):
        retriever.retrieve_features(torch.randn(2, 512), cands, 10.0)
    with pytest.raises(ValueError, match="candidates must be"):
        retriever.retrieve_features(feats, torch.zeros(3, 3, 2), 10.0)
    with pytest.raises(ValueError, match="radius_km"):
        retriever.retrieve_features(feats, cands, float("nan"))
    with pytest.raises(ValueError, match="top_k"):
        retriever.retrieve_features(feats, cands, 10.0, top_k=0)
    with pytest.raises(ValueError, match="|lat| <= 90"):
        retriever.retrieve_features(feats, torch.full((2, 3, 2), 95.0), 10.0)
    small = OpenClipEmbedder(pretrained=save_tiny_test_model(tmp_path / "d32"), progress=False)
    with pytest.raises(ValueError, match="needs 768-d"):
        GeoClipRetriever(small, gallery=retriever.gallery, progress=False)
    with pytest.raises(RuntimeError, match="needs an image embedder"):
        retriever.retrieve([DATA / "photos" / "bay-area-1.jpg"], torch.zeros(1, 1, 2), 10.0)


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> OpenClipEmbedder:
    root = tmp_path_factory.mktemp("tiny768")
    return OpenClipEmbedder(pretrained=save_tiny_test_model(root, embed_dim=768), progress=False)


def test_retrieve_images_end_to_end_with_a_failing_file(retriever: GeoClipRetriever,
                                                        tiny_embedder: OpenClipEmbedder) -> None:
    r = GeoClipRetriever(tiny_embedder, gallery=retriever.gallery, cache_dir=retriever.cache_dir, progress=False)
    assert isinstance(r, Retriever) and tiny_embedder.id in r.id
    images = [DATA / "photos" / "bay-area-1.jpg", DATA / "corrupt" / "truncated_jpeg.jpg",
              DATA / "photos" / "stockholm-panorama.jpg"]
    cands = retriever.gallery[:3][:, None, :].double().repeat(1, 2, 1)
    result = r.retrieve_paths(images, cands, radius_km=2000.0, top_k=3)
    assert r.cache_hit is True
    assert [Path(f.item).name for f in result.failures] == ["truncated_jpeg.jpg"]
    assert torch.isnan(result.latlon[1]).all() and (result.probs[1] == 0).all()
    assert torch.isfinite(result.latlon[[0, 2]]).all() and (result.probs[[0, 2]] > 0).all()
    raw = tiny_embedder.embed_images_raw([images[0]]).vectors
    want_ll, want_p = r.retrieve_features(raw, cands[:1], 2000.0, 3)
    torch.testing.assert_close(result.latlon[:1], want_ll)
    torch.testing.assert_close(result.probs[:1], want_p)
    latlon, probs = r.retrieve(images, cands, 2000.0, 3)
    torch.testing.assert_close(latlon, result.latlon, equal_nan=True)
