"""Benchmark of the Ray engine against the local engine on the same photos, at equal cores.

    python bench/bench_scale.py                 # 2,000 rows, shipped MobileNetV2 bundle
    python bench/bench_scale.py --n 3000 --arch xception

Photos: the real photos of ../shared/data/manifest.csv (all splits, 973 files), listed over and over
until there are --n rows (so each file is read about twice; the page cache is warm for every engine
alike), else generated 224x224 crops (benchlib.photo_folder). Scores are checked to agree.

Figures:
  start-up   ray.init of a local instance (once), and each run's time to its first result (actors
             start, import TensorFlow / LiteRT and load and verify the bundle)
  local      core.triage.inference.InferenceEngine.run, bundle loaded beforehand (photos/s)
  ray 1x2    RayEngine, 1 actor holding 2 CPUs (equal cores with local)
  ray 2x1    RayEngine, 2 actors of 1 CPU each (equal cores with local)
  For Ray, "steady" is the rate after the first result (start-up apart); "end to end" includes it.
  The files are read once before timing (warm page cache for every engine), and local runs before and
  after the Ray runs (the better is kept): the machine is shared, so order would otherwise bias it.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402
from benchlib import SHARED, load_now  # noqa: E402


def out(line: str = "") -> None:
    print(line, flush=True)


def photo_rows(n: int) -> tuple[list[Path], str]:
    manifest = SHARED / "data" / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as fh:
            files = [SHARED / "data" / row["path"] for row in csv.DictReader(fh)]
        rows = [files[i % len(files)] for i in range(n)]
        return rows, f"{len(files)} real photos of ../shared/data, listed {n / len(files):.1f} times ({n} rows)"
    folder = benchlib.photo_folder(n, phone_fraction=0.0)
    from core.photos.images import discover_images

    return discover_images(folder)[:n], f"{n} generated crops in {folder}"


def _tree_cpu_ticks() -> dict[tuple[int, int], int]:
    """{(pid, start time): user+system ticks} of this process and all its descendants (Ray's GCS and
    raylet are children of the driver that started the local instance, its workers children of the raylet)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the name, 0-based: ppid 1, utime 11, stime 12, starttime 19.
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[(pid, stats[pid][2])] = stats[pid][1]
        todo.extend(children.get(pid, []))
    return out


class CpuMeter:
    """CPU seconds used by the process tree between start() and stop(), sampled every 0.2 s so that
    actors that exit at the end of a run still count (up to their last sample). Unlike photos/s, this
    does not depend on how busy the shared machine is."""

    def __init__(self) -> None:
        import threading

        self._first: dict = {}
        self._last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for key, ticks in _tree_cpu_ticks().items():
            self._first.setdefault(key, ticks if self._started else 0)
            self._last[key] = ticks

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def start(self) -> "CpuMeter":
        self._started = True
        self._sample()  # processes alive now count from here
        self._started = False  # processes born later count from zero
        self._thread.start()
        return self

    def seconds(self) -> float:
        self._sample()
        return sum(self._last[k] - self._first[k] for k in self._last) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.seconds()


def timed_run(engine, paths) -> dict:
    meter = CpuMeter().start()
    start = time.perf_counter()
    first = None
    records = []
    for record in engine.run(paths):
        if first is None:
            first = time.perf_counter()
            cpu_first = meter.seconds()
        records.append(record)
    end = time.perf_counter()
    cpu = meter.stop()
    # The first result arrives with its whole batch; steady rate counts what came after that batch.
    batch = getattr(engine, "batch_size", 32)
    steady = (len(records) - batch) / max(end - first, 1e-9)
    return {"records": records, "total_s": end - start, "first_s": first - start,
            "end_to_end": len(records) / (end - start), "steady": steady, "load": load_now(),
            "cpu_ms": 1000 * cpu / max(len(records), 1),
            "cpu_steady_ms": 1000 * (cpu - cpu_first) / max(len(records) - batch, 1), "cpu_startup_s": cpu_first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mobilenetv2")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from core.models.bundle import load_bundle
    from core.triage.inference import InferenceEngine
    from core.scale import RayEngine, ray_available

    if not ray_available():
        out('Ray is not installed: pip install -e ".[scale]"')
        return 2
    import ray

    bundle_dir, what = benchlib.shipped_or_standin_bundle(args.arch)
    paths, photos = photo_rows(args.n)
    out(f"machine: {benchlib.machine_line()}")
    out(f"bundle: {what}; photos: {photos}; batch size {args.batch_size}; ray {ray.__version__}")

    for path in set(paths):  # warm the page cache: no engine pays for the first read from disk
        path.read_bytes()
    t = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    load_s = time.perf_counter() - t
    local = timed_run(InferenceEngine(bundle, batch_size=args.batch_size), paths)
    out(f"local: bundle load {load_s:.1f} s (runtime {bundle.runtime_name}); {local['end_to_end']:.1f} photos/s "
        f"{local['cpu_ms']:.1f} CPU ms/photo ({local['total_s']:.1f} s, load average {local['load']})")

    import tempfile

    import secrets

    temp = tempfile.mkdtemp(prefix="mpox-ray-bench-")
    # As core.scale.cluster does: a fresh token in the environment, so Ray writes nothing to ~/.ray.
    if not os.environ.get("RAY_AUTH_MODE"):
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    init_s = time.perf_counter() - t
    out(f"ray.init (local instance, 2 CPUs): {init_s:.1f} s")
    rows = [("local (threads, 2 cores)", None, local)]
    try:
        for label, actors, cpus in (("ray, 1 actor x 2 CPUs", 1, 2), ("ray, 2 actors x 1 CPU", 2, 1)):
            engine = RayEngine(bundle_dir, actors=actors, batch_size=args.batch_size, cpus_per_actor=cpus)
            res = timed_run(engine, paths)
            worst = max(abs(a.p_mpox - b.p_mpox) for a, b in zip(res["records"], local["records"])
                        if a.p_mpox is not None)
            same = [(a.path, a.status, a.error) for a in res["records"]] == \
                   [(b.path, b.status, b.error) for b in local["records"]]
            out(f"{label}: first result after {res['first_s']:.1f} s; steady {res['steady']:.1f} photos/s; "
                f"end to end {res['end_to_end']:.1f} photos/s; CPU {res['cpu_startup_s']:.1f} s to first result, "
                f"{res['cpu_steady_ms']:.1f} ms/photo steady, {res['cpu_ms']:.1f} ms/photo end to end ({res['total_s']:.1f} s, load average {res['load']}); "
                f"same rows {same}, max |dp| {worst:.1e}")
            rows.append((label, actors, res))
        # The machine is shared: local again after the Ray runs, and the better local figure is used.
        again = timed_run(InferenceEngine(bundle, batch_size=args.batch_size), paths)
        out(f"local again: {again['end_to_end']:.1f} photos/s, {again['cpu_ms']:.1f} CPU ms/photo "
            f"({again['total_s']:.1f} s, load average {again['load']}) "
            "(with the idle Ray instance still up)")
        if again["steady"] > local["steady"]:
            local = again
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)

    base = local["steady"]
    out()
    out(f"| engine ({args.n} photos, {args.arch}) | start-up s | steady photos/s | end-to-end photos/s | "
        "steady vs local | CPU ms/photo, steady | CPU ms/photo, end to end |")
    out("|---|---|---|---|---|---|---|")
    out(f"| local (threads, 2 cores) | {load_s:.1f} (bundle load) | {base:.1f} | {local['end_to_end']:.1f} | 1.00 "
        f"| {local['cpu_steady_ms']:.1f} | {local['cpu_ms']:.1f} |")
    for label, _, res in rows[1:]:
        out(f"| {label} | {res['first_s']:.1f} (to first result; + ray.init {init_s:.1f} once) | "
            f"{res['steady']:.1f} | {res['end_to_end']:.1f} | {res['steady'] / base:.2f} | "
            f"{res['cpu_steady_ms']:.1f} | {res['cpu_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
