"""Stage-by-stage profile of one `classify` process (issue 26, item 4): where a run's time goes.

    nice -n 10 python bench/classify_stages.py                               # this checkout
    git archive 7fc4e12 core resources | tar -x -C /tmp/before && \\
        nice -n 10 python bench/classify_stages.py --code /tmp/before        # another version of core/

Two views of `python -m core.cli classify FOLDER --model M --csv OUT --quiet` on the 300 photos of
bench/classify_speed.py (models from this checkout's models/, MPOX_TRIAGE_MODELS_DIR):
  main thread (cProfile, the issue's view): imports, forward pass (Bundle.forward), waiting for decoded
      photos, shift test (folder_shift), writing (CSV, summary), the rest; wall seconds of the main thread;
  CPU per stage of the decode threads' work, measured alone on one thread: read + decode, resize, scope
      check; and the process's CPU time (user + sys) of --repeat plain runs (median), with the load average.
Lazy imports inside a stage (1.3.0's shift test imported scipy.stats and scikit-learn) count in both.
"""

from __future__ import annotations

import argparse
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from classify_speed import photo_folder  # noqa: E402

# stage -> (file suffix, function name) whose cumulative time it is; suffixes are bare file names so that a
# checkout from before the package layout (core/bundle.py, not core/models/bundle.py) is profiled alike.
STAGES = {
    "imports": [("<frozen importlib._bootstrap>", "_find_and_load")],
    "forward pass": [("/bundle.py", "forward"), ("/combined.py", "forward_parts")],
    "waiting for decoded photos": [("_base.py", "result")],
    "shift test": [("/shift.py", "folder_shift")],
    "writing (CSV, summary)": [("/csvio.py", "add"), ("/csvio.py", "close"), ("/workspace.py", "add"),
                               ("/classify.py", "_write_json_atomic")],
}


def cli(code: Path, folder: Path, model: str, out: str, profile: str | None = None) -> list[str]:
    head = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    return head + ["-m", "core.cli", "classify", str(folder), "--model", model, "--csv", out, "--quiet"]


def main_thread(code: Path, folder: Path, model: str, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prof = f"{tmp}/run.prof"
        proc = subprocess.run(cli(code, folder, model, f"{tmp}/out.csv", prof), cwd=code, env=env,
                              capture_output=True, text=True)
        if not Path(f"{tmp}/out.csv").is_file():  # cProfile hides the CLI's exit status
            raise SystemExit(f"classify failed:\n{proc.stderr}")
        stats = pstats.Stats(prof).stats
    total = max(v[3] for v in stats.values())
    out = {"main thread total": total}
    for stage, keys in STAGES.items():
        out[stage] = sum(v[3] for (f, _line, name), v in stats.items()
                         if any(f.endswith(suffix) and name == fn for suffix, fn in keys))
    return out


def decode_cpu(code: Path, paths: list[Path], size: int) -> dict:
    probe = f"""
import sys, time
sys.path.insert(0, {str(code)!r})
try:
    from core.photos.images import load_rgb_with_hash
    from core.photos.preprocess import to_model_input
    from core.photos import scope
except ImportError:   # a checkout from before the package layout
    from core.images import load_rgb_with_hash
    from core.preprocess import to_model_input
    from core import scope
paths = sys.argv[1:]
t0 = time.process_time(); rgbs = [load_rgb_with_hash(p, max_side={size})[0] for p in paths]
t1 = time.process_time(); [to_model_input(r, {size}) for r in rgbs]
t2 = time.process_time(); [scope.scope_score(r) for r in rgbs]
t3 = time.process_time(); print(t1 - t0, t2 - t1, t3 - t2)
"""
    got = subprocess.run([sys.executable, "-c", probe, *map(str, paths)], cwd=code, capture_output=True, text=True,
                         check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    a, b, c = map(float, got.stdout.split())
    return {"read + decode": a, "resize": b, "scope check": c}


def process_cpu(code: Path, folder: Path, model: str, env: dict, repeat: int) -> tuple[float, float]:
    cpus, walls = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            w0 = time.perf_counter()
            subprocess.run(cli(code, folder, model, f"{tmp}/out.csv"), cwd=code, env=env, check=True,
                           capture_output=True)
            walls.append(time.perf_counter() - w0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(cpus), statistics.median(walls)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", default=str(REPO), help="a checkout whose core/ runs (default: this one)")
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--folder", default="/work/wt/_cache/shiftspeed/photos300")
    args = ap.parse_args(argv)
    code = Path(args.code).resolve()
    paths = photo_folder(Path(args.folder))
    env = {**os.environ, "MPOX_TRIAGE_MODELS_DIR": str(REPO / "models"), "PYTHONPATH": str(code)}
    print(f"core/ from {code}; {args.model} on {len(paths)} photos; load {os.getloadavg()[0]:.1f}", flush=True)
    mt = main_thread(code, Path(args.folder), args.model, env)
    print("main thread (cProfile, wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in mt.items()), flush=True)
    dec = decode_cpu(code, paths, 224)
    print("decode threads' work alone (cpu s, one thread): " + ", ".join(f"{k} {v:.2f}" for k, v in dec.items()),
          flush=True)
    cpu, wall = process_cpu(code, Path(args.folder), args.model, env, args.repeat)
    print(f"whole process: {cpu:.2f} s cpu (user + sys), {wall:.2f} s wall (medians of {args.repeat}); "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
