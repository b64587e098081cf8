"""Start-up of `python -m pipeline.train`: its wall time beside TensorFlow's own import time.

    python benchmarks/startup.py [--repeats 5] [overrides ...]

In a fresh temporary directory (its own MLflow store and XLA compile cache), one run of the post's
network fills the cache and creates the store; then `--repeats` new `python -m pipeline.train`
processes (the post's network, warm cache), each timed from outside (wall) and inside (the
seconds its TensorFlow import took, `entry.import_tensorflow_quietly`, timed in the same process:
on a shared machine separate processes' imports vary by seconds). It prints each run's wall minus
its import, the median of that (what the pipeline adds to TensorFlow: Python, Hydra, settings,
training, MLflow, recording) and the target; beside it the training process's own CPU seconds
beyond the import (its recording process not counted), which a loaded machine inflates less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2.5  # seconds of wall beyond TensorFlow's own import, warm compile cache
REPO = Path(__file__).resolve().parents[1]
# `python -m pipeline.train` with its TensorFlow import timed, printed last on stdout.
TIMED_TRAIN = """
import atexit, runpy, sys, time
from pipeline import entry
quiet, spent = entry.import_tensorflow_quietly, [0.0, 0.0]
def timed(*args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    quiet(*args, **kwargs)
    spent[:] = [time.perf_counter() - wall, time.process_time() - cpu]
entry.import_tensorflow_quietly = timed
atexit.register(lambda: print("tensorflow import", *spent, time.process_time()))
sys.argv = ["pipeline.train", *sys.argv[1:]]
runpy.run_module("pipeline.train", run_name="__main__", alter_sys=True)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (medians)")
    parser.add_argument("overrides", nargs="*", help="extra overrides of pipeline.train")
    return parser.parse_args()


def run(command: list[str], root: Path) -> tuple[float, str]:
    """Wall seconds of `command` as a new process in `root`, and its stdout (exit on failure)."""
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        root = Path(scratch)
        train = [
            sys.executable,
            "-c",
            TIMED_TRAIN,
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"train.compile_cache={root / 'xla-cache'}",
            *args.overrides,
        ]
        cold, _ = run(train, root)
        print(f"first run (cold cache, new store): {cold:.2f} s wall", flush=True)
        imports, walls, cpus = [], [], []
        for i in range(args.repeats):
            wall, out = run(train, root)
            tf_wall, tf_cpu, cpu = map(float, out.strip().splitlines()[-1].split()[-3:])
            imports.append(tf_wall)
            walls.append(wall)
            cpus.append(cpu - tf_cpu)
            print(f"  {i + 1}: pipeline.train {wall:.2f} s wall, its tensorflow import "
                  f"{tf_wall:.2f} s: {wall - tf_wall:.2f} s beyond (CPU {cpus[-1]:.2f} s)",
                  flush=True)  # fmt: skip
    tf, wall = statistics.median(imports), statistics.median(walls)
    extra = statistics.median(w - i for w, i in zip(walls, imports, strict=True))
    verdict = "meets" if extra <= TARGET else "ABOVE"
    print(f"median over {args.repeats}: pipeline.train {wall:.2f} s wall (warm cache), "
          f"its tensorflow import {tf:.2f} s")  # fmt: skip
    print(f"pipeline.train beyond TensorFlow's import: {extra:.2f} s  "
          f"[{verdict} target <= {TARGET:.1f} s]; its own CPU beyond the import "
          f"{statistics.median(cpus):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
