"""Light install (LiteRT + numpy, no TensorFlow) against the full install, side by side.

Each column is a Python environment running `mpox-triage classify` in fresh processes on the same photos
and model bundles: venv size (du), cold start to first row per model (a one-photo folder: the whole
process), throughput per model and for "Both" (combined + its two components in one run), and the
peak RSS of each run. Optionally a third column runs another checkout (e.g. the code before this
change with the 1.2.0 bundles) for the "today" figures.

    python bench/bench_light.py --photos DIR \
        --env light=/tmp/venv-light/bin/python:/work/wt-litert:/tmp/litert_models \
        --env full=/work/main/.venv/bin/python:/work/wt-litert:/tmp/litert_models \
        --env before=/work/main/.venv/bin/python:/tmp/mpox-before:/tmp/mpox-before/models

An env is NAME=PYTHON:CODE_DIR:MODELS_DIR. Photos are copied into a scratch folder under /tmp (never the
repository). The table is printed as Markdown (docs/performance.md, "Light install").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODELS = ("mobilenetv2", "xception", "combined")
BOTH = ("combined", "mobilenetv2", "xception")


@dataclass
class Env:
    name: str
    python: str
    code: str
    models: str
    results: dict = field(default_factory=dict)


def parse_env(text: str) -> Env:
    name, rest = text.split("=", 1)
    python, code, models = rest.split(":")
    return Env(name, python, code, models)


def du_mib(path: str | Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def venv_of(python: str) -> Path:
    return Path(python).parent.parent  # PYTHON is VENV/bin/python (not resolved: it links to the system's)


def classify(env: Env, folder: Path, models: tuple[str, ...], out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `mpox-triage classify` process."""
    cmd = [env.python, "-m", "core.cli", "classify", str(folder), "--csv", str(out), "--quiet"]
    for m in models:
        cmd += ["--model", m]
    envvars = {**os.environ, "PYTHONPATH": env.code, "MPOX_TRIAGE_MODELS_DIR": env.models,
               "TF_CPP_MIN_LOG_LEVEL": "2"}
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=env.code, env=envvars, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{env.name}: {' '.join(cmd)} failed: {err.strip().splitlines()[-1:]}")
    rows = sum(1 for _ in out.open(encoding="utf-8")) - 1
    if rows < 1:
        raise RuntimeError(f"{env.name}: no rows from {' '.join(models)}")
    return wall, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", required=True, help="folder of photos (the first --n are used)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--env", action="append", required=True, type=parse_env)
    ap.add_argument("--app", action="append", default=[], help="NAME=DIR of a built app (dist/mpox-triage)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    src = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.n]
    scratch = Path(tempfile.mkdtemp(prefix="mpox-bench-light-"))
    one, many = scratch / "one", scratch / "many"
    one.mkdir()
    many.mkdir()
    shutil.copy2(src[0], one / src[0].name)
    for p in src:
        shutil.copy2(p, many / p.name)
    n = len(src)
    apps = dict(a.split("=", 1) for a in args.app)
    try:
        for env in args.env:
            env.results["venv MiB"] = du_mib(venv_of(env.python))
            for model in MODELS:
                best = None
                for _ in range(args.rounds):
                    cold, rss1 = classify(env, one, (model,), scratch / "o.csv")
                    wall, rss = classify(env, many, (model,), scratch / "o.csv")
                    rate = (n - 1) / max(1e-9, wall - cold)
                    if best is None or rate > best[1]:
                        best = (cold, rate, max(rss, rss1))
                env.results[f"{model} cold s"], env.results[f"{model} img/s"], env.results[f"{model} RSS"] = best
                print(f"[{env.name}] {model}: cold {best[0]:.1f} s, {best[1]:.1f} img/s, RSS {best[2]:.0f} MiB",
                      flush=True)
            cold, _ = classify(env, one, BOTH, scratch / "o.csv")
            wall, rss = classify(env, many, BOTH, scratch / "o.csv")
            env.results["Both cold s"] = cold
            env.results["Both img/s"] = (n - 1) / max(1e-9, wall - cold)
            env.results["Both RSS"] = rss
            print(f"[{env.name}] Both: cold {cold:.1f} s, {env.results['Both img/s']:.1f} photos/s, RSS {rss:.0f} MiB",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [e.name for e in args.env]
    print(f"\n{n} photos; `mpox-triage classify` in a fresh process per figure.\n")
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    print("| venv size (du) | " + " | ".join(f"{e.results['venv MiB']:.0f} MiB" for e in args.env) + " |")
    if apps:
        print("| app size (dist/mpox-triage, du) | " + " | ".join(
            f"{du_mib(apps[e.name]):.0f} MiB" if e.name in apps else "-" for e in args.env) + " |")
    for model in MODELS + ("Both",):
        print(f"| {model}: cold start to first row (one photo, whole process) | "
              + " | ".join(f"{e.results[f'{model} cold s']:.1f} s" for e in args.env) + " |")
        print(f"| {model}: throughput | " + " | ".join(f"{e.results[f'{model} img/s']:.1f} photos/s"
                                                      for e in args.env) + " |")
        print(f"| {model}: peak RSS | " + " | ".join(f"{e.results[f'{model} RSS']:.0f} MiB" for e in args.env) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
