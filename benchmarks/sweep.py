"""The reference sweep against the post's recipe: `python -m pipeline.sweep study.n_trials=50`.

Both objectives, `--trials` trials each (default 50), 10,000 epochs, default sampler, pruner,
population and storage, full tracking and plots, in a fresh temporary directory, timed from
this process's start (imports included). Then Keras `model.fit` on the post's network, timed
per epoch in the same process: the post's recipe for the same trials is that times the trials'
planned epochs, and the ratio is printed beside its target (2000x). Also printed: the graphs
compiled and the seconds their first calls took, the peak RSS of the sweep's processes, and the
best value of each study. `--compare-population 4` runs the same sweep again with that
population for the study seeds `--seeds`, and prints both studies' best values and their
medians (more trials in flight must not buy speed with search quality). `--long N` instead runs
one N-trial value study of short trials and prints the worker's RSS after 100 trials and at N.
`--compare-cache` runs `python -m pipeline.sweep` twice as new processes, in two fresh stores
sharing one compile cache (`train.compile_cache`): cold, then warm (a repeated sweep); it prints
both wall times and how many graphs the second process loaded instead of compiling.

    python benchmarks/sweep.py [--trials 50] [--compare-population 4 --seeds 0 1 2] [--long 1000]
    python benchmarks/sweep.py --compare-cache [--trials 50]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports: a cold process is part of the figure

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

TARGET = 2000.0
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="study.n_trials per objective")
    parser.add_argument("--fit-epochs", type=int, default=100, help="model.fit epochs timed")
    parser.add_argument("--compare-population", type=int, help="also sweep with this population")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="study seeds")
    parser.add_argument("--long", type=int, help="one study of this many short trials: RSS")
    parser.add_argument("--compare-cache", action="store_true", help="cold, then warm cache")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    return parser.parse_args()


def sweep(root: Path, overrides: list[str]) -> dict[str, float]:
    """Run one sweep in `root` (in this process, as `python -m pipeline.sweep` would) and
    return each study's best value."""
    from sweeping import Stores, run_sweep_in

    root.mkdir(parents=True, exist_ok=True)
    code = run_sweep_in(root, overrides)
    if code != 0:
        sys.exit(f"the sweep exited with {code}")
    stores = Stores(root)
    return {s.study_name: stores.study(s.study_name).best_value for s in stores.summaries()}


def fit_us_per_epoch(epochs: int) -> float:
    """Keras `model.fit` on the post's setup, per epoch, after a one-epoch warm-up."""
    import keras

    from pipeline.core.data import make_dataset
    from pipeline.core.model import build_model
    from pipeline.core.problem_config import shipped
    from pipeline.defaults import load

    data = make_dataset(load("train").data, shipped("log"), 1.0)
    model = build_model([10, 10], "sigmoid", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    fit = {"batch_size": len(data.x_train), "verbose": 0}
    model.fit(data.x_train, data.y_train, epochs=1, **fit)
    started = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, **fit)
    return (time.perf_counter() - started) / epochs * 1e6


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child (the recorder), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def reference(args: argparse.Namespace, workdir: Path) -> None:
    from pipeline.core import graph

    overrides = [f"study.n_trials={args.trials}", *args.overrides]
    print(f"sweep: {' '.join(overrides)}  ({os.cpu_count()} cores, in {workdir})", flush=True)
    best = sweep(workdir / "reference", overrides)
    wall = time.perf_counter() - STARTED
    graphs, compiled = graph.graphs_compiled(), graph.compile_seconds()
    own, child = peak_rss_mb()
    fit_us = fit_us_per_epoch(args.fit_epochs)
    n = len(best) * args.trials
    recipe = n * 10_000 * fit_us / 1e6
    ratio = recipe / wall
    print(f"wall {wall:.1f} s for {n} trials x 10,000 epochs, imports included")
    print(
        f"model.fit {fit_us / 1e3:.1f} ms/epoch: the post's recipe for these trials {recipe:,.0f} s"
    )
    verdict = "meets" if ratio >= TARGET else "BELOW"
    print(f"speed-up recipe/sweep = {ratio:,.0f}x  [{verdict} target {TARGET:.0f}x]")
    print(
        f"compiled {graphs} graphs ({graphs / len(best):.1f} per study); their first calls took "
        f"{compiled:.1f} s = {100 * compiled / wall:.0f}% of the wall time"
    )
    print(f"peak RSS: sweep process {own:.0f} MB, recording process {child:.0f} MB")
    for name, value in best.items():
        print(f"  {name}: best {value:.3e}")


def compare(args: argparse.Namespace, workdir: Path) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for label, extra in (
        ("default", []),
        ("population", [f"study.population={args.compare_population}"]),
    ):
        for seed in args.seeds:
            overrides = [
                f"study.n_trials={args.trials}",
                f"study.seed={seed}",
                *extra,
                *args.overrides,
            ]
            started = time.perf_counter()
            best = sweep(workdir / f"{label}-{seed}", overrides)
            print(f"{label} seed {seed}: {time.perf_counter() - started:.1f} s  "
                  + "  ".join(f"{k} {v:.3e}" for k, v in best.items()), flush=True)  # fmt: skip
            for name, value in best.items():
                rows.setdefault(name, {}).setdefault(label, []).append(value)
    for name, by_label in rows.items():
        medians = {k: statistics.median(v) for k, v in by_label.items()}
        print(f"{name}: median best " + ", ".join(f"{k} {v:.3e}" for k, v in medians.items()))


def long_study(args: argparse.Namespace, workdir: Path) -> None:
    from sweeping import Stores

    root = workdir / "long"
    overrides = ["objective=value", f"study.n_trials={args.long}", "train.epochs=500",
                 "study.report_every=100", *args.overrides]  # fmt: skip
    marks: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            try:
                finished = Stores(root).finished("log-value")
            except Exception:  # the study is not there yet
                continue
            if finished >= 100 and 100 not in marks:
                marks[100] = _rss_mb()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    sweep(root, overrides)
    done.set()
    marks[args.long] = _rss_mb()
    print(f"worker RSS after 100 trials {marks.get(100, float('nan')):.0f} MB, "
          f"after {args.long} trials {marks[args.long]:.0f} MB")  # fmt: skip


def compare_cache(args: argparse.Namespace, workdir: Path) -> None:
    """The same sweep as two new processes sharing a compile cache: cold, then warm."""
    cache = workdir / "xla-cache"
    overrides = [f"study.n_trials={args.trials}", f"train.compile_cache={cache}", *args.overrides]
    # TF's own log line for each graph loaded from the cache (one source file's verbose log).
    logged = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_executable_persistor=1"}
    walls = {}
    for label in ("cold", "warm"):
        root = workdir / label
        root.mkdir()
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.sweep", *overrides],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(REPO), **logged},
            capture_output=True,
            text=True,
        )
        walls[label] = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"the {label} sweep exited with {done.returncode}:\n{done.stderr[-2000:]}")
        loaded = done.stderr.count("Loading cached entry")
        entries = len(list(cache.glob("*/*.pb")))
        print(f"{label}: {walls[label]:.1f} s wall (a new process, imports included); "
              f"{loaded} graphs loaded from the cache, {entries} in it", flush=True)  # fmt: skip
    print(f"repeated sweep, warm cache against cold: {walls['cold'] / walls['warm']:.2f}x "
          f"({walls['cold'] - walls['warm']:.1f} s less)")  # fmt: skip


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        if args.long:
            long_study(args, workdir)
        elif args.compare_cache:
            compare_cache(args, workdir)
        elif args.compare_population is not None:
            compare(args, workdir)
        else:
            reference(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
