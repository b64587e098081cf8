"""Time the reference sweep: `python -m pipeline.sweep study.n_trials=50`, end to end.

Both objectives, `--trials` trials each (default 50), the default 10,000 epochs, default sampler
and pruner, full tracking and plots, one process, in a fresh temporary directory. The wall time
includes interpreter start-up and imports. Afterwards the Optuna journal and the MLflow store
are read back to split the time: per-trial training seconds (the `train_seconds` metric) and an
estimate of XLA compilation, taken as the extra time of the first trial of each compiled graph
key (objective, depth, activation, optimizer) over that key's later trials' per-epoch pace.

    python benchmarks/sweep.py [--trials 50] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET_S = 60.0
REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="study.n_trials per objective")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    return parser.parse_args()


def analyse(workdir: Path) -> None:
    """Trial counts, training seconds and a compilation estimate, read back from the stores."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    total_train = total_compile = total_trial = 0.0
    for summary in storage.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = sorted(study.trials, key=lambda t: t.number)
        states = defaultdict(int)
        for t in trials:
            states[t.state.name] += 1
        rows = []  # (key, train_seconds, epochs_run, trial_duration)
        parent = study.user_attrs.get("mlflow_parent_run_id")
        runs = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
            max_results=50_000,
        )
        by_number = {r.data.tags.get("optuna.trial_number"): r for r in runs}  # runs by trial
        for t in trials:
            run = by_number.get(str(t.number))
            if run is None or not t.params:
                continue
            metrics = run.data.metrics
            if "train_seconds" not in metrics:
                continue
            key = (t.params["n_layers"], t.params["activation"], t.params["optimizer"])
            duration = t.duration.total_seconds() if t.duration else float("nan")
            rows.append((key, metrics["train_seconds"], metrics["epochs_run"], duration))
        pace: dict[tuple, list[float]] = defaultdict(list)
        seen: set[tuple] = set()
        firsts = []
        for key, seconds, epochs, _ in rows:
            if key in seen:
                pace[key].append(seconds / max(epochs, 1))
            else:
                seen.add(key)
                firsts.append((key, seconds, epochs))
        all_pace = [p for ps in pace.values() for p in ps]
        fallback = statistics.median(all_pace) if all_pace else 0.0
        compile_s = 0.0
        for key, seconds, epochs in firsts:
            per_epoch = statistics.median(pace[key]) if pace[key] else fallback
            compile_s += max(0.0, seconds - per_epoch * epochs)
        train_s = sum(r[1] for r in rows)
        trial_s = sum(r[3] for r in rows)
        total_train += train_s
        total_compile += compile_s
        total_trial += trial_s
        counts = " ".join(f"{k}={v}" for k, v in sorted(states.items()))
        print(
            f"  {summary.study_name}: {counts}; {len(seen)} graph keys; "
            f"trial wall {trial_s:.1f}s, training {train_s:.1f}s "
            f"(of which ~{compile_s:.1f}s first-call compile/trace of new keys)"
        )
    print(
        f"  all studies: trial wall {total_trial:.1f}s, training {total_train:.1f}s, "
        f"estimated compile {total_compile:.1f}s"
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    command = [
        sys.executable,
        "-m",
        "pipeline.sweep",
        f"study.n_trials={args.trials}",
        *args.overrides,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    print(f"running: {' '.join(command[1:])}  (in {workdir}, {os.cpu_count()} cores)")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:])
        print(done.stderr[-3000:], file=sys.stderr)
        sys.exit(f"sweep exited with {done.returncode}")
    n_objectives = 2 if not any(o.startswith("objective=") for o in args.overrides) else 1
    trials = args.trials * n_objectives
    print(f"wall: {wall:.1f} s for {trials} trials ({n_objectives} studies x {args.trials})")
    print(f"throughput: {trials / wall * 60:.1f} trials/minute ({wall / trials:.2f} s/trial)")
    verdict = "meets" if wall <= TARGET_S else "misses"
    print(f"target: <= {TARGET_S:.0f} s for the whole sweep -> {verdict} it")
    summary = [line for line in done.stdout.splitlines() if line.strip()][-8:]
    print("sweep summary:\n  " + "\n  ".join(summary))
    analyse(workdir)
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
