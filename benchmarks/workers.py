"""Trials per minute of one sweep with 1 and with 2 local worker processes.

The same fixed study each time (objective=value, 10,000 epochs, pruner none, the default TPE
sampler and journal storage) in a fresh temporary directory, at two sizes: 16 trials, where
start-up and compilation dominate, and 64, closer to a sweep worth parallelising. The rate
counts COMPLETE + PRUNED trials over the wall time of the whole `python -m pipeline.sweep`
command (start-up, compile and the final bookkeeping included, as a user waits for them).

    python benchmarks/workers.py [--trials 16 64] [--epochs 10000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    return parser.parse_args()


def finished_trials(directory: Path) -> int:
    import optuna

    from pipeline.study import FINISHED, StudyConfig, make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(StudyConfig(storage=str(directory / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name="log-value", storage=storage)
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def rate(workers: int, trials: int, epochs: int) -> tuple[float, int, float]:
    """(trials per minute, finished trials, seconds) of one sweep in a fresh directory."""
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pipeline.sweep",
            "objective=value",
            f"study.n_trials={trials}",
            f"study.n_workers={workers}",
            f"train.epochs={epochs}",
            "study.pruner.name=none",
        ]
        start = time.perf_counter()
        result = subprocess.run(
            command,
            cwd=tmp,
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"sweep with {workers} worker(s) failed:\n{result.stderr}")
        done = finished_trials(Path(tmp))
    return done / seconds * 60, done, seconds


def main() -> None:
    args = parse_args()
    print(f"objective=value, {args.epochs} epochs, pruner none, {os.cpu_count()} cores")
    for trials in args.trials:
        rates = {}
        for workers in args.workers:
            per_minute, done, seconds = rate(workers, trials, args.epochs)
            rates[workers] = per_minute
            print(
                f"{trials}-trial study, {workers} worker(s): {done} trials in {seconds:6.1f} s"
                f" = {per_minute:6.2f} trials/min"
            )
        for workers, per_minute in rates.items():
            if workers != 1 and 1 in rates:
                ratio = per_minute / rates[1]
                verdict = "meets" if ratio >= TARGET_RATIO else "misses"
                print(
                    f"{trials}-trial study, ratio {workers} vs 1 worker: {ratio:.2f}x "
                    f"({verdict} the {TARGET_RATIO}x target)"
                )


if __name__ == "__main__":
    main()
