"""Benchmark of `classify`: throughput against this machine's limit, the per-image baseline, memory, cold start.

    python bench/bench_classify.py                       # both architectures, 500 photos
    python bench/bench_classify.py --arch xception --n 100
    python bench/bench_classify.py --arch mobilenetv2 --only e --mem-n 500,10000

Figures (per architecture):
  (a) decode + resize of every file in parallel, alone (img/s)
  (b) the model's forward pass alone on pre-decoded batches (img/s); the limit is min(a, b)
  (c) end-to-end InferenceEngine.run (img/s) and its ratio to the limit (target >= 0.8)
  (d) the study's way: keras load_img + model.predict on a batch of one (img/s); speed-up of (c) (target >= 5x)
  (e) peak RSS of `mpox-triage classify` on 500 vs 10,000 files (target: flat)
  (f) cold start of `mpox-triage classify` on one image (wall s) and what dominates it

Uses the shipped bundle models/<arch> when present, else a stand-in with the same compute (see
benchlib.shipped_or_standin_bundle). Generated photos live in $MPOX_BENCH_DIR (default /tmp), never in the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402
from benchlib import REPO, Timer, load_now  # noqa: E402

FIGURES = "abcdef"


def out(line: str = "") -> None:
    print(line, flush=True)


def decode_all(paths: list[Path], size: int, workers: int) -> tuple[list[np.ndarray], float]:
    """(a): the engine's per-file work (read, hash, decode with JPEG draft, resize) on all cores, nothing else."""
    from core.preprocess import load_model_input_with_hash

    with Timer() as t:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda p: load_model_input_with_hash(p, size), paths))
    arrays = [arr for arr, _, _ in results if arr is not None]
    return arrays, t.seconds


def forward_all(bundle, arrays: list[np.ndarray], batch_size: int) -> float:
    """(b): Bundle.forward alone over pre-decoded batches (every batch shape traced beforehand)."""
    batches = [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]
    for shape in {b.shape for b in batches}:
        bundle.forward(np.zeros(shape, np.uint8))
    with Timer() as t:
        for b in batches:
            bundle.forward(b)
    return t.seconds


def end_to_end(bundle, paths: list[Path], batch_size: int) -> tuple[float, int]:
    from core.inference import InferenceEngine

    engine = InferenceEngine(bundle, batch_size=batch_size)
    with Timer() as t:
        ok = sum(1 for r in engine.run(paths) if r.ok)
    return t.seconds, ok


def study_way(bundle, paths: list[Path]) -> float:
    """(d): what the study's notebooks do per image: keras load_img at target size, predict on a batch of one."""
    import keras

    size = bundle.input_size
    model = bundle.model
    model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)  # build predict_function first
    with Timer() as t:
        for p in paths:
            img = keras.utils.load_img(p, target_size=(size, size))
            x = keras.utils.img_to_array(img)[None]
            model.predict(x, verbose=0)
    return t.seconds


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", *args]


def memory(bundle_dir: Path, base_folder: Path, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(e): peak RSS of the real CLI (one process per folder size), measured by wait4 on that process."""
    rows = []
    for n in sizes:
        folder = base_folder if n == len_files(base_folder) else benchlib.linked_folder(base_folder, n)
        with tempfile.TemporaryDirectory() as tmp:
            rss, wall, rc, err = benchlib.peak_rss_mib_of(
                cli_cmd("classify", str(folder), "--model", str(bundle_dir), "--csv", f"{tmp}/out.csv", "--quiet"))
        if rc != 0:
            raise SystemExit(f"classify on {folder} failed ({rc}):\n{err}")
        rows.append((n, rss, wall))
    return rows


def len_files(folder: Path) -> int:
    from core.images import discover_images

    return len(discover_images(folder))


COLD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import core.cli, core.commands.classify
t1 = time.perf_counter()
from core.tf_runtime import load_tensorflow
load_tensorflow()
t2 = time.perf_counter()
from core.bundle import load_bundle, verify_bundle
verify_bundle(sys.argv[1])
t3 = time.perf_counter()
bundle = load_bundle(sys.argv[1])
t4 = time.perf_counter()
from core.inference import InferenceEngine
list(InferenceEngine(bundle).run([sys.argv[2]]))
t5 = time.perf_counter()
list(InferenceEngine(bundle).run([sys.argv[2]]))
t6 = time.perf_counter()
print(json.dumps({"import core.cli + classify module": t1 - t0, "import tensorflow + keras": t2 - t1,
                  "verify SHA-256 of bundle files": t3 - t2, "load_bundle (verify + keras load)": t4 - t3,
                  "first image (trace + decode + forward)": t5 - t4, "second image (warm)": t6 - t5}))
"""


def cold_start(bundle_dir: Path, image: Path, repeats: int = 3) -> dict:
    """(f): wall time of the CLI subprocess on one image, a phase breakdown and the slowest imports."""
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one"
        one.mkdir()
        (one / image.name).write_bytes(image.read_bytes())
        walls = []
        for _ in range(repeats):
            with Timer() as t:
                proc = subprocess.run(cli_cmd("classify", str(one), "--model", str(bundle_dir), "--quiet"),
                                      capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"classify on one image failed:\n{proc.stderr}")
            walls.append(t.seconds)
        phases = json.loads(subprocess.run([sys.executable, "-c", COLD_CHILD, str(bundle_dir), str(one / image.name)],
                                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        imp = subprocess.run([sys.executable, "-X", "importtime", "-m", "core.cli", "classify", str(one), "--model",
                              str(bundle_dir), "--quiet"], capture_output=True, text=True)
    top: dict[str, int] = {}
    for line in imp.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only: their cumulative time includes children
            name = m.group(4).split(".")[0]
            top[name] = top.get(name, 0) + int(m.group(2))
    return {"walls": walls, "phases": phases,
            "imports": sorted(top.items(), key=lambda kv: -kv[1])[:6]}


def bench_arch(arch: str, args, folder: Path) -> dict:
    from core.bundle import load_bundle
    from core.images import discover_images

    bundle_dir, what = benchlib.shipped_or_standin_bundle(arch, prefer_shipped=not args.standin)
    bundle = load_bundle(bundle_dir)
    size = bundle.input_size
    paths = discover_images(folder)
    n = len(paths)
    workers = args.decode_workers or os.cpu_count() or 2
    res: dict = {"arch": arch, "n": n, "bundle": what}
    out(f"\n== {arch} ({size}x{size}), {what}")
    out(f"   folder: {benchlib.folder_summary(folder)}")
    want = set(args.only)
    if want & set("abcd"):
        arrays, t_dec = decode_all(paths, size, workers)
        a = n / t_dec
        res["a"] = a
        out(f"(a) decode+resize alone, {workers} threads: {a:8.1f} img/s   ({t_dec:.1f} s; load {load_now()})")
        t_fwd = forward_all(bundle, arrays, args.batch_size)
        b = len(arrays) / t_fwd
        res["b"] = b
        del arrays
        limit = min(a, b)
        res["limit"] = limit
        out(f"(b) forward pass alone, batch {args.batch_size}: {b:8.1f} img/s   ({t_fwd:.1f} s; load {load_now()})")
        out(f"    limit = min(a, b) = {limit:.1f} img/s ({'decode' if a < b else 'model'}-bound)")
    if want & set("cd"):
        t_e2e, ok = end_to_end(bundle, paths, args.batch_size)
        c = n / t_e2e
        res["c"] = c
        res["ratio_limit"] = c / res["limit"]
        verdict = "meets" if c / res["limit"] >= 0.8 else "BELOW"
        out(f"(c) end-to-end InferenceEngine.run: {c:8.1f} img/s   ({t_e2e:.1f} s, {ok}/{n} ok; load {load_now()})")
        out(f"    ratio to limit: {c / res['limit']:.2f} ({verdict} target 0.80)")
    if "d" in want:
        t_study = study_way(bundle, paths)
        d = n / t_study
        res["d"] = d
        res["speedup"] = res["c"] / d
        verdict = "meets" if res["speedup"] >= 5 else "BELOW"
        out(f"(d) study's way (load_img + predict on 1): {d:8.1f} img/s   ({t_study:.1f} s; load {load_now()})")
        out(f"    speed-up of (c) over (d): {res['speedup']:.1f}x ({verdict} target 5x)")
    if "e" in want:
        rows = memory(bundle_dir, folder, args.mem_n)
        res["memory"] = rows
        for k, rss, wall in rows:
            out(f"(e) peak RSS of `mpox-triage classify` on {k:>6} files: {rss:7.0f} MiB   ({wall:.0f} s, "
                f"{k / wall:.1f} img/s incl. start-up; load {load_now()})")
        if len(rows) > 1:
            growth = rows[-1][1] - rows[0][1]
            out(f"    growth {rows[0][0]} -> {rows[-1][0]} files: {growth:+.0f} MiB "
                f"({growth * 1024 / (rows[-1][0] - rows[0][0]):.1f} KiB per extra file)")
        out("    (larger folders: hard links cycling over the 500 photos; every file is read, hashed, decoded "
            "and scored)")
    if "f" in want:
        crop = next((p for p in paths if p.parent.name == "crops"), paths[0])
        cs = cold_start(bundle_dir, crop)
        res["cold"] = cs
        out(f"(f) cold start `mpox-triage classify` on one image: median {statistics.median(cs['walls']):.1f} s "
            f"(runs: {', '.join(f'{w:.1f}' for w in cs['walls'])}; load {load_now()})")
        for name, secs in cs["phases"].items():
            out(f"    {name:<42} {secs:6.2f} s")
        out("    slowest top-level imports (python -X importtime, cumulative): "
            + ", ".join(f"{k} {v / 1e6:.2f} s" for k, v in cs["imports"]))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="all", choices=["all", *benchlib.ARCHS])
    p.add_argument("--n", type=int, default=500, help="photos in the folder (default 500)")
    p.add_argument("--phone-fraction", type=float, default=0.2,
                   help="share of 3000-4000 px phone JPEGs; the rest are real 224x224 crops (default 0.2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--decode-workers", type=int, default=None, help="threads for (a) (default: CPU count)")
    p.add_argument("--only", default=FIGURES, help="which figures, e.g. abcd (default: all)")
    p.add_argument("--mem-n", default="500,10000", help="folder sizes for (e) (default 500,10000)")
    p.add_argument("--standin", action="store_true", help="use the stand-in bundle even when models/<arch> exists")
    args = p.parse_args(argv)
    args.only = [c for c in args.only if c in FIGURES]
    args.mem_n = [int(x) for x in args.mem_n.split(",")]
    if "c" in args.only or "d" in args.only:
        args.only = sorted(set(args.only) | {"a", "b"} | ({"c"} if "d" in args.only else set()))

    from core.tf_runtime import load_tensorflow

    load_tensorflow()
    out(f"machine: {benchlib.machine_line()}")
    folder = benchlib.photo_folder(args.n, args.phone_fraction)
    archs = benchlib.ARCHS if args.arch == "all" else (args.arch,)
    results = [bench_arch(a, args, folder) for a in archs]
    out(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    summary = Path(benchlib.BENCH_DIR) / "last_bench_classify.json"
    summary.write_text(json.dumps(results, indent=1, default=str))
    out(f"(raw figures: {summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
