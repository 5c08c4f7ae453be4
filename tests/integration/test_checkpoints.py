"""SafetensorsCheckpointStore on a real filesystem: round trips, integrity, atomicity, resume."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

import adapters.checkpoints as ckpt
from adapters.checkpoints import SafetensorsCheckpointStore, file_sha256
from locdiff.ports import CheckpointStore


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(5, 7, generator=gen)
    return {
        "net.weight": weight,
        "net.tied": weight,  # shares storage with net.weight
        "net.view": weight[1:3, ::2],  # non-contiguous view
        "net.bias": torch.zeros(7, dtype=torch.float64),
        "half": torch.randn(3, generator=gen).to(torch.bfloat16),
        "counts": torch.arange(4, dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 3),
    }


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_implements_protocol() -> None:
    assert isinstance(SafetensorsCheckpointStore(), CheckpointStore)


def test_round_trip(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    tensors = _tensors()
    meta = {"step": 10, "degree": 10, "dims": 64, "embedder_id": "clip:ViT-L-14", "config": {"lr": 1e-3, "k": (1, 2)}}
    folder = store.save(tmp_path / "run", tensors, meta)
    assert folder == tmp_path / "run" / "step-00000010"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "weights.safetensors"]
    assert _hidden(tmp_path / "run") == []

    for source in (folder, folder / "weights.safetensors"):
        loaded, loaded_meta = store.load(source)
        assert set(loaded) == set(tensors)
        for name, tensor in tensors.items():
            assert loaded[name].dtype == tensor.dtype and loaded[name].device.type == "cpu"
            assert torch.equal(loaded[name], tensor), name
        sha = file_sha256(folder / "weights.safetensors")
        assert loaded_meta == {**meta, "config": {"lr": 1e-3, "k": [1, 2]}, "sha256": sha, "format_version": 1}
    on_disk = json.loads((folder / "meta.json").read_text())
    assert on_disk["sha256"] == hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()


def test_sha_mismatch_is_detected(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    folder = store.save(tmp_path, _tensors(), {"step": 1})
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last tensor's bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights\.safetensors: sha256 .* does not match"):
        store.load(folder)


def test_pickle_is_never_loaded(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, pt)
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        store.load(pt)
    # A pickle disguised as safetensors, with a matching hash, is still refused by the parser.
    disguised = tmp_path / "step-00000001"
    disguised.mkdir()
    payload = pickle.dumps({"w": [1.0, 2.0]})
    (disguised / "weights.safetensors").write_bytes(payload)
    meta = {"step": 1, "sha256": hashlib.sha256(payload).hexdigest(), "format_version": 1}
    (disguised / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        store.load(disguised)


def test_missing_or_bad_metadata(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    folder = store.save(tmp_path, _tensors(), {"step": 1})
    (folder / "meta.json").write_text('{"step": 1, "sha256": "x", "format_version": 7}')
    with pytest.raises(ValueError, match=r"meta\.json: checkpoint format_version is 7, expected 1"):
        store.load(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"meta\.json: not valid JSON"):
        store.load(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        store.load(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        store.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, r"meta\['step'\]"),
        ({"step": True}, r"meta\['step'\]"),
        ({"step": -1}, r"meta\['step'\]"),
        ({"step": 1, "sha256": "x"}, "written by the checkpoint store"),
        ({"step": 1, "lr": float("inf")}, r"meta\['lr'\]"),
        ({"step": 1, "device": torch.device("cpu")}, r"meta\['device'\]"),
    ],
)
def test_bad_meta_is_rejected_before_writing(tmp_path: Path, meta: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SafetensorsCheckpointStore().save(tmp_path / "run", _tensors(), meta)
    assert not (tmp_path / "run").exists()


def test_bad_tensors_are_rejected(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    with pytest.raises(ValueError, match=r"tensors\['w'\]: expected a torch.Tensor"):
        store.save(tmp_path, {"w": [1.0]}, {"step": 1})
    with pytest.raises(ValueError, match="only dense tensors"):
        store.save(tmp_path, {"w": torch.eye(2).to_sparse()}, {"step": 1})
    assert store.latest(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_resume_scenario_latest_is_highest_step(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    assert store.latest(tmp_path / "missing") is None
    store.save(tmp_path, _tensors(10), {"step": 10})
    store.save(tmp_path, _tensors(20), {"step": 20})
    latest = store.latest(tmp_path)
    assert latest == tmp_path / "step-00000020"
    tensors, meta = store.load(latest)
    assert meta["step"] == 20 and torch.equal(tensors["net.weight"], _tensors(20)["net.weight"])
    assert store.steps(tmp_path) == [tmp_path / "step-00000010", latest]


def test_latest_ignores_temp_and_incomplete_folders(tmp_path: Path) -> None:
    store = SafetensorsCheckpointStore()
    store.save(tmp_path, _tensors(), {"step": 20})
    crashed = tmp_path / ".step-00000099.tmp-abc123"  # left behind by a crash mid-save
    crashed.mkdir()
    (crashed / "weights.safetensors").write_bytes(b"partial")
    incomplete = tmp_path / "step-00000050"  # no meta.json
    incomplete.mkdir()
    (incomplete / "weights.safetensors").write_bytes(b"partial")
    (tmp_path / "step-00000070").write_text("a file, not a folder")
    assert store.latest(tmp_path) == tmp_path / "step-00000020"


def test_crash_during_save_leaves_no_final_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SafetensorsCheckpointStore()
    store.save(tmp_path, _tensors(1), {"step": 10})

    def crash(_path: object) -> str:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "file_sha256", crash)
    with pytest.raises(OSError, match="simulated"):
        store.save(tmp_path, _tensors(2), {"step": 20})
    with pytest.raises(OSError, match="simulated"):
        store.save(tmp_path, _tensors(2), {"step": 10})  # a failed overwrite keeps the old step intact
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000010"]
    tensors, _ = store.load(tmp_path / "step-00000010")
    assert torch.equal(tensors["net.weight"], _tensors(1)["net.weight"])


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_existing_step_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic_swap: bool) -> None:
    if not atomic_swap:
        monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    store = SafetensorsCheckpointStore()
    first = store.save(tmp_path, _tensors(1), {"step": 10, "tag": "first"})
    second = store.save(tmp_path, _tensors(2), {"step": 10, "tag": "second"})
    assert first == second and [p.name for p in tmp_path.iterdir()] == ["step-00000010"]
    tensors, meta = store.load(second)
    assert meta["tag"] == "second" and torch.equal(tensors["net.weight"], _tensors(2)["net.weight"])


def test_keep_last_prunes_older_steps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        SafetensorsCheckpointStore(keep_last=0)
    store = SafetensorsCheckpointStore(keep_last=2)
    for step in (1, 2, 3, 4):
        store.save(tmp_path, {"w": torch.full((2,), float(step))}, {"step": step})
    assert [p.name for p in store.steps(tmp_path)] == ["step-00000003", "step-00000004"]
    store.save(tmp_path, {"w": torch.zeros(2)}, {"step": 2})  # an older step just written is kept
    assert [p.name for p in store.steps(tmp_path)] == ["step-00000002", "step-00000004"]
    assert _hidden(tmp_path) == []


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
