"""Trials per minute of one sweep with 1 and with 2 local worker processes (or 1 and 2 threads
per worker, `--n-jobs 1 2`), on identical trials.

"The same fixed study": before each timed sweep, the study is prepared as the sweep itself
prepares it (`StudyHandle.open`, `sweeping.worker.prepare_study`: study, parent run, baseline)
and a fixed list of trials is enqueued, drawn once from the default search space with a seeded
random sampler. Every run therefore trains exactly the same networks (objective=value, 10,000
epochs, pruner none), whatever the number of workers and whichever worker takes which trial; an
extra in-flight trial (at most workers - 1) is one of the fixed list too.

Three ratios per study size, all over COMPLETE + PRUNED trials per minute:
- the machine's bound: the same trials trained by 1 and by 2 plain processes (graphs compiled
  first, no Optuna, no MLflow), so what 2 cores give this trainer at best;
- whole command: wall time of `python -m pipeline.sweep`, start-up, XLA compilation and the
  final bookkeeping included, as a user waits for them;
- trials only: from the first trial's start to the last trial's end (Optuna's timestamps),
  which leaves out the start-up and the end but still includes compilation.

Each sweep also reports the cores it kept busy (CPU seconds of all its processes over its wall
time). One worker trains on one core and records on the other, so N workers can do at most
min(N, cores / that) times its work: the ceiling printed, before any cost a second worker adds.

    python benchmarks/workers.py [--trials 64 200] [--epochs 10000] [--workers 1 2]
    python benchmarks/workers.py --objective derivative --workers 1 --n-jobs 1 2 --trials 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.6
FIXED_SEED = 2026


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[64, 200])
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1], help="threads per worker")
    parser.add_argument("--objective", default="value", choices=["value", "derivative"])
    return parser.parse_args()


def overrides(
    directory: Path, trials: int, workers: int, epochs: int, n_jobs: int, objective: str
) -> list[str]:
    """The sweep's command-line overrides; absolute store paths, so a process may prepare
    several directories in turn (MLflow caches a store per URI)."""
    return [
        f"tracking.uri=sqlite:///{directory / 'mlruns' / 'mlflow.db'}",
        f"study.storage={directory / 'mlruns' / 'optuna.journal'}",
        f"objective={objective}",
        f"study.n_trials={trials}",
        f"study.n_workers={workers}",
        f"study.n_jobs={n_jobs}",
        f"train.epochs={epochs}",
        "study.pruner.name=none",
    ]


def fixed_trials(count: int) -> list[dict]:
    """`count` parameter sets of the default search space, the same on every call."""
    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.space import suggest

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=FIXED_SEED))
    space = load("sweep").search
    params = []
    for _ in range(count):
        trial = study.ask()
        suggest(trial, space)
        params.append(trial.params)
        study.tell(trial, 0.0)
    return params


def prepare(
    directory: Path, trials: int, workers: int, epochs: int, n_jobs: int, objective: str
) -> None:
    """Create the study and its parent run in `directory` and enqueue the fixed trials."""
    from pipeline.defaults import load
    from pipeline.sweeping.handle import StudyHandle
    from pipeline.sweeping.worker import prepare_study

    settings = load("sweep", overrides(directory, trials, workers, epochs, n_jobs, objective))
    study = prepare_study(StudyHandle.open(settings, settings.objectives[0]), settings).study
    # The baseline is already queued; the rest, plus what extra workers may start.
    for params in fixed_trials(trials - 1 + workers * n_jobs - 1):
        study.enqueue_trial(params)


def finished(directory: Path, objective: str) -> tuple[int, float]:
    """(COMPLETE + PRUNED trials, seconds from the first trial's start to the last's end)."""
    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.study import FINISHED, make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    journal = directory / "mlruns" / "optuna.journal"
    storage = make_storage(load("sweep", [f"study.storage={journal}"]).study)
    name = f"log-{objective}"
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(
        deepcopy=False, states=FINISHED
    )
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return len(trials), (end - start).total_seconds()


def _train_share(
    params: list[dict], epochs: int, barrier, seconds, compiling, objective: str
) -> None:
    """One plain process of the bound: compile its graphs, wait for the others, time its share."""
    from pipeline import entry

    entry.import_tensorflow_quietly(None)  # every graph compiled: what is measured
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.problem_config import shipped
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.defaults import load
    from pipeline.sweeping.space import Hyperparams, layout_for

    run, sweep = load("train", [f"objective={objective}"]), load("sweep")
    data, space, o = make_dataset(run.data, shipped("log"), 1.0), sweep.search, run.objective
    jobs = []
    for p in params:
        hidden = [p[f"units_l{i}"] for i in range(p["n_layers"])]
        hp = Hyperparams(tuple(hidden), p["activation"], p["optimizer"], p["learning_rate"])
        loss = (o.name, o.anchor_weight, o.deriv_weight)
        schedule = (run.train.log_every, sweep.study.report_every)
        rate = (hp.learning_rate, epochs, sweep.train.lr_decay)
        spec = TrainSpec(hp.activation, hp.optimizer, *rate, *loss, *schedule)
        jobs.append((spec, seeded_weights(hidden, 0), layout_for(space, hp)))
    start = time.perf_counter()
    for spec, weights, layout in jobs:  # compile every graph first: the bound is training alone
        train(spec, weights, data, layout=layout)
    compiling.value = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for spec, weights, layout in jobs:
        train(spec, weights, data, layout=layout)
    seconds.value = time.perf_counter() - start


def training_bound(workers: int, trials: int, epochs: int, objective: str) -> tuple[float, float]:
    """Seconds for `workers` plain processes to train the fixed trials, split between them,
    and the seconds their first pass took (compilation plus one training of each)."""
    from pipeline.sweeping.space import BASELINE, as_params

    context = multiprocessing.get_context("spawn")
    params = [as_params(BASELINE), *fixed_trials(trials - 1)]  # what the sweep's study trains
    barrier = context.Barrier(workers)
    seconds = [context.Value("d", 0.0) for _ in range(workers)]
    compiling = [context.Value("d", 0.0) for _ in range(workers)]
    processes = [
        context.Process(
            target=_train_share,
            args=(params[i::workers], epochs, barrier, seconds[i], compiling[i], objective),
        )
        for i in range(workers)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    if any(p.exitcode for p in processes):
        sys.exit("a training process of the bound failed")
    return max(t.value for t in seconds), max(t.value for t in compiling)


def children_cpu() -> float:
    """CPU seconds of every finished, reaped descendant so far (workers and recorders too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    workers: int, trials: int, epochs: int, n_jobs: int, objective: str
) -> tuple[int, float, float, float]:
    """(finished trials, whole-command seconds, trials-only seconds, cores busy on average)
    of one timed sweep."""
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        directory = Path(tmp)
        prepare(directory, trials, workers, epochs, n_jobs, objective)
        command = [
            sys.executable,
            "-m",
            "pipeline.sweep",
            *overrides(directory, trials, workers, epochs, n_jobs, objective),
        ]
        cpu, start = children_cpu(), time.perf_counter()
        result = subprocess.run(
            command,
            cwd=tmp,
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        seconds = time.perf_counter() - start
        cores = (children_cpu() - cpu) / seconds
        if result.returncode != 0:
            sys.exit(f"sweep with {workers} worker(s) failed:\n{result.stderr}")
        done, in_trials = finished(directory, objective)
    return done, seconds, in_trials, cores


def main() -> None:
    args = parse_args()
    print(
        f"objective={args.objective}, {args.epochs} epochs, pruner none, fixed enqueued trials, "
        f"{os.cpu_count()} cores"
    )
    combos = [(w, j) for w in args.workers for j in args.n_jobs]
    for trials in args.trials:
        bound = {w: training_bound(w, trials, args.epochs, args.objective) for w in args.workers}
        for workers, (seconds, first) in bound.items():
            print(
                f"{trials}-trial study, {workers} plain training process(es): {seconds:6.1f} s"
                f" = {trials / seconds * 60:6.1f} trials/min (first pass, compiling: {first:.1f} s)"
            )
        rates: dict[tuple[int, int], tuple[float, float]] = {}
        busy: dict[tuple[int, int], float] = {}
        for combo in combos:
            workers, n_jobs = combo
            done, seconds, in_trials, busy[combo] = run(
                workers, trials, args.epochs, n_jobs, args.objective
            )
            rates[combo] = (done / seconds * 60, done / in_trials * 60)
            print(
                f"{trials}-trial study, {_name(combo)}: {done} trials; whole command "
                f"{seconds:6.1f} s = {rates[combo][0]:6.1f} trials/min; trials only "
                f"{in_trials:6.1f} s = {rates[combo][1]:6.1f} trials/min; "
                f"{busy[combo]:.2f} of {os.cpu_count()} cores busy"
            )
        first = combos[0]
        for combo, (whole, only) in rates.items():
            if combo == first:
                continue
            workers = combo[0]
            ratio, ratio_only = whole / rates[first][0], only / rates[first][1]
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            machine = bound[first[0]][0] / bound[workers][0]
            print(
                f"{trials}-trial study, {_name(combo)} vs {_name(first)}: machine's bound "
                f"{machine:.2f}x; sweep {ratio:.2f}x whole command "
                f"({verdict} the {TARGET_RATIO}x target), {ratio_only:.2f}x trials only; "
                f"ceiling from the cores {_name(first)} keeps busy: "
                f"{min(workers * combo[1], os.cpu_count() / busy[first]):.2f}x"
            )


def _name(combo: tuple[int, int]) -> str:
    workers, n_jobs = combo
    return f"{workers} worker(s) x {n_jobs} thread(s)"


if __name__ == "__main__":
    main()
