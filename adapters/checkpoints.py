"""``SafetensorsCheckpointStore``: the :class:`locdiff.ports.CheckpointStore` port on safetensors files.

Layout: ``<directory>/step-XXXXXXXX/{weights.safetensors, meta.json}``. A step folder is built under a
hidden temporary name, fsynced, then renamed into place, so a half-written checkpoint never appears
under its final name. ``meta.json`` records the SHA-256 of the weights, checked on every load.
Pickle (``torch.load``) is never used.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from adapters.files import open_regular
from locdiff.core.serialization import plain_json

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
META_NAME = "meta.json"
_RESERVED = ("sha256", "format_version")
_STEP_DIR = re.compile(r"step-(\d{8,})")
_LEFTOVER = re.compile(r"\.step-(\d{8,})\.(tmp|old)-.*")  # temp folders of an interrupted save or swap
MAX_META_BYTES = 64 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


# --------------------------------------------------------------------------- helpers
def _cpu_tensors(tensors: Any) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies safetensors accepts (views and shared storage are cloned)."""
    if not isinstance(tensors, Mapping):
        raise ValueError(f"tensors: expected a mapping of name -> torch.Tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensors: names must be non-empty strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"tensors[{name!r}]: expected a torch.Tensor, got {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise ValueError(f"tensors[{name!r}]: only dense tensors can be saved, got layout {tensor.layout}")
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        whole = tensor.storage_offset() == 0 and storage.nbytes() == tensor.numel() * tensor.element_size()
        if not whole or (storage.data_ptr() != 0 and storage.data_ptr() in seen):
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a folder's entries (renames); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint metadata {path} is missing; the checkpoint is incomplete")
    try:
        with open_regular(path, max_bytes=MAX_META_BYTES, what="checkpoint metadata") as handle:
            meta = json.loads(handle.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format_version is {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("sha256"), str):
        raise ValueError(f"{path}: field 'sha256' is missing or not a string")
    return meta


# --------------------------------------------------------------------------- store
class SafetensorsCheckpointStore:
    """Checkpoints as step folders of safetensors weights + JSON metadata.

    With ``keep_last=N``, each successful save keeps the folder it wrote plus the N - 1 highest other
    steps and deletes the rest.
    """

    def __init__(self, keep_last: int | None = None) -> None:
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last: expected None or an int >= 1, got {keep_last!r}")
        self.keep_last = keep_last

    def save(self, directory: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        """Write ``directory/step-XXXXXXXX/`` atomically (replacing one of the same step); returns it.

        ``meta`` must be JSON-able and hold an int ``"step"``; ``sha256`` and ``format_version`` are added.
        """
        if not isinstance(meta, Mapping):
            raise ValueError(f"meta: expected a mapping, got {type(meta).__name__}")
        step = meta.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"meta['step']: expected an int >= 0, got {step!r}")
        reserved = [key for key in _RESERVED if key in meta]
        if reserved:
            raise ValueError(f"meta: key(s) {reserved} are written by the checkpoint store itself")
        record = plain_json(meta, "meta")
        weights = _cpu_tensors(tensors)

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / step_dir_name(step)
        if final.exists() and not final.is_dir():
            raise ValueError(f"{final} exists and is not a checkpoint folder")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=directory))
        try:
            weights_path = tmp / WEIGHTS_NAME
            try:
                safetensors.torch.save_file(weights, str(weights_path), metadata={"format": "pt"})
            except Exception as exc:  # safetensors raises its own error types (e.g. unsupported dtypes)
                raise ValueError(f"cannot write checkpoint weights {final / WEIGHTS_NAME}: {exc}") from exc
            _fsync_file(weights_path)
            record.update(sha256=file_sha256(weights_path), format_version=FORMAT_VERSION)
            meta_path = tmp / META_NAME
            with open(meta_path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(record, indent=2, sort_keys=True, allow_nan=False))
                handle.flush()
                os.fsync(handle.fileno())
            _fsync_dir(tmp)
            self._publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the temp folder, or the replaced old step after a swap
        _fsync_dir(directory)
        if self.keep_last is not None:
            self._prune(directory, keep=final)
        return final

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        """Move the finished ``tmp`` folder to ``final``; an existing ``final`` ends up under ``tmp``."""
        if not final.exists():
            try:
                os.rename(tmp, final)
                return
            except OSError as exc:  # another writer published the same step meanwhile
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        if _exchange(tmp, final):
            return
        # Fallback (no atomic swap): move the old folder aside, then the new one in. ``final`` is briefly
        # absent but never half-written; the old folder is restored if the second rename fails.
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        try:
            os.rename(final, old / final.name)
            try:
                os.rename(tmp, final)
            except OSError:
                os.rename(old / final.name, final)
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read a step folder (or its ``weights.safetensors``) after checking its SHA-256.

        Returns CPU tensors and the stored metadata (including ``sha256`` and ``format_version``).
        """
        path = Path(path)
        if path.is_dir():
            weights_path = path / WEIGHTS_NAME
            if not weights_path.is_file():
                raise FileNotFoundError(f"checkpoint folder {path} has no {WEIGHTS_NAME}")
        elif path.is_file():
            if path.suffix != ".safetensors":
                raise ValueError(
                    f"{path}: not a safetensors checkpoint (expected a step folder or a .safetensors file; "
                    "pickled .pt/.ckpt files are refused)"
                )
            weights_path = path
        else:
            raise FileNotFoundError(f"no checkpoint at {path}")
        meta_path = weights_path.parent / META_NAME
        meta = _read_meta(meta_path)
        data = weights_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta["sha256"]:
            raise ValueError(
                f"{weights_path}: sha256 {digest} does not match {meta['sha256']} recorded in {meta_path}; "
                "the weights are corrupt or were replaced"
            )
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
        return tensors, meta

    def steps(self, directory: Path) -> list[Path]:
        """Complete step folders under ``directory``, by increasing step (temp folders are ignored)."""
        directory = Path(directory)
        if not directory.is_dir():
            return []
        found: list[tuple[int, Path]] = []
        for entry in directory.iterdir():
            match = _STEP_DIR.fullmatch(entry.name)
            if match and entry.is_dir() and (entry / WEIGHTS_NAME).is_file() and (entry / META_NAME).is_file():
                found.append((int(match.group(1)), entry))
        return [entry for _, entry in sorted(found)]

    def sha256(self, path: Path) -> str:
        """SHA-256 of a saved checkpoint's weights (a step folder or the weights file)."""
        path = Path(path)
        return file_sha256(path / WEIGHTS_NAME if path.is_dir() else path)

    def latest(self, directory: Path) -> Path | None:
        """The complete step folder with the highest step, or None."""
        steps = self.steps(directory)
        return steps[-1] if steps else None

    def clean(self, directory: Path) -> list[Path]:
        """Remove what an interrupted save or prune left in ``directory``: hidden ``.step-*.tmp-*`` /
        ``.step-*.old-*`` folders and step folders without both files. Call it only while no other
        process writes to ``directory`` (training holds the run's lock). Returns what was removed."""
        directory = Path(directory)
        if not directory.is_dir():
            return []
        removed = []
        for entry in directory.iterdir():
            complete = (entry / WEIGHTS_NAME).is_file() and (entry / META_NAME).is_file()
            stale = _LEFTOVER.fullmatch(entry.name) or (_STEP_DIR.fullmatch(entry.name) and not complete)
            if stale and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        if removed:
            _fsync_dir(directory)
        return removed

    def _prune(self, directory: Path, keep: Path) -> None:
        """Keep ``keep`` (just written) and the newest ``keep_last - 1`` other steps; delete the rest."""
        assert self.keep_last is not None
        others = [step for step in self.steps(directory) if step != keep]
        for old in others[: max(len(others) - (self.keep_last - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
