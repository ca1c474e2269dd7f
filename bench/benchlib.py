"""Shared pieces of the benchmarks: stand-in bundles, generated photo folders, timing and machine facts.

Everything generated lives under a temporary cache folder ($MPOX_BENCH_DIR, default
/tmp/mpox-triage-bench), never in the repository, and is reused between runs so a benchmark run
spends its time measuring, not generating.
"""

from __future__ import annotations

import csv
import hashlib
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", REPO.parent / "shared"))
BENCH_DIR = Path(os.environ.get("MPOX_BENCH_DIR", Path(os.environ.get("TMPDIR", "/tmp")) / "mpox-triage-bench"))
ARCHS = ("mobilenetv2", "xception")


def machine_line() -> str:
    """CPU model, core count and load average: a figure means little without them."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load} (1/5/15 min)"


def load_now() -> str:
    return f"{os.getloadavg()[0]:.2f}"


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def shipped_or_standin_bundle(arch: str, prefer_shipped: bool = True) -> tuple[Path, str]:
    """The shipped bundle models/<arch> when present, else a stand-in with the same compute.

    The stand-in is build_classifier(arch) on the local ImageNet weights with an untrained head:
    the forward pass costs exactly what the trained model's does. Returns (bundle folder, description).
    """
    shipped = REPO / "models" / arch
    if prefer_shipped and (shipped / "model_card.json").is_file():
        return shipped, f"shipped bundle models/{arch}"
    out = BENCH_DIR / "bundles" / arch
    if not (out / "model_card.json").is_file():
        os.environ.setdefault("MPOX_TRIAGE_WEIGHTS_DIR", str(SHARED / "weights"))
        from core.models.backbones import build_classifier
        from core.models.bundle import ModelCard, save_bundle
        from core.photos.preprocess import arch_spec

        spec = arch_spec(arch)
        model = build_classifier(arch)
        card = ModelCard(name=f"bench-{arch}", version="0.0.0", architecture=arch, input_size=spec.input_size,
                         training_data={"note": "benchmark stand-in: ImageNet backbone, untrained head"})
        save_bundle(model, card, out)
    return out, f"stand-in bundle (ImageNet {arch} + untrained head, same compute) in {out}"


def _real_crops() -> list[Path]:
    manifest = SHARED / "data" / "manifest.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as fh:
        return [SHARED / "data" / row["path"] for row in csv.DictReader(fh)]


def _synthetic_rgb(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A skin-like smooth image with blobs, used when no real crop is available."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.array([200, 150, 130], np.float32) + rng.normal(0, 10, 3)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.15) * min(h, w)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img -= blob[..., None] * np.array([60, 90, 80], np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _phone_photo(src: np.ndarray | None, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A phone-size photo: a lesion crop enlarged to `size` (w, h) plus sensor-like noise.

    The noise matters: a smooth enlargement compresses to a few hundred KB and decodes faster than
    a real 12 MP photo; with noise the JPEG is 2-5 MB, like a phone's.
    """
    import cv2

    w, h = size
    if src is None:
        src = _synthetic_rgb(256, 256, rng)
    big = cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    noise = rng.normal(0, 6, size=(h // 2, w // 2, 3)).astype(np.int16)
    big += cv2.resize(noise, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.clip(big, 0, 255).astype(np.uint8)


PHONE_SIZES = [(4000, 3000), (3000, 4000), (4032, 3024), (3264, 2448), (3000, 3000)]


def photo_folder(n: int, phone_fraction: float = 0.2, seed: int = 0, progress: bool = True) -> Path:
    """A folder of n photos: real 224x224 crops from ../shared/data (copied as they are, PNG and JPEG)
    and generated 3000-4000 px phone-size JPEGs (some with an EXIF rotation tag). Cached by (n, mix, seed).
    """
    from PIL import Image

    n_phone = int(round(n * phone_fraction))
    folder = BENCH_DIR / f"photos-{n}-p{n_phone}-s{seed}"
    done_mark = folder / ".complete"
    if done_mark.is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "crops").mkdir(parents=True)
    (folder / "phone").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    crops = _real_crops()
    for i in range(n - n_phone):
        if crops:
            src = crops[i % len(crops)] if len(crops) >= n else pick.choice(crops)
            shutil.copyfile(src, folder / "crops" / f"crop_{i:05d}{src.suffix.lower()}")
        else:
            Image.fromarray(_synthetic_rgb(224, 224, rng)).save(folder / "crops" / f"crop_{i:05d}.jpg", quality=92)
    t0 = time.perf_counter()
    for i in range(n_phone):
        src = None
        if crops:
            src = np.asarray(Image.open(pick.choice(crops)).convert("RGB"))
        w, h = PHONE_SIZES[i % len(PHONE_SIZES)]
        img = Image.fromarray(_phone_photo(src, (w, h), rng))
        exif = Image.Exif()
        if i % 4 == 3:
            exif[0x0112] = 6  # "rotate 90": exercises EXIF orientation like portrait phone shots
        img.save(folder / "phone" / f"IMG_{i:05d}.jpg", quality=90, exif=exif)
        if progress and (i + 1) % 20 == 0:
            print(f"  generated {i + 1}/{n_phone} phone photos ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    done_mark.write_text("ok\n")
    return folder


def linked_folder(base: Path, n: int) -> Path:
    """A folder of n files that are hard links (symlinks where linking fails) cycling over `base`'s photos.

    Every file is still opened, hashed, decoded and scored; only the disk space is shared.
    """
    from core.photos.images import discover_images

    folder = BENCH_DIR / f"linked-{n}-{hashlib.sha1(str(base).encode()).hexdigest()[:8]}"
    if (folder / ".complete").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    sources = discover_images(base)
    for i in range(n):
        src = sources[i % len(sources)]
        sub = folder / f"d{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        dst = sub / f"f{i:06d}{src.suffix}"
        try:
            os.link(src, dst)
        except OSError:
            os.symlink(src, dst)
    (folder / ".complete").write_text("ok\n")
    return folder


def folder_summary(folder: Path) -> str:
    from core.photos.images import discover_images

    paths = discover_images(folder)
    phones = [p for p in paths if p.parent.name == "phone"]
    size = sum(p.stat().st_size for p in paths)
    return (f"{len(paths)} files ({len(paths) - len(phones)} real 224x224 crops, {len(phones)} generated "
            f"3000-4000 px phone JPEGs), {size / 2**20:.0f} MiB")


# Linux keeps a process's peak RSS across fork/vfork + exec, so a child started straight from a big
# benchmark process (TensorFlow loaded) reports at least the parent's size. A small launcher process
# starts the measured command instead and reports its peak with wait4.
_LAUNCHER = r"""
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
print(json.dumps({"maxrss_kb": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status),
                  "err": err.decode("utf-8", "replace")[-2000:]}))
"""


def peak_rss_mib_of(cmd: list[str], env: dict | None = None) -> tuple[float, float, int, str]:
    """Run a command; return (its peak RSS in MiB, wall seconds, exit status, stderr tail)."""
    import json

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return 0.0, wall, proc.returncode, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info["maxrss_kb"] / 1024.0, wall, info["rc"], info["err"]
