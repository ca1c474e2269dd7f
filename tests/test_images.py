"""Discovery and safe decoding of every image kind the engine promises to read."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from core.images import ImageDecodeError, decode_rgb, discover_images, load_rgb, load_rgb_with_hash
from core.preprocess import load_model_input, to_model_input


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_discovery_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    for rel in ["b.jpg", "a.PNG", "sub/c.jfif", "sub/deep/d.webp", "notes.txt", ".hidden.jpg", ".git/e.jpg",
                "x.tif", "y.tiff", "z.bmp", "w.gif", "v.jpeg"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_images(tmp_path)]
    assert found == ["a.PNG", "b.jpg", "v.jpeg", "w.gif", "x.tif", "y.tiff", "z.bmp", "sub/c.jfif", "sub/deep/d.webp"]
    assert discover_images(tmp_path) == discover_images(tmp_path)


def test_discovery_survives_symlink_loops(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p.jpg").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    found = discover_images(tmp_path)
    assert [p.name for p in found] == ["p.jpg"]


def test_discovery_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such folder"):
        discover_images(tmp_path / "nope")


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    arr = decode_rgb(_bytes(im, "JPEG", exif=exif), "rot.jpg")
    assert arr.shape == (40, 20, 3)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1"])
def test_modes_become_8bit_rgb(mode):
    im = Image.new("RGB", (16, 12), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    arr = decode_rgb(_bytes(im, fmt), f"x.{fmt.lower()}")
    assert arr.dtype == np.uint8 and arr.shape == (12, 16, 3)


def test_transparent_pixels_are_composited_on_white():
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    arr = decode_rgb(_bytes(im, "PNG"), "alpha.png")
    assert (arr == 255).all()


def test_palette_with_transparency_is_composited_on_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    im.putpixel((0, 0), 1)
    arr = decode_rgb(_bytes(im, "PNG", transparency=0), "pal.png")
    assert tuple(arr[0, 0]) == (10, 200, 10)
    assert tuple(arr[5, 5]) == (255, 255, 255)


def test_16bit_grayscale_is_scaled_not_clipped():
    data = np.full((10, 10), 65535 // 2, dtype=np.uint16)
    im = Image.fromarray(data)
    arr = decode_rgb(_bytes(im, "PNG"), "deep.png")
    assert 120 <= int(arr[0, 0, 0]) <= 135  # half-scale grey, not saturated white


def test_gif_first_frame_is_used():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    arr = decode_rgb(buf.getvalue(), "anim.gif")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


def test_truncated_jpeg_is_a_clear_error(tmp_path):
    data = _bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg.*truncated"):
        load_rgb(path)


def test_decompression_bomb_is_refused_by_pixel_count_before_decoding():
    # A 1-bit 20000x20000 PNG is tiny on disk but 400 MP once decoded.
    data = _bytes(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageDecodeError, match="safety limit"):
        decode_rgb(data, "bomb.png")


def test_unreadable_file_is_an_error_result_not_an_exception(tmp_path):
    bad = tmp_path / "page.jpg"
    bad.write_text("<html>not an image</html>")
    arr, digest, error = load_rgb_with_hash(bad)
    assert arr is None and digest is not None and "page.jpg" in error
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    arr, digest, error = load_rgb_with_hash(empty)
    assert arr is None and "empty file" in error


def test_large_jpeg_is_downscaled_while_decoding_but_covers_model_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (90, 30, 30)).save(path, quality=80)
    arr = load_rgb(path, max_side=224)
    assert min(arr.shape[:2]) >= 224 and max(arr.shape[:2]) < 4000
    model_input = load_model_input(path, 224)
    assert model_input.shape == (224, 224, 3) and model_input.dtype == np.uint8


def test_to_model_input_keeps_whole_field_of_view():
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :100] = 255  # left half white
    out = to_model_input(rgb, 50)
    assert out[:, :20].mean() > 250 and out[:, 30:].mean() < 5
