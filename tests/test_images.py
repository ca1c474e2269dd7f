"""Discovery and safe decoding of every image kind the engine promises to read."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.photos.images import ImageDecodeError, decode_rgb, discover_images, load_rgb, load_rgb_with_hash
from core.photos.preprocess import load_model_input, to_model_input


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


# --- discovery: links that leave the folder, unreadable folders, depth (issue 12, holes 5 and 7) -------------
def test_links_leaving_the_folder_are_not_followed_and_are_counted(tmp_path):
    from core.photos.images import discover

    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"x")
    (outside / "sub" / "more.png").write_bytes(b"x")
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "p.jpg").write_bytes(b"x")
    (root / "to_outside_dir").symlink_to(outside, target_is_directory=True)
    (root / "to_outside_file.jpg").symlink_to(outside / "secret.jpg")
    (root / "inside_link.jpg").symlink_to(root / "a" / "p.jpg")  # stays inside: followed
    found = discover(root)
    assert [p.relative_to(root).as_posix() for p in found.paths] == ["inside_link.jpg", "a/p.jpg"]
    assert sorted(Path(p).name for p in found.skipped_links) == ["to_outside_dir", "to_outside_file.jpg"]
    assert found.n_skipped_links == 2 and found.unreadable_dirs == []
    assert discover_images(root) == found.paths  # the thin wrapper gives the same paths


def test_scanning_through_a_linked_root_still_stays_inside(tmp_path):
    from core.photos.images import discover

    real = tmp_path / "real"
    (real / "s").mkdir(parents=True)
    (real / "s" / "q.jpg").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    found = discover(tmp_path / "alias")
    assert [p.name for p in found.paths] == ["q.jpg"] and found.skipped_links == []


def test_unreadable_subfolder_is_recorded_and_the_walk_goes_on(tmp_path, monkeypatch):
    import core.photos.images as images

    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.jpg").write_bytes(b"x")
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "y.jpg").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):  # root can read chmod-000 folders, so simulate the permission error
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    found = images.discover(tmp_path)
    assert [p.name for p in found.paths] == ["y.jpg"]
    assert found.unreadable_dirs == [str(tmp_path / "locked")]
    assert len(found.errors) == 1 and "Permission denied" in found.errors[0] and "locked" in found.errors[0]
    errors: list[str] = []
    assert discover_images(tmp_path, errors=errors) == found.paths and errors == found.errors


def test_folders_nested_deeper_than_the_recursion_limit_are_walked(tmp_path):
    import sys

    depth = sys.getrecursionlimit() + 50
    chain = [str(tmp_path / "deep")]
    for _ in range(depth - 1):  # Path.mkdir(parents=True), os.makedirs and shutil.rmtree all recurse
        chain.append(os.path.join(chain[-1], "d"))
    try:
        for folder in chain:
            os.mkdir(folder)
        bottom = Path(chain[-1]) / "bottom.jpg"
        bottom.write_bytes(b"x")
        assert discover_images(tmp_path) == [bottom]  # raised RecursionError with the recursive walk
    finally:  # pytest's own clean-up of tmp_path would hit the recursion limit: remove bottom-up here
        Path(chain[-1], "bottom.jpg").unlink(missing_ok=True)
        for folder in reversed(chain):
            if os.path.isdir(folder):
                os.rmdir(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_not_a_regular_file_and_is_never_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for a blocking read would hang the run
    assert discover_images(tmp_path) == [fifo]  # discovered, so it becomes an error row
    with pytest.raises(ImageDecodeError, match="not a regular file") as info:
        load_rgb(fifo)
    assert "FIFO" in str(info.value) and "empty" not in str(info.value)
    arr, digest, error = load_rgb_with_hash(fifo)
    assert arr is None and digest is None and "not a regular file" in error


# --- wide greyscale without float64 copies, decoder bounded by bytes (issue 12, hole 6) --------------------
def _reference_gray(arr: np.ndarray, mode: str) -> np.ndarray:
    a = arr.astype(np.float64)
    if mode == "F":
        lo, hi = np.nanmin(a), np.nanmax(a)
        return np.clip(np.nan_to_num((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    peak = 65535.0 if mode == "I;16" or a.max() > 255 else 255.0
    return np.clip(np.rint(a * (255.0 / peak)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I-wide", "I-narrow", "F"])
def test_wide_greyscale_is_converted_strip_by_strip_exactly(mode, monkeypatch):
    import core.photos.images as images

    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (37, 23), dtype=np.uint16)
        im = Image.fromarray(arr)
        assert im.mode == "I;16"
    elif mode == "I-wide":
        arr = rng.integers(-1000, 80000, (37, 23)).astype(np.int32)
        im = Image.fromarray(arr, "I")
    elif mode == "I-narrow":
        arr = rng.integers(0, 256, (37, 23)).astype(np.int32)
        im = Image.fromarray(arr, "I")
    else:
        arr = rng.normal(0, 3, (37, 23)).astype(np.float32)
        arr[3, 4] = np.nan
        im = Image.fromarray(arr, "F")
    monkeypatch.setattr(images, "STRIP_PIXELS", 50)  # two rows per strip: many strips
    got = images._gray_to_uint8(im)
    want = _reference_gray(np.where(np.isnan(arr), np.nanmin(arr), arr) if mode == "F" else arr,
                           "I;16" if mode == "I;16" else mode[0])
    if mode == "F":
        want[3, 4] = 0
    np.testing.assert_array_equal(got, want)
    rgb = decode_rgb(_bytes(im, "TIFF" if mode != "I;16" else "PNG"), "g.img")
    assert rgb.shape == (37, 23, 3) and (rgb == got[..., None]).all()


def test_decoder_memory_is_bounded_by_bytes_not_only_pixels(monkeypatch):
    import core.photos.images as images

    assert images.decoded_bytes(100, 50, "I;16") == 10_000 and images.decoded_bytes(100, 50, "RGBA") == 20_000
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 15_000)
    narrow = _bytes(Image.new("L", (100, 100), 7), "PNG")
    wide = _bytes(Image.fromarray(np.full((100, 100), 500, np.uint16)), "PNG")
    assert decode_rgb(narrow, "narrow.png").shape == (100, 100, 3)  # 10 000 bytes: decoded
    with pytest.raises(ImageDecodeError, match="MiB once decoded"):
        decode_rgb(wide, "wide.png")  # same pixel count, 20 000 bytes: refused before decoding


def test_huge_16bit_greyscale_png_decodes_in_bounded_memory(tmp_path):
    """An 8000x8000 16-bit PNG (~100 KB on disk): peak RSS of a fresh process decoding it stays small.

    The float64 conversion took ~1.7 GB here (4.2 GB at 13000x13000, bench/bench_decode_memory.py).
    """
    import importlib.util
    import subprocess
    import sys

    if sys.platform != "linux":
        pytest.skip("VmHWM in /proc/self/status is Linux's")
    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("bench_decode_memory", repo / "bench" / "bench_decode_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    png = bench.write_gray16_png(tmp_path / "big.png", 8000, 8000)
    assert png.stat().st_size < 1_000_000
    code = ("import resource, sys; sys.path.insert(0, sys.argv[1]); from core.photos.images import load_rgb; "
            "a = load_rgb(sys.argv[2]); assert a.shape == (8000, 8000, 3) and a[-1, 0, 0] == ((7999 * 97) % 65536 + 128) // 257; "
            # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a large pytest
            # process (TensorFlow loaded by earlier tests) would report the parent's size.
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    proc = subprocess.run([sys.executable, "-c", code, str(repo), str(png)], capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    # 8000 x 8000: 122 MiB of 16-bit pixels + 183 MiB of RGB result; the float64 path needed over 1.5 GiB.
    assert peak_mib < 600, f"peak RSS {peak_mib:.0f} MiB"
