"""adapters.clip_embedder: a tiny random open_clip model saved locally and loaded like real weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from adapters.clip_embedder import OpenClipEmbedder
from tests.support.tiny_clip import save_tiny_test_model, tiny_model_cfg
from adapters.images import load_rgb
from locdiff.ports import Embedder

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTOS = sorted((DATA / "photos").glob("*.jpg"))
CORRUPT = sorted((DATA / "corrupt").glob("*.jpg"))
UNDECODABLE = {"huge_tag_exif.jpg": "unreadable image header", "max_uint32_exif.jpg": "unreadable image header",
               "truncated_jpeg.jpg": "truncated image data"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_test_model(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="module")
def embedder(tiny_dir: Path) -> OpenClipEmbedder:
    return OpenClipEmbedder(pretrained=tiny_dir, batch_size=4, progress=False)


def test_implements_the_port_and_names_the_weights(embedder: OpenClipEmbedder, tiny_dir: Path) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 32
    assert embedder.id.startswith("open_clip:custom:sha256:")
    again = OpenClipEmbedder(pretrained=tiny_dir, progress=False)
    assert again.id == embedder.id


def test_other_weights_get_another_id(embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    other = OpenClipEmbedder(pretrained=save_tiny_test_model(tmp_path, seed=1), progress=False)
    assert other.id != embedder.id


def test_saved_and_reloaded_model_gives_identical_embeddings(embedder: OpenClipEmbedder, tiny_dir: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        original = open_clip.CLIP(**tiny_model_cfg()).eval()
    pixels = torch.stack([embedder.preprocess(load_rgb(p)) for p in PHOTOS[:3]])
    tokens = embedder.tokenizer(["a harbour at dusk", "snowy mountains"])
    with torch.no_grad():
        want_img = torch.nn.functional.normalize(original.encode_image(pixels), dim=-1)
        want_txt = torch.nn.functional.normalize(original.encode_text(tokens), dim=-1)
    got_img = embedder.embed_images(PHOTOS[:3])
    got_txt = embedder.embed_texts(["a harbour at dusk", "snowy mountains"])
    assert torch.equal(got_img.vectors, want_img)
    assert torch.equal(got_txt.vectors, want_txt)
    reloaded = OpenClipEmbedder(pretrained=tiny_dir, progress=False)
    assert torch.equal(reloaded.embed_images(PHOTOS[:3]).vectors, got_img.vectors)


def test_outputs_are_normalised_float32_cpu(embedder: OpenClipEmbedder) -> None:
    out = embedder.embed_images(PHOTOS)
    assert out.vectors.dtype == torch.float32 and out.vectors.device.type == "cpu"
    assert out.vectors.shape == (len(PHOTOS), 32) and out.index == tuple(range(len(PHOTOS)))
    torch.testing.assert_close(out.vectors.norm(dim=1), torch.ones(len(PHOTOS)))
    raw = embedder.embed_images_raw(PHOTOS)
    torch.testing.assert_close(torch.nn.functional.normalize(raw.vectors, dim=1), out.vectors)
    assert not torch.allclose(raw.vectors.norm(dim=1), torch.ones(len(PHOTOS)))


def test_corrupt_files_fail_one_by_one_and_the_batch_completes(embedder: OpenClipEmbedder) -> None:
    paths = [PHOTOS[0], *CORRUPT, *PHOTOS[1:]]
    out = embedder.embed_images(paths)
    failed = {Path(f.item).name: f.reason for f in out.failures}
    assert set(failed) == set(UNDECODABLE)
    for name, expected in UNDECODABLE.items():
        assert name in failed[name] and expected in failed[name]
    assert len(out.index) == len(paths) - len(UNDECODABLE) == out.vectors.shape[0]
    assert all(paths[i].name not in UNDECODABLE for i in out.index)
    alone = embedder.embed_images([PHOTOS[1]]).vectors[0]
    row = out.index.index(paths.index(PHOTOS[1]))
    torch.testing.assert_close(out.vectors[row], alone, atol=1e-5, rtol=0)


def test_batch_size_does_not_change_results(tiny_dir: Path, embedder: OpenClipEmbedder) -> None:
    one = OpenClipEmbedder(pretrained=tiny_dir, batch_size=1, num_workers=2, progress=False)
    torch.testing.assert_close(one.embed_images(PHOTOS).vectors, embedder.embed_images(PHOTOS).vectors,
                               atol=1e-5, rtol=0)


def test_every_image_mode_embeds(embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    files = []
    for mode, name in [("RGBA", "a.png"), ("P", "p.png"), ("CMYK", "c.jpg"), ("L", "l.png"), ("LA", "la.png"),
                       ("1", "b.png")]:
        rgb.convert(mode).save(tmp_path / name)
        files.append(tmp_path / name)
    Image.fromarray((rng.integers(0, 65536, (40, 48))).astype(np.uint16)).save(tmp_path / "i16.png")
    files.append(tmp_path / "i16.png")
    p = rgb.convert("P")
    p.save(tmp_path / "pt.gif", transparency=0)
    files.append(tmp_path / "pt.gif")
    out = embedder.embed_images(files)
    assert out.failures == () and out.vectors.shape == (len(files), 32)
    assert torch.isfinite(out.vectors).all()


def test_decompression_bomb_is_a_failure_not_a_crash(tiny_dir: Path) -> None:
    strict = OpenClipEmbedder(pretrained=tiny_dir, max_pixels=100 * 100, progress=False)
    out = strict.embed_images(PHOTOS)  # the smallest photo has 180x135 = 24300 px
    assert out.index == () and out.vectors.shape == (0, 32)
    assert len(out.failures) == len(PHOTOS)
    assert all("decompression bomb" in f.reason and Path(f.item).name in f.reason for f in out.failures)


def test_texts_and_empty_inputs(embedder: OpenClipEmbedder) -> None:
    out = embedder.embed_texts(["Paris", 7, "", "a very long caption " * 40])  # type: ignore[list-item]
    assert out.index == (0, 2, 3) and out.vectors.shape == (3, 32)
    assert out.failures[0].reason == "expected a string, got int"
    assert embedder.embed_texts([]).vectors.shape == (0, 32)
    assert embedder.embed_images([]).vectors.shape == (0, 32)


def test_checkpoint_file_and_config_less_directory(tiny_dir: Path, tmp_path: Path,
                                                   embedder: OpenClipEmbedder) -> None:
    # register the tiny architecture under a name, as a built-in config would be
    cfg_path = tmp_path / "locdiff-tiny-test.json"
    cfg_path.write_text(json.dumps(tiny_model_cfg()))
    open_clip.add_model_config(cfg_path)
    weights = tiny_dir / "open_clip_model.safetensors"
    from_file = OpenClipEmbedder("locdiff-tiny-test", pretrained=weights, progress=False)
    want = embedder.embed_images(PHOTOS[:2]).vectors
    assert torch.equal(from_file.embed_images(PHOTOS[:2]).vectors, want)
    assert from_file.id.startswith("open_clip:locdiff-tiny-test:sha256:")
    # a torch .bin state dict in a folder without open_clip_config.json
    folder = tmp_path / "bin_only"
    folder.mkdir()
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), folder / "open_clip_pytorch_model.bin")
    from_bin = OpenClipEmbedder("locdiff-tiny-test", pretrained=folder, progress=False)
    assert torch.equal(from_bin.embed_images(PHOTOS[:2]).vectors, want)


def test_bad_weights_give_clear_errors(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="neither an existing checkpoint file/directory nor a pretrained tag"):
        OpenClipEmbedder("ViT-L-14", pretrained="not-a-tag", progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        OpenClipEmbedder("ViT-L-14", pretrained=str(tmp_path / "missing.safetensors"), progress=False)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        OpenClipEmbedder(pretrained=tmp_path / "empty_dir", progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="could not load open_clip model"):
        OpenClipEmbedder(pretrained=broken, progress=False)
    with pytest.raises(ValueError, match="precision"):
        OpenClipEmbedder(pretrained=tiny_dir, precision="fp8", progress=False)


def test_bf16_precision_still_returns_float32(tiny_dir: Path, embedder: OpenClipEmbedder) -> None:
    low = OpenClipEmbedder(pretrained=tiny_dir, precision="bf16", progress=False)
    out = low.embed_images(PHOTOS[:2]).vectors
    assert out.dtype == torch.float32
    cos = (out * embedder.embed_images(PHOTOS[:2]).vectors).sum(dim=1)
    assert (cos > 0.95).all()


def test_hub_tags_resolve_with_quick_gelu_and_fail_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    name, ckpt, weights_id, quick = OpenClipEmbedder._resolve(open_clip, "ViT-L-14", "openai", None)
    assert (name, ckpt, weights_id, quick) == ("ViT-L-14", "openai", "openai", True)  # OpenAI weights use QuickGELU
    assert OpenClipEmbedder._resolve(open_clip, "ViT-L-14", "openai", False)[3] is False

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(RuntimeError, match="Offline, pass a local checkpoint file"):
        OpenClipEmbedder("ViT-B-32", pretrained="openai", progress=False)
