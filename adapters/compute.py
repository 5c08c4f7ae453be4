"""Compute adapter: picks the device (CUDA, then MPS, then CPU; overridable), seeds, and sets up DDP.

The core never names a device; it receives ``compute.device`` from here.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; anything else is validated and used as given."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ValueError(f"device {preference!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was requested but CUDA is not available on this machine")
    return device


class TorchCompute:
    """The ``Compute`` port: device, dtype policy (float32 weights; autocast left off by default) and seeding."""

    def __init__(self, device: str = "auto", threads: int | None = None):
        self._device = pick_device(device)
        if threads:
            torch.set_num_threads(threads)
        if self._device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self._device if self._device.type == "cuda" else "cpu").manual_seed(seed)

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def describe(self) -> str:
        if self._device.type == "cuda":
            return f"cuda:{self._device.index or 0} ({torch.cuda.get_device_name(self._device)})"
        return f"{self._device.type} ({torch.get_num_threads()} threads)"


def distributed_env() -> tuple[int, int] | None:
    """(rank, world size) when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def init_distributed(device: torch.device) -> tuple[int, int] | None:
    """Initialise the default process group (NCCL on GPUs, gloo on CPUs) if torchrun asked for it."""
    env = distributed_env()
    if env is None:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return env
