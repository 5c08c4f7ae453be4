"""Use case LocDiff-H: retrieval restricted to a radius around the diffusion samples (paper §5.2, "Ours + GeoCLIP").

Two galleries (:data:`HYBRID_SOURCES`, the one source of ``--hybrid``'s choices):

* ``gallery`` — any embedder: the model's own training split (embeddings + locations) searched by cosine
  similarity through the ``EmbeddingRetriever`` port; the rule (:mod:`locdiff.core.hybrid`: the paper's radius
  rule or the density-weighted variant) and its ``R`` / ``λ`` chosen on the validation split
  (:func:`select_on_validation`), never on test. Val / test / held-out items are never in the gallery.
* ``geoclip`` — image datasets: GeoCLIP's 100K GPS gallery through the ``Retriever`` port (:func:`evaluate_hybrid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from locdiff.core.hybrid import DENSITY_RULES, HYBRID_RULES, HybridRule, Matches, candidate_rules, choose, select_rule
from locdiff.core.metrics import summarize
from locdiff.core.sampling import SamplingSettings
from locdiff.core.scores import accuracy_intervals, mixture_log_density
from locdiff.ports import EmbeddingRetriever, GalleryProvider, Retriever

#: Where LocDiff-H retrieves from (``--hybrid gallery|geoclip``); the first is the default.
HYBRID_SOURCES = ("gallery", "geoclip")
#: Gallery matches examined per query (top-k by cosine similarity) before the radius restriction.
DEFAULT_DEPTH = 512


def refine_with_retrieval(
    retriever: Retriever,
    images: list[Path],
    samples: torch.Tensor,
    fallback: torch.Tensor,
    *,
    radius_km: float = 200.0,
    batch: int = 64,
) -> torch.Tensor:
    """Top retrieved gallery location within ``radius_km`` of some sample, per image: ``[B, 2]``.

    ``samples`` [B, K, 2] are the decoded diffusion candidates; where retrieval returns nothing
    (unreadable image, empty neighbourhood) the ``fallback`` point [B, 2] is kept.
    """
    out = fallback.clone().double()
    for start in range(0, len(images), batch):
        latlon, _ = retriever.retrieve(images[start : start + batch], samples[start : start + batch], radius_km, top_k=1)
        top = latlon[:, 0].double()
        ok = torch.isfinite(top).all(-1)
        out[start : start + batch][ok] = top[ok]
    return out


def evaluate_hybrid(retriever: Retriever, data, split: str, evaluation, *, radius_km: float = 200.0, store=None,
                    run_id: int | None = None) -> dict[str, float]:
    """LocDiff-H metrics on the items an :class:`~locdiff.services.evaluation.Evaluation` covered (an image dataset)."""
    index = data.splits[split][: evaluation.truth.shape[0]]
    images = [Path(data.items[i]) for i in index.tolist()]
    if not all(p.suffix for p in images):
        raise ValueError("--hybrid needs an image dataset (GeoCLIP retrieves with image features)")
    refined = refine_with_retrieval(retriever, images, evaluation.samples, evaluation.predictions, radius_km=radius_km)
    metrics = summarize(refined, evaluation.truth)
    if store is not None and run_id is not None:
        store.add_evaluation(run_id, f"{data.name}:{split}:hybrid{radius_km:g}km", metrics)
    return metrics


# --------------------------------------------------------------------------- the training split as a gallery (any embedder)
def gallery_of(provider: GalleryProvider, data) -> EmbeddingRetriever:
    """The gallery of a :class:`~locdiff.services.data.PreparedData`: its ``train`` split only (no val/test/held-out item)."""
    train = data.splits["train"]
    return provider.open(data.cond[train], data.latlon[train], embedder_id=data.embedder_id)


def match(retriever: EmbeddingRetriever, cond: torch.Tensor, coeffs: torch.Tensor | None = None, *, depth: int = DEFAULT_DEPTH,
          ) -> tuple[Matches, torch.Tensor | None]:
    """Each query's top-``depth`` gallery matches and (with the samples' SHDD ``coeffs`` [B, K, D]) the samples'
    mixture log density at every match [B, depth] (for the density rule; -inf at padding)."""
    sims, latlon = retriever.search(cond, depth)
    matches = Matches(sims.float(), latlon.double())
    if coeffs is None:
        return matches, None
    batch = max(1, (1 << 23) // (depth * coeffs.shape[-1]))  # the harmonics of a batch's matches: <= 64 MiB
    pad = ~torch.isfinite(latlon).all(-1)
    where = latlon.double().masked_fill(pad[..., None], 0.0)
    parts = [mixture_log_density(coeffs[s : s + batch].double(), where[s : s + batch]) for s in range(0, len(matches), batch)]
    return matches, torch.cat(parts).masked_fill(pad, -torch.inf)


@attrs.frozen
class HybridSelection:
    """The rule chosen on validation and the sweep behind it: (rule, mean accuracy %, share answered by retrieval)."""

    rule: HybridRule
    sweep: tuple[tuple[HybridRule, float, float], ...]
    items: int

    def to_dict(self) -> dict:
        return self.rule.to_dict() | {"chosen_on": f"validation ({self.items} items)",
                                     "sweep": [r.to_dict() | {"score": s, "retrieved": u} for r, s, u in self.sweep]}


def select_on_validation(retriever: EmbeddingRetriever, bundle, data, sampling: SamplingSettings, *, device: torch.device,
                         rules: Sequence[str] = HYBRID_RULES, radius_km: float | None = None, max_items: int | None = 500,
                         depth: int = DEFAULT_DEPTH, progress=None) -> HybridSelection:
    """Sample the validation items of ``data`` (the model's training data), sweep the rules' R (and λ) and keep the best
    mean accuracy over the five scales. ``radius_km`` fixes R (only λ is swept)."""
    from locdiff.services.sampling import predict_locations

    index = data.splits.get("val", torch.empty(0, dtype=torch.long))[:max_items]
    if index.numel() == 0:
        raise ValueError(f"dataset {data.name!r} has no validation items to choose the hybrid radius on; give --hybrid-radius KM")
    density = any(r in DENSITY_RULES for r in rules)
    points, samples, coeffs = predict_locations(bundle, data.cond[index], sampling, device=device, progress=progress,
                                                keep_coefficients=density)
    matches, log_density = match(retriever, data.cond[index], coeffs if density else None, depth=depth)
    radii = (radius_km,) if radius_km is not None else None
    candidates = candidate_rules(rules, radii)
    rule, table = select_rule(matches, samples, points, data.latlon[index], candidates, log_density)
    return HybridSelection(rule, tuple(table), int(index.numel()))


def refine_with_gallery(retriever: EmbeddingRetriever, cond: torch.Tensor, samples: torch.Tensor, fallback: torch.Tensor,
                        rule: HybridRule, coeffs: torch.Tensor | None = None, *, depth: int = DEFAULT_DEPTH
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """LocDiff-H points [B, 2] and whether retrieval answered [B] (else the LocDiffusion ``fallback``)."""
    if rule.reads_density and coeffs is None:
        raise ValueError(f"the {rule.rule} rule needs the samples' SHDD codes")
    matches, log_density = match(retriever, cond, coeffs if rule.reads_density else None, depth=depth)
    return choose(matches, samples, fallback, rule, log_density)


def hybrid_metrics(points: torch.Tensor, truth: torch.Tensor, used: torch.Tensor) -> dict[str, float]:
    """Accuracy, median, GeoScore, 95 % bootstrap intervals of every accuracy, and the share answered by retrieval (%)."""
    return accuracy_intervals(points, truth) | {"retrieved_pct": 100.0 * float(used.double().mean())}


def evaluate_gallery_hybrid(retriever: EmbeddingRetriever, bundle, train_data, data, split: str, evaluation, *,
                            sampling: SamplingSettings, device: torch.device, rule: HybridRule | None = None,
                            rules: Sequence[str] = HYBRID_RULES, radius_km: float | None = None, val_items: int | None = None,
                            store=None, run_id: int | None = None, progress=None
                            ) -> tuple[dict[str, float], HybridRule, HybridSelection | None]:
    """LocDiff-H (gallery) on the items an :class:`~locdiff.services.evaluation.Evaluation` of ``data``/``split`` covered.

    ``retriever`` is ``train_data``'s training split (the model's own training data; ``data`` may be another file).
    Without a fixed ``rule`` it is chosen on ``train_data``'s validation split (:func:`select_on_validation`)."""
    selection = None
    if rule is None:
        selection = select_on_validation(retriever, bundle, train_data, sampling, device=device, rules=rules, radius_km=radius_km,
                                         max_items=val_items, progress=progress)
        rule = selection.rule
    index = data.splits[split][: evaluation.truth.shape[0]]
    coeffs = evaluation.coefficients
    if rule.reads_density and coeffs is None:
        raise ValueError(f"the {rule.rule} rule needs the samples' SHDD codes (evaluate with scores)")
    points, used = refine_with_gallery(retriever, data.cond[index], evaluation.samples, evaluation.predictions, rule, coeffs)
    metrics = hybrid_metrics(points, evaluation.truth, used)
    if store is not None and run_id is not None:
        store.add_evaluation(run_id, f"{data.name}:{split}:hybrid-gallery:{rule.describe()}", metrics)
    return metrics, rule, selection
