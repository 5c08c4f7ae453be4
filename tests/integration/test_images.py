"""adapters.images.load_rgb: modes, orientation, bombs and every corrupt test file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapters.images import ImageError, load_rgb

DATA = Path(__file__).resolve().parents[1] / "data"
CORRUPT = DATA / "corrupt"

# file -> substring of the ImageError message, or None when the pixels decode fine
CORRUPT_EXPECTED = {
    "huge_tag_exif.jpg": "unreadable image header",
    "max_uint32_exif.jpg": "unreadable image header",
    "truncated_jpeg.jpg": "truncated image data",
    "infinite_loop_exif.jpg": None,
    "hopper_bad_exif.jpg": None,
    "empty_gps_ifd.jpg": None,
    "exif_gps_typeerror.jpg": None,
}


def _within(seconds: float, fn, *args):
    """Run ``fn`` in a thread and fail (instead of hanging) if it takes longer than ``seconds``."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=seconds)


def test_corrupt_folder_is_fully_covered() -> None:
    assert sorted(p.name for p in CORRUPT.iterdir()) == sorted(CORRUPT_EXPECTED)


@pytest.mark.parametrize("name", sorted(CORRUPT_EXPECTED))
def test_corrupt_files_give_specific_errors_or_decode(name: str) -> None:
    expected = CORRUPT_EXPECTED[name]
    path = CORRUPT / name
    if expected is None:
        im = _within(30, load_rgb, path)
        assert im.mode == "RGB" and im.width > 0 and im.height > 0
    else:
        with pytest.raises(ImageError) as err:
            _within(30, load_rgb, path)
        assert str(path) in str(err.value)
        assert expected in str(err.value)


def test_missing_empty_and_non_image_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found") as err:
        load_rgb(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(err.value)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        load_rgb(empty)
    text = tmp_path / "notes.png"
    text.write_text("definitely not a PNG\n")
    with pytest.raises(ImageError, match=r"notes\.png: not a recognised image"):
        load_rgb(text)
    with pytest.raises(ImageError, match="not a regular file"):
        load_rgb(tmp_path)


def test_eps_is_never_handed_to_ghostscript(tmp_path: Path) -> None:
    eps = tmp_path / "x.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a recognised image"):
        load_rgb(eps)


def test_truncated_copy_of_a_real_photo(tmp_path: Path) -> None:
    data = (DATA / "photos" / "beijing-forbidden-city.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated image data"):
        load_rgb(cut)


def test_rgba_and_la_are_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue -> white
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    rgba.save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 2)) == (255, 0, 0)
    assert all(abs(c - 127) <= 1 for c in out.getpixel((1, 0)))
    la = Image.new("LA", (3, 3), (0, 0))
    la.save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png").getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "opaque.png")
    out = load_rgb(tmp_path / "opaque.png")
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (0, 255, 0) and out.getpixel((0, 0)) == (0, 0, 0)
    p.save(tmp_path / "transparent.png", transparency=0)
    out = load_rgb(tmp_path / "transparent.png")
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (0, 255, 0)
    p.save(tmp_path / "transparent.gif", transparency=0)
    assert load_rgb(tmp_path / "transparent.gif").getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_greyscale_and_bilevel(tmp_path: Path) -> None:
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    for name in ("c.jpg", "c.tif"):
        r, g, b = load_rgb(tmp_path / name).getpixel((2, 2))
        assert r > 200 and g < 60 and b < 60, (name, r, g, b)
    Image.new("L", (5, 5), 77).save(tmp_path / "l.png")
    assert load_rgb(tmp_path / "l.png").getpixel((0, 0)) == (77, 77, 77)
    Image.new("1", (5, 5), 1).save(tmp_path / "b.png")
    assert load_rgb(tmp_path / "b.png").getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_and_float_images_keep_their_contrast(tmp_path: Path) -> None:
    arr16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "i16.png")
    src = Image.open(tmp_path / "i16.png")
    assert src.mode in ("I;16", "I")
    out = load_rgb(tmp_path / "i16.png")
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]
    Image.fromarray(np.array([[0, 257 * 50, 65535]], dtype=np.int32)).save(tmp_path / "i32.tif")
    out = load_rgb(tmp_path / "i32.tif")
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 50, 255]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    out = load_rgb(tmp_path / "f.tif")
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (10, 20)
    # the real Stockholm panorama is stored 205x102 with orientation 6
    assert load_rgb(DATA / "photos" / "stockholm-panorama.jpg").size == (102, 205)


def test_decompression_bomb_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png: rejected as a decompression bomb \(64x64 = 4096"):
        load_rgb(tmp_path / "big.png", max_pixels=1000)
    assert load_rgb(tmp_path / "big.png", max_pixels=4096).size == (64, 64)
    # Pillow's own DecompressionBombWarning counts as an error too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_rgb(tmp_path / "big.png", max_pixels=10**9)
    with pytest.raises(ValueError, match="max_pixels"):
        load_rgb(tmp_path / "big.png", max_pixels=0)


def test_result_is_detached_from_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (6, 6), (1, 2, 3)).save(tmp_path / "x.png")
    out = load_rgb(tmp_path / "x.png")
    (tmp_path / "x.png").unlink()
    assert out.getpixel((5, 5)) == (1, 2, 3)
