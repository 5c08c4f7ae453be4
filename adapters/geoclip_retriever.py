"""The ``Retriever`` port on GeoCLIP: gallery retrieval restricted to a radius around candidates.

Uses the ``geoclip`` package's bundled weights (location encoder, the 768->512 image MLP head,
the logit scale) and its 100K GPS gallery. Images are embedded by our :class:`OpenClipEmbedder`
(CLIP ViT-L/14, OpenAI weights, QuickGELU): GeoCLIP's own ``ImageEncoder`` feeds its MLP the
*projected, un-normalised* output of ``CLIPModel.get_image_features`` (768-d), which is what
``OpenClipEmbedder.embed_images_raw`` returns. The MLP output and the location features are
L2-normalised and compared with GeoCLIP's ``logit_scale.exp()``, exactly as in ``GeoCLIP.forward``.

GeoCLIP re-encodes the whole gallery on every ``predict``; here gallery features are computed once
and cached on disk as ``.npy`` (keyed by a hash of the weights and the gallery, written atomically).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locdiff.ports import ItemFailure
from adapters.atomic import atomic_open

__all__ = ["GeoClipRetriever", "Retrieval", "EARTH_RADIUS_KM", "geoclip_weights_dir", "default_cache_dir"]

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088
IMAGE_FEATURE_DIM = 768
_CACHE_FORMAT = b"locdiff-geoclip-gallery-v1"
_WEIGHT_FILES = ("location_encoder_weights.pth", "image_encoder_mlp_weights.pth", "logit_scale_weights.pth")


def geoclip_weights_dir() -> Path:
    """The ``weights/`` folder bundled inside the installed ``geoclip`` package."""
    from geoclip.model.misc import file_dir

    return Path(file_dir) / "weights"


def default_cache_dir() -> Path:
    return Path(os.environ.get("LOCDIFF_CACHE", Path.home() / ".cache" / "locdiff")) / "geoclip"


@attrs.frozen
class Retrieval:
    """``latlon`` [B, top_k, 2] float64 degrees and ``probs`` [B, top_k]; NaN/0 pads missing rows."""

    latlon: torch.Tensor
    probs: torch.Tensor
    failures: tuple[ItemFailure, ...] = ()


class _LatitudeIndex:
    """Gallery points sorted by latitude: a radius query only visits the latitude band it can reach.

    The great-circle angle between two points is at least their latitude difference, so the band
    ``|lat - lat_c| <= radius / R`` holds every point within the radius; inside it the test is an
    exact float64 haversine (coincident points are at distance 0), compared without the ``asin``.
    """

    def __init__(self, latlon_deg: torch.Tensor) -> None:
        rad = torch.deg2rad(latlon_deg.to(torch.float64))
        self.order = torch.argsort(rad[:, 0])
        self.lat = rad[self.order, 0].contiguous()
        self.lon = rad[self.order, 1].contiguous()
        self.cos_lat = self.lat.cos()

    def within(self, centres_deg: torch.Tensor, radius_km: float) -> torch.Tensor:
        """Indices (into the original order, ascending) of points within ``radius_km`` of a centre."""
        angle = radius_km / EARTH_RADIUS_KM
        if angle >= math.pi:
            return torch.arange(len(self.lat))
        limit = math.sin(angle / 2) ** 2
        hit = torch.zeros(len(self.lat), dtype=torch.bool)
        centres = torch.deg2rad(centres_deg.to(torch.float64))
        bounds = torch.stack((centres[:, 0] - angle, centres[:, 0] + angle), dim=1)
        lo = torch.searchsorted(self.lat, bounds[:, 0].contiguous(), side="left").tolist()
        hi = torch.searchsorted(self.lat, bounds[:, 1].contiguous(), side="right").tolist()
        for (clat, clon), a, b in zip(centres.tolist(), lo, hi):
            if a >= b:
                continue
            h = torch.sin((self.lon[a:b] - clon) / 2).square_().mul_(self.cos_lat[a:b] * math.cos(clat))
            h.add_(torch.sin((self.lat[a:b] - clat) / 2).square_())
            hit[a:b] |= h <= limit
        return torch.sort(self.order[hit]).values


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.digest()


class GeoClipRetriever:
    """GeoCLIP retrieval among gallery points within ``radius_km`` of some candidate.

    ``embedder`` (768-d ViT-L/14 ``OpenClipEmbedder``) is needed only by :meth:`retrieve`;
    :meth:`retrieve_features` takes image features directly. ``gallery`` [N, 2] defaults to
    GeoCLIP's 100K points. Gallery features load lazily on first use (disk cache or encoding).
    """

    def __init__(
        self,
        embedder: Any | None = None,
        *,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        gallery: torch.Tensor | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        encode_batch: int = 8192,
        progress: bool = True,
    ) -> None:
        from geoclip import LocationEncoder
        from geoclip.model.misc import file_dir, load_gps_data

        if embedder is not None and getattr(embedder, "dim", IMAGE_FEATURE_DIM) != IMAGE_FEATURE_DIM:
            raise ValueError(
                f"GeoCLIP needs {IMAGE_FEATURE_DIM}-d CLIP ViT-L/14 image features; "
                f"embedder {getattr(embedder, 'id', embedder)!r} gives {embedder.dim}"
            )
        self.embedder = embedder
        self.device = torch.device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.encode_batch = encode_batch
        self.progress = progress
        wdir = Path(weights_dir) if weights_dir is not None else geoclip_weights_dir()
        for name in _WEIGHT_FILES:
            if not (wdir / name).is_file():
                raise FileNotFoundError(f"{wdir / name}: GeoCLIP weight file missing")

        def load(name: str) -> Any:
            return torch.load(wdir / name, map_location="cpu", weights_only=True)

        self.location_encoder = LocationEncoder(from_pretrained=False)
        self.location_encoder.load_state_dict(load("location_encoder_weights.pth"))
        self.location_encoder.to(self.device).eval()
        self.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))
        self.mlp.load_state_dict(load("image_encoder_mlp_weights.pth"))
        self.mlp.to(self.device).eval()
        self.logit_scale = float(torch.as_tensor(load("logit_scale_weights.pth")).exp())

        if gallery is None:
            gallery = load_gps_data(os.path.join(file_dir, "gps_gallery", "coordinates_100K.csv"))
        gallery = torch.as_tensor(gallery, dtype=torch.float32).cpu().contiguous()
        if gallery.ndim != 2 or gallery.shape[1] != 2 or len(gallery) == 0:
            raise ValueError(f"gallery must be a non-empty [N, 2] (lat, lon) tensor, got {tuple(gallery.shape)}")
        if not torch.isfinite(gallery).all() or (gallery[:, 0].abs() > 90).any() or (gallery[:, 1].abs() > 180).any():
            raise ValueError("gallery must hold finite (lat, lon) degrees with |lat| <= 90 and |lon| <= 180")
        self.gallery = gallery  # [N, 2] float32, as GeoCLIP keeps it
        self._index = _LatitudeIndex(gallery)
        digest = hashlib.sha256(_CACHE_FORMAT)
        for name in _WEIGHT_FILES:
            digest.update(_sha256_file(wdir / name))
        self._weights_key = digest.hexdigest()
        digest.update(gallery.numpy().tobytes())
        self.cache_key = digest.hexdigest()[:32]
        self._features: torch.Tensor | None = None
        self.cache_hit: bool | None = None  # after loading: True if read from disk, False if encoded

    # ------------------------------------------------------------------ gallery features
    @property
    def id(self) -> str:
        emb = getattr(self.embedder, "id", "no-embedder")
        return f"geoclip:{self._weights_key[:12]}:gallery{len(self.gallery)}+{emb}"

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / f"geoclip_gallery_{self.cache_key}.npy"

    @torch.no_grad()
    def encode_locations(self, latlon: torch.Tensor) -> torch.Tensor:
        """L2-normalised GeoCLIP location features [N, 512] (float32, on ``device``)."""
        out = []
        batches = range(0, len(latlon), self.encode_batch)
        if self.progress and len(latlon) > self.encode_batch:
            from tqdm import tqdm

            batches = tqdm(batches, desc="encode GeoCLIP gallery", unit="batch", leave=False)
        for start in batches:
            chunk = latlon[start : start + self.encode_batch].to(self.device, torch.float32)
            out.append(F.normalize(self.location_encoder(chunk), dim=1))
        return torch.cat(out)

    def _read_cache(self) -> torch.Tensor | None:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("%s: corrupt GeoCLIP gallery cache (%s); re-encoding", path, exc)
            return None
        if arr.shape != (len(self.gallery), 512) or arr.dtype != np.float32 or not np.isfinite(arr).all():
            log.warning("%s: GeoCLIP gallery cache has shape %s dtype %s, expected (%d, 512) float32; "
                        "re-encoding", path, arr.shape, arr.dtype, len(self.gallery))
            return None
        return torch.from_numpy(arr)

    def _write_cache(self, features: np.ndarray) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.cache_path, "wb") as f:
            np.save(f, features, allow_pickle=False)

    def gallery_features(self) -> torch.Tensor:
        """[N, 512] normalised gallery features on ``device``: from the disk cache or encoded once."""
        if self._features is None:
            cached = self._read_cache()
            if cached is not None:
                self.cache_hit = True
                self._features = cached.to(self.device)
            else:
                self.cache_hit = False
                feats = self.encode_locations(self.gallery)
                self._write_cache(feats.float().cpu().numpy())
                self._features = feats
        return self._features

    # ------------------------------------------------------------------ retrieval
    @torch.no_grad()
    def embed_image_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """GeoCLIP image embedding: MLP head on raw CLIP features, L2-normalised [B, 512]."""
        return F.normalize(self.mlp(image_features.to(self.device, torch.float32)), dim=1)

    def retrieve_features(
        self, image_features: torch.Tensor, candidates: torch.Tensor, radius_km: float, top_k: int = 5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``top_k`` gallery points for raw CLIP ViT-L/14 features ``image_features`` [B, 768].

        Eligible points are the gallery points within ``radius_km`` (great circle, Earth radius
        6371.0088 km) of at least one of that input's ``candidates`` [B, K, 2]; probabilities are
        GeoCLIP's softmax (``logit_scale.exp() * cosine``) over the eligible points only. If no
        gallery point is eligible, the candidates themselves are scored instead (fallback). When
        fewer than ``top_k`` points are eligible, the rest of the row is NaN with probability 0.
        Returns (latlon [B, top_k, 2] float64 on CPU, probs [B, top_k] float32 on CPU).
        """
        feats, cands = self._check(image_features, candidates, radius_km, top_k)
        gallery_feats = self.gallery_features()
        embedded = self.embed_image_features(feats)  # [B, 512]
        all_logits = (self.logit_scale * embedded @ gallery_feats.T).float().cpu()  # [B, N]
        B = len(embedded)
        latlon = torch.full((B, top_k, 2), math.nan, dtype=torch.float64)
        probs = torch.zeros(B, top_k, dtype=torch.float32)
        for b in range(B):
            eligible = self._index.within(cands[b], radius_km)
            if len(eligible):
                logits = all_logits[b, eligible]
            else:  # fallback: no gallery point near any candidate -> rank the candidates
                logits = (self.logit_scale * (self.encode_locations(cands[b]) @ embedded[b])).float().cpu()
            p = torch.softmax(logits, dim=0)
            best = torch.topk(p, min(top_k, len(p)))
            k = len(best.values)
            points = self.gallery[eligible[best.indices]].double() if len(eligible) else cands[b][best.indices]
            latlon[b, :k] = points
            probs[b, :k] = best.values
        return latlon, probs

    def retrieve_paths(
        self, images: Sequence[Path], candidates: torch.Tensor, radius_km: float, top_k: int = 5
    ) -> Retrieval:
        """:meth:`retrieve_features` on images embedded by ``embedder``; failed images give NaN rows."""
        if self.embedder is None:
            raise RuntimeError(
                "GeoClipRetriever.retrieve needs an image embedder: pass "
                "embedder=OpenClipEmbedder('ViT-L-14', pretrained=..., quick_gelu=True)"
            )
        if len(candidates) != len(images):
            raise ValueError(f"{len(images)} images but candidates for {len(candidates)}")
        embedded = self.embedder.embed_images_raw(list(images))
        latlon = torch.full((len(images), top_k, 2), math.nan, dtype=torch.float64)
        probs = torch.zeros(len(images), top_k, dtype=torch.float32)
        if embedded.index:
            rows = torch.tensor(embedded.index, dtype=torch.long)
            ll, pp = self.retrieve_features(embedded.vectors, torch.as_tensor(candidates)[rows], radius_km, top_k)
            latlon[rows], probs[rows] = ll, pp
        if embedded.failures:
            log.warning("GeoCLIP retrieval skipped %d unreadable image(s)", len(embedded.failures))
        return Retrieval(latlon, probs, tuple(embedded.failures))

    def retrieve(
        self, images: Sequence[Path], candidates: torch.Tensor, radius_km: float, top_k: int = 5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``Retriever`` port; see :meth:`retrieve_features` (unreadable images: NaN, prob 0)."""
        result = self.retrieve_paths(images, candidates, radius_km, top_k)
        return result.latlon, result.probs

    @staticmethod
    def _check(
        image_features: torch.Tensor, candidates: torch.Tensor, radius_km: float, top_k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.as_tensor(image_features)
        cands = torch.as_tensor(candidates).to(torch.float64).cpu()
        if feats.ndim != 2 or feats.shape[1] != IMAGE_FEATURE_DIM:
            raise ValueError(f"image_features must be [B, {IMAGE_FEATURE_DIM}], got {tuple(feats.shape)}")
        if cands.ndim != 3 or cands.shape[2] != 2 or cands.shape[0] != feats.shape[0] or cands.shape[1] < 1:
            raise ValueError(
                f"candidates must be [B={feats.shape[0]}, K>=1, 2] (lat, lon), got {tuple(cands.shape)}"
            )
        if not torch.isfinite(cands).all() or (cands[..., 0].abs() > 90).any():
            raise ValueError("candidates must be finite (lat, lon) degrees with |lat| <= 90")
        if not torch.isfinite(feats).all():
            raise ValueError("image_features contain NaN or infinity")
        if not (radius_km >= 0):  # also rejects NaN
            raise ValueError(f"radius_km must be >= 0, got {radius_km}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return feats, cands
