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


def _check_size(tensors: Mapping[str, torch.Tensor], config: RunConfig, cond_dim: int, where: str) -> None:
    """Refuse, before allocating anything, a config that describes more weights than the file holds.

    A lower bound on the CS-UNet's parameter count (the x, condition and time projections every C-Siren
    block has) is compared with the stored tensors, so a tampered config can never make the loader
    allocate beyond a small multiple of what the file already holds; exact shapes are checked on loading.
    """
    m = config.model
    dims = ((m.degree + 1) ** 2, *m.widths)
    blocks = 2 * len(m.widths) + 1
    narrow = min(m.widths)
    at_least = sum(a * b for a, b in zip(dims, dims[1:])) + blocks * (cond_dim * narrow + narrow * narrow + m.time_dim**2)
    stored = sum(int(t.numel()) for k, t in tensors.items() if isinstance(k, str) and k.startswith("model."))
    if at_least > stored:
        raise ValueError(
            f"{where}: weights do not fit the model described by its config (it needs at least {at_least:,} "
            f"parameters, the file holds {stored:,})"
        )


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
        # the l = 0 head acts on the x0 prediction, after the output is turned into x0 (model.parameterization)
        diffusion = Diffusion(Schedule.make(config.diffusion.schedule, config.diffusion.steps),
                              parameterization=m.parameterization, l0=1.0 if m.fix_l0 else None)
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
        _check_size(tensors, config, cond_dim, where)
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
