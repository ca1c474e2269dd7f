"""Issue 18, item 9: decoding holds one RGB copy (16-bit RGB converted strip by strip), huge photos scored by a
small model are reduced while converted, and the decode threads of a run share one memory budget.
The full-size figures (13000x13000) come from bench/bench_decode_memory.py."""

from __future__ import annotations

import io
import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from bench.bench_decode_memory import write_rgb16_png
from core.photos import images
from core.photos.images import DecodeBudget, decode_rgb, load_rgb


def test_16bit_rgb_is_converted_without_whole_image_copies(tmp_path):
    png = write_rgb16_png(tmp_path / "rgb16.png", 3000, 2000)
    data = png.read_bytes()
    tracemalloc.start()
    try:
        arr = decode_rgb(data, png)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert arr.shape == (2000, 3000, 3) and arr.dtype == np.uint8
    assert arr[0, 0].tolist() == [0, 30000 >> 8, 255] and arr[1, 0, 0] == 97 >> 8
    # One RGB array (18 MB) plus strips; the whole-image route (tobytes + asarray) held two to three copies.
    assert peak < 1.6 * arr.nbytes, peak / arr.nbytes


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "L", "LA", "1", "YCbCr"])
def test_strip_conversion_gives_the_same_pixels_as_the_whole_image(mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (700, 1300, 3), dtype=np.uint8), "RGB")
    im = base.convert(mode) if mode != "RGBA" else base.convert("RGBA")
    if mode == "P":
        im.info["transparency"] = 3
    whole = np.asarray(images._to_rgb(im), dtype=np.uint8)
    old_strip = images.STRIP_PIXELS
    images.STRIP_PIXELS = 1300 * 97   # several strips, the last one short
    try:
        assert np.array_equal(images._rgb_strips(im), whole)
    finally:
        images.STRIP_PIXELS = old_strip


def test_a_huge_photo_for_a_small_model_is_reduced_while_converted(monkeypatch):
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1_000_000)
    im = Image.new("RGB", (2400, 1800), (200, 100, 50))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    arr = decode_rgb(buf.getvalue(), "big.png", max_side=224)
    assert arr.shape == (450, 600, 3) and arr[0, 0].tolist() == [200, 100, 50]   # factor 4: short side >= 448
    assert decode_rgb(buf.getvalue(), "big.png").shape == (1800, 2400, 3)       # no max_side: full size


def test_decode_threads_share_one_budget_and_a_too_big_decode_runs_alone():
    budget = DecodeBudget(100)
    inside, most = [0], [0]
    lock = threading.Lock()

    def work(need: int) -> None:
        with budget.hold(need):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(150,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and budget.peak == 150 and budget.used == 0
    small = [threading.Thread(target=work, args=(40,)) for _ in range(4)]
    for t in small:
        t.start()
    for t in small:
        t.join()
    assert budget.peak == 150 and budget.used == 0


def test_load_rgb_releases_its_budget_even_when_decoding_fails(tmp_path):
    bad = tmp_path / "bad.png"
    data = bytearray(write_rgb16_png(tmp_path / "ok.png", 300, 200).read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))   # truncated
    with pytest.raises(images.ImageDecodeError):
        load_rgb(bad)
    assert images.DECODE_BUDGET.used == 0
