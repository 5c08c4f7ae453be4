"""LocDiff-H on the command line: the ``--hybrid [gallery|geoclip]`` flags and the ``eval`` rows.

``gallery`` (default) retrieves from the model's own training split (any embedder); its rule and radius are
chosen on the model's validation split unless given, and saved beside the checkpoint for ``predict``.
``geoclip`` retrieves from GeoCLIP's 100K GPS gallery (image datasets; 200 km unless given).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from locdiff.cli.flags import count
from locdiff.core.hybrid import DENSITY_RULES, HYBRID_RULES, HybridRule
from locdiff.services.hybrid import HYBRID_SOURCES

GEOCLIP_RADIUS_KM = 200.0  # the paper's radius for "Ours + GeoCLIP"


def radius(text: str) -> float | str:
    """An argparse type: ``auto`` (chosen on validation) or a radius in km > 0 (``inf``: no restriction)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a radius in km, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a radius > 0 km, got {value:g}")
    return value


def hybrid_flags(p: argparse.ArgumentParser, *, evaluation: bool) -> None:
    """``--hybrid [SOURCE]`` (bare: ``gallery``) and, for ``eval``, how the rule is chosen."""
    p.add_argument("--hybrid", nargs="?", const=HYBRID_SOURCES[0], default=None, choices=HYBRID_SOURCES,
                   help="LocDiff-H: retrieval near the diffusion samples, from the model's training split (gallery, "
                        "any embedder; the default) or GeoCLIP's 100K gallery (geoclip, photos)")
    if not evaluation:
        return
    p.add_argument("--hybrid-radius", type=radius, default="auto",
                   help="radius around the samples in km, or auto: chosen on the model's validation split (default)")
    p.add_argument("--hybrid-rule", choices=(*HYBRID_RULES, "auto"), default="auto",
                   help="radius: the paper's best match within R; density: similarity + λ·log sample density; consensus: the "
                        "retrieval neighbours' weighted vote + λ·log sample density (λ = 0: weighted kNN); auto: chosen on validation")
    p.add_argument("--hybrid-val-items", type=count, help="validation items for choosing the rule (default: all)")


def compare_options(args, every: int) -> dict:
    """``eval --compare --hybrid``: the study options of its LocDiff-H row (the gallery's rule, chosen on validation)."""
    if args.hybrid == "geoclip":
        raise ValueError("--compare's LocDiff-H row retrieves from the training split (--hybrid gallery); "
                         "for GeoCLIP run `eval RUN --hybrid geoclip` without --compare")
    if args.hybrid and (args.hybrid_radius != "auto" or args.hybrid_rule != "auto"):
        raise ValueError("--compare chooses LocDiff-H's rule and radius on validation; drop --hybrid-radius / --hybrid-rule")
    return {"no_hybrid": not args.hybrid, "val_items": args.hybrid_val_items or every}


def label(args, rule: HybridRule | None, sampler: str = "") -> str:
    name = f"LocDiff-H {sampler}".strip()
    if args.hybrid == "geoclip":
        r = GEOCLIP_RADIUS_KM if args.hybrid_radius == "auto" else args.hybrid_radius
        return f"{name} (+GeoCLIP {r:g} km)"
    return f"{name} (gallery: {rule.describe()})" if rule is not None else f"{name} (gallery)"


def fixed_rule(args) -> HybridRule | None:
    """The rule the flags fix, or None when something is left to validation."""
    if args.hybrid_rule == "auto" or args.hybrid_radius == "auto" or args.hybrid_rule in DENSITY_RULES:
        return None  # the density and consensus rules' λ (and the vote's k, T, r) are always chosen on validation
    return HybridRule(args.hybrid_rule, float(args.hybrid_radius))


def eval_rows(args, container, bundle, ckpt: Path, data, ev, settings, *, store, run_id, progress) -> dict[str, dict[str, float]]:
    """The LocDiff-H row of ``eval`` for one sampler's evaluation ``ev`` (and, gallery, the rule saved beside ``ckpt``)."""
    from locdiff.container import save_hybrid_rule
    from locdiff.services.hybrid import evaluate_gallery_hybrid, evaluate_hybrid, gallery_of

    sampler = f"{settings.sampler}-{settings.sampler_steps}"
    if args.hybrid == "geoclip":
        r = GEOCLIP_RADIUS_KM if args.hybrid_radius == "auto" else float(args.hybrid_radius)
        return {label(args, None, sampler): evaluate_hybrid(container.retriever(), data, args.split, ev, radius_km=r, store=store, run_id=run_id)}
    train_data = training_data(container, bundle, args.data, data)  # the gallery: the model's own training split
    gallery = gallery_of(container.gallery(), train_data)
    rules = HYBRID_RULES if args.hybrid_rule == "auto" else (args.hybrid_rule,)
    fixed_r = None if args.hybrid_radius == "auto" else float(args.hybrid_radius)
    metrics, rule, selection = evaluate_gallery_hybrid(
        gallery, bundle, train_data, data, args.split, ev, sampling=settings.sampling(args.seed), device=container.compute().device,
        rule=fixed_rule(args), rules=rules, radius_km=fixed_r, val_items=args.hybrid_val_items, store=store, run_id=run_id,
        progress=progress)
    if selection is not None:
        print(f"\nLocDiff-H rule chosen on validation ({selection.items} items of {train_data.name}): {rule.describe()}")
        print(sweep_table(selection, top=8))
        try:
            print(f"saved for `predict --hybrid`: {save_hybrid_rule(ckpt, selection.to_dict())}")
        except OSError as exc:
            print(f"(could not save the rule beside the checkpoint: {exc})")
    return {label(args, rule, sampler): metrics}


def is_training_file(source: str, given: str) -> bool:
    """Does the file ``given`` name a model's training CSV (its ``config.data.source``; never the built-in places)?"""
    return source != "places" and Path(given).resolve() == Path(source).resolve()


def training_data(container, bundle, given: str | None, data):
    """The model's own training data (gallery and validation): ``data`` itself unless ``--data`` names another file; the
    built-in places are re-read, but a training CSV only when given (a checkpoint never chooses the files read)."""
    from locdiff.config import RunConfig, apply_overrides
    from locdiff.container import build_container
    from locdiff.services.data import prepare

    source = bundle.config.data.source
    if not given or is_training_file(source, given):
        return data
    if source != "places":
        raise ValueError(f"--hybrid gallery retrieves from the model's training data ({source}), which eval reads only when "
                         f"given: use `compare RUN --data {source} --eval-data {given}`, or --hybrid geoclip for photos")
    where = {"workdir": container.config.workdir(), "store_url": container.config.store_url()}
    own = RunConfig.from_dict(apply_overrides(bundle.config.to_dict(), where))
    return prepare(build_container(own).dataset(), container.embedder(), own.data)


def sweep_table(selection, top: int | None = None) -> str:
    """The validation sweep (best ``top`` rows) as a Markdown table: rule, R, λ, mean accuracy, share answered by retrieval."""
    lines = ["| rule | R (km) | λ | vote (consensus) | mean acc. (%) | retrieved (%) |", "|---|---|---|---|---|---|"]
    rows = sorted(selection.sweep, key=lambda row: -row[1])[:top]
    for rule, score, used in rows:
        r = "inf" if math.isinf(rule.radius_km) else f"{rule.radius_km:g}"
        vote = f"k={rule.k}, T={rule.temperature:g}, r={rule.consensus_km:g} km" if rule.rule == "consensus" else "–"
        lines.append(f"| {rule.rule} | {r} | {rule.lam:g} | {vote} | {score:.2f} | {100 * used:.1f} |")
    return "\n".join(lines)
