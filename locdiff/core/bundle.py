"""A trained LocDiffusion model: the CS-UNet, its diffusion process and what it was trained for.

Checkpoint contents are plain tensors plus a JSON-able ``meta`` (saved by a ``CheckpointStore``
adapter as safetensors + JSON, never pickle). Loading checks the format, the SHDD degree and the
embedder, so a checkpoint can never be silently used with the wrong inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from locdiff.config import RunConfig
from locdiff.core.diffusion import Diffusion, Schedule
from locdiff.core.network import CSUNet

KIND = "locdiff-csunet"
FORMAT = 1


MAX_COND_DIM = 65_536  # widest condition embedding a checkpoint may declare


def _check_shapes(tensors: Mapping[str, torch.Tensor], config: RunConfig, cond_dim: int, where: str) -> None:
    """The weight shapes the config describes (built on the ``meta`` device: nothing allocated) must be
    exactly the stored ones, so a tampered config can never make the loader allocate more than the file holds."""
    with torch.device("meta"):  # the very constructor the loader uses next, on the meta device
        net = ModelBundle.create(config, cond_dim, "shape-check", torch.device("meta")).net
    expected = {f"model.{k}": tuple(v.shape) for k, v in net.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in tensors.items() if isinstance(k, str) and k.startswith("model.")}
    if expected != stored:
        missing = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"{wrong[0]} is {list(stored[wrong[0]])}, the config needs {list(expected[wrong[0]])}")
        raise ValueError(f"{where}: weights do not fit the model described by its config ({detail})")


@attrs.define
class ModelBundle:
    config: RunConfig
    net: CSUNet
    diffusion: Diffusion
    embedder_id: str
    cond_dim: int

    @property
    def degree(self) -> int:
        return self.config.model.degree

    @property
    def dim(self) -> int:
        return (self.degree + 1) ** 2

    @classmethod
    def create(cls, config: RunConfig, cond_dim: int, embedder_id: str, device: torch.device) -> "ModelBundle":
        m = config.model
        net = CSUNet((m.degree + 1) ** 2, cond_dim, m.widths, m.time_dim, m.dropout, m.siren_w0).to(device)
        diffusion = Diffusion(Schedule.make(config.diffusion.schedule, config.diffusion.steps))
        return cls(config=config, net=net, diffusion=diffusion, embedder_id=embedder_id, cond_dim=cond_dim)

    def meta(self, step: int) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format": FORMAT,
            "step": int(step),
            "degree": self.degree,
            "dims": self.dim,
            "cond_dim": self.cond_dim,
            "embedder_id": self.embedder_id,
            "config": self.config.to_dict(),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v.detach() for k, v in self.net.state_dict().items()}

    @classmethod
    def from_checkpoint(
        cls,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any],
        device: torch.device,
        *,
        where: str = "checkpoint",
        expect_degree: int | None = None,
        expect_embedder: str | None = None,
    ) -> "ModelBundle":
        """Rebuild from stored tensors/meta; ``ValueError`` naming the file and field on any mismatch."""
        if not isinstance(meta, Mapping):
            raise ValueError(f"{where}: checkpoint metadata must be a JSON object, got {type(meta).__name__}")
        if meta.get("kind") != KIND:
            raise ValueError(f"{where}: not a LocDiff model checkpoint (kind={meta.get('kind')!r}, expected {KIND!r})")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{where}: checkpoint format {meta.get('format')!r} is not supported (expected {FORMAT})")
        if "config" not in meta:
            raise ValueError(f"{where}: checkpoint metadata has no 'config'")
        config = RunConfig.from_dict(meta["config"], where=f"{where} (meta.config)")
        # A checkpoint never chooses where anything is written: store and workdir come from the user.
        config = attrs.evolve(config, store_url=None, workdir=RunConfig().workdir)
        cond_dim, degree, embedder_id = meta.get("cond_dim"), meta.get("degree"), meta.get("embedder_id")
        if isinstance(cond_dim, bool) or not isinstance(cond_dim, int) or not 1 <= cond_dim <= MAX_COND_DIM:
            raise ValueError(f"{where}: field 'cond_dim' must be an integer in [1, {MAX_COND_DIM}], got {cond_dim!r}")
        if degree != config.model.degree or isinstance(degree, bool):
            raise ValueError(f"{where}: field 'degree' is {degree!r} but meta.config says L={config.model.degree}")
        if not isinstance(embedder_id, str) or not embedder_id:
            raise ValueError(f"{where}: field 'embedder_id' must be a non-empty string, got {embedder_id!r}")
        _check_shapes(tensors, config, cond_dim, where)
        if expect_degree is not None and meta["degree"] != expect_degree:
            raise ValueError(f"{where}: trained for SHDD degree L={meta['degree']}, but L={expect_degree} was requested")
        if expect_embedder is not None and meta["embedder_id"] != expect_embedder:
            raise ValueError(
                f"{where}: trained on embeddings from {meta['embedder_id']!r}, but the embedder in use is {expect_embedder!r}"
            )
        bundle = cls.create(config, int(meta["cond_dim"]), str(meta["embedder_id"]), device)
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        try:
            bundle.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{where}: weights do not fit the model described by its config: {exc}") from None
        bundle.net.eval()
        return bundle
