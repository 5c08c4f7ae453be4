"""What the commands share: flag groups (each command adds only the groups it uses), the run config they
assemble, the parser class (options anywhere among the positionals) and table printing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from locdiff.config import EMBEDDERS, RunConfig
from locdiff.core.diffusion import LOSSES, PROJECTIONS
from locdiff.core.metrics import format_table
from locdiff.core.reduction import REDUCERS

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "default.toml"


# --------------------------------------------------------------------------- helpers
def progress(**kwargs):
    from tqdm import tqdm

    return tqdm(mininterval=1.0, dynamic_ncols=True, file=sys.stderr, **kwargs)


def config_from_args(args) -> RunConfig:
    """``--config`` (or the defaults) plus whichever of this command's flags were given."""
    flag = lambda name: getattr(args, name, None)  # noqa: E731 - commands declare only their own flags
    holdout = flag("holdout_groups")
    overrides = {
        "model.degree": flag("degree"), "train.steps": flag("steps"), "train.batch_size": flag("batch_size"),
        "train.seed": flag("seed"), "diffusion.loss": flag("loss"), "diffusion.l2_weight": flag("l2_weight"),
        "data.places_limit": flag("places"),
        "data.all_places": True if flag("all_places") else None, "data.source": flag("data"), "data.embedder": flag("embedder"),
        "data.clip_pretrained": flag("clip_pretrained"), "data.holdout_groups": holdout.split(",") if holdout else None,
        "eval.max_items": flag("eval_items"), "device": flag("device"), "workdir": flag("workdir"), "store_url": flag("store"),
    }
    return RunConfig.load(Path(args.config) if flag("config") else DEFAULT_CONFIG, overrides, FLAG_OF)


# which flag sets which setting: a bad value is blamed on the flag, not on the config file
FLAG_OF = {
    "model.degree": "--degree", "train.steps": "--steps", "train.batch_size": "--batch-size", "train.seed": "--seed",
    "diffusion.loss": "--loss", "diffusion.l2_weight": "--l2-weight", "data.places_limit": "--places", "data.source": "--data", "data.embedder": "--embedder",
    "data.clip_pretrained": "--clip-pretrained", "data.holdout_groups": "--holdout-groups", "eval.max_items": "--eval-items",
    "device": "--device", "workdir": "--workdir", "store_url": "--store",
}


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    """The accuracy table, then — where any row has them — the proper scores of each row's distribution."""
    print(f"\n{title}")
    print(format_table(rows))
    if any("nll" in m for m in rows.values()):
        from locdiff.core.scores import format_scores_table

        print("\nproper scores (mean [95 % bootstrap interval over places]; coverage raw, uncalibrated):")
        print(format_scores_table(rows))


# --------------------------------------------------------------------------- flag groups
def where_flags(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    """Where things live: the config file, the device, the workdir and the experiment store."""
    if config:
        p.add_argument("--config", help="TOML config file (default: locdiff/default.toml)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--workdir", help="where runs, the SQLite store and caches live (default: runs)")
    p.add_argument("--store", help="SQLAlchemy URL of the experiment store")


def data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--places", type=count, help="number of places (most populous first)")
    p.add_argument("--all-places", action="store_true", help="every place the package ships")
    p.add_argument("--data", help="a CSV (lat,lon,image|text) instead of the places")
    p.add_argument("--embedder", choices=EMBEDDERS)
    p.add_argument("--clip-pretrained", help="open_clip pretrained tag (online) or a local checkpoint path")


def training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--degree", type=int, help="SHDD degree L")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--l2-weight", type=float, help="weight of the latent L2 term of the kl+l2 loss (README: degrees and the L2 weight)")
    p.add_argument("--holdout-groups", help="comma-separated groups (country codes) held out entirely")
    p.add_argument("--eval-items", type=count, help="evaluate on at most this many items")


def sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=count, default=16)
    p.add_argument("--reducer", default="mode", choices=REDUCERS)
    p.add_argument("--projection", choices=PROJECTIONS,
                   help="what happens to each step's x0 prediction while sampling (default: the run's own, see README)")
    p.add_argument("--seed", type=int, default=0)


class Parser(argparse.ArgumentParser):
    """Options may come anywhere among a command's positional arguments (``predict RUN --top 1 img.jpg``)."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing or any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def count(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--max-items -5`` is refused, naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def run_sampling(args: argparse.Namespace, saved) -> None:
    """Fill the sampler, its steps and the x0 projection the user left out with ``saved`` (a run's ``EvalConfig``).

    A run is evaluated and served the way it was selected: a model trained for the old ``snap`` default keeps it,
    a new one samples without projection. ``--sampler`` of ``eval`` is a list (``ddpm:100,ddim:20``).
    """
    if getattr(args, "projection", None) is None:
        args.projection = saved.projection
    if getattr(args, "sampler", None) is None:
        args.sampler = saved.sampler if hasattr(args, "sampler_steps") else f"{saved.sampler}:{saved.sampler_steps}"
    if hasattr(args, "sampler_steps") and args.sampler_steps is None:
        args.sampler_steps = saved.sampler_steps

