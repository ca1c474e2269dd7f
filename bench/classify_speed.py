"""Whole-process `classify` against the model's own forward-only bound and the study's per-image predict
(issue 26, items 1-4), on 300 shared photos: 150 MSID + 150 MSLD v1 (any split; only time is measured).

    nice -n 10 python bench/classify_speed.py                        # mobilenetv2 and combined
    nice -n 10 python bench/classify_speed.py --models mobilenetv2 --repeat 3 --study-n 100

Per model:
  forward-only: Bundle.forward on the photos decoded beforehand, batch 32, the bundle's own runtime and
                threads (median of --repeat); photos/s = 300 / its wall time
  whole process: a fresh `python -m core.cli classify FOLDER --model M --csv ... --quiet`, start-up, decode,
                scope check, forward, shift test and CSV included (median wall of --repeat); its CPU time
  ratio = whole-process photos/s / forward-only photos/s (targets: mobilenetv2 >= 0.5, combined >= 0.9)
and, for mobilenetv2, the study's way (keras load_img + model.predict on one photo at a time, TensorFlow
imported first) on --study-n photos, and the speed-up of the whole process over it (target >= 10x).
The photos are copied once to --folder (default /work/wt/_cache/shiftspeed/photos300), never into the repo.
On a shared machine wall times move with the load: each figure prints the 1-minute load average and CPU
seconds, which move less.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MPOX_TRIAGE_SHARED", REPO.parent / "shared")) / "data"


def photo_folder(folder: Path) -> list[Path]:
    """150 MSID + 150 MSLD v1 photos (seeded pick from the manifest), copied to `folder` once."""
    if not folder.is_dir() or len(list(folder.iterdir())) != 300:
        folder.mkdir(parents=True, exist_ok=True)
        with open(SHARED / "manifest.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        rng = random.Random(0)
        pick = (rng.sample([r for r in rows if r["dataset"] == "MSID"], 150)
                + rng.sample([r for r in rows if r["dataset"] != "MSID"], 150))
        for r in pick:
            shutil.copy(SHARED / r["path"], folder / r["path"].replace("/", "_"))
    return sorted(folder.iterdir())


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def forward_only(name: str, paths: list[Path], repeat: int) -> dict:
    from core.models.bundle import load_bundle
    from core.triage.inference import load_input, stack_inputs

    bundle = load_bundle(name, models_dir=REPO / "models")
    sizes = tuple(getattr(bundle, "input_sizes", (bundle.input_size,)))
    inputs = [load_input(p, sizes if len(sizes) > 1 else sizes[0])[0] for p in paths]
    inputs = [x for x in inputs if x is not None]
    batches = [stack_inputs(inputs[i:i + 32]) for i in range(0, len(inputs), 32)]
    bundle.forward(batches[0])
    walls, cpus = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        for b in batches:
            bundle.forward(b)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall = statistics.median(walls)
    return {"photos": len(inputs), "wall_s": wall, "cpu_s": statistics.median(cpus),
            "photos_per_s": len(inputs) / wall, "runtime": bundle.runtime_name}


def whole_process(name: str, folder: Path, repeat: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            w0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "core.cli", "classify", str(folder), "--model", name,
                                   "--csv", f"{tmp}/out.csv", "--quiet"], cwd=REPO, capture_output=True, text=True)
            walls.append(time.perf_counter() - w0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                raise SystemExit(f"classify failed:\n{proc.stderr}")
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    wall = statistics.median(walls)
    return {"wall_s": wall, "cpu_s": statistics.median(cpus), "photos_per_s": 300 / wall, "walls": walls}


def study_way(paths: list[Path]) -> dict:
    """The study's notebooks: keras load_img at the model's size, predict on a batch of one, per photo."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A 1.4.0 bundle has no model.keras: its Keras form is rebuilt from the local ImageNet weights.
    os.environ.setdefault("MPOX_TRIAGE_WEIGHTS_DIR", str(SHARED.parent / "weights"))
    import numpy as np

    from core.models.bundle import load_bundle

    bundle = load_bundle("mobilenetv2", models_dir=REPO / "models")
    import keras

    model = bundle.model
    size = bundle.input_size
    model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
    c0, w0 = time.process_time(), time.perf_counter()
    for p in paths:
        x = keras.utils.img_to_array(keras.utils.load_img(p, target_size=(size, size)))[None]
        model.predict(x, verbose=0)
    wall = time.perf_counter() - w0
    return {"photos": len(paths), "wall_s": wall, "cpu_s": time.process_time() - c0,
            "photos_per_s": len(paths) / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenetv2,combined")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--study-n", type=int, default=300, help="photos for the study's per-image way (0: skip)")
    ap.add_argument("--folder", default="/work/wt/_cache/shiftspeed/photos300")
    args = ap.parse_args(argv)
    if not (SHARED / "manifest.csv").is_file():
        raise SystemExit(f"needs the shared photos: {SHARED}/manifest.csv not found")
    paths = photo_folder(Path(args.folder))
    print(f"{len(paths)} photos in {args.folder}; {os.cpu_count()} cores; {load()}", flush=True)
    whole = {}
    for name in args.models.split(","):
        fwd = forward_only(name, paths, args.repeat)
        print(f"{name}: forward-only {fwd['photos_per_s']:.1f} photos/s ({fwd['wall_s']:.2f} s wall, "
              f"{fwd['cpu_s']:.2f} s cpu, runtime {fwd['runtime']}; {load()})", flush=True)
        w = whole[name] = whole_process(name, Path(args.folder), args.repeat)
        print(f"{name}: whole process {w['photos_per_s']:.1f} photos/s ({w['wall_s']:.2f} s wall, "
              f"{w['cpu_s']:.2f} s cpu; runs {', '.join(f'{x:.1f}' for x in w['walls'])} s; {load()}); "
              f"ratio to forward-only {w['photos_per_s'] / fwd['photos_per_s']:.2f}, "
              f"cpu ratio {fwd['cpu_s'] / w['cpu_s']:.2f}", flush=True)
    if args.study_n and "mobilenetv2" in whole:
        s = study_way(paths[:: max(1, len(paths) // args.study_n)][: args.study_n])
        w = whole["mobilenetv2"]
        print(f"study's way (keras load_img + predict, one photo at a time): {s['photos_per_s']:.1f} photos/s "
              f"({s['wall_s']:.1f} s wall for {s['photos']}, {s['cpu_s']:.1f} s cpu; {load()}); 300 photos would take "
              f"{300 / s['photos_per_s']:.1f} s; whole-process mobilenetv2 speed-up "
              f"{w['photos_per_s'] / s['photos_per_s']:.1f}x (cpu: {300 * s['cpu_s'] / s['photos'] / w['cpu_s']:.1f}x)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
