"""Result quality: the default sweep per problem, objective and study seed, against its baselines.

    python benchmarks/quality.py                                   # the whole matrix (hours)
    python benchmarks/quality.py --problems log --objectives derivative --seeds 0
    python benchmarks/quality.py --problems log --objectives derivative --n-colloc 50 100 200
    python benchmarks/quality.py --problems log --seeds 0 1 2 3 4 --set train.lr_decay.fraction=0
    python benchmarks/quality.py --problems log --objectives derivative value \
        --baseline-ref 4ff61b1 --set study.pruner.name=hyperband
    python benchmarks/quality.py --problems logistic oscillator poisson gauss --seeds 0

Each cell is `python -m pipeline.sweep problem=<p> objective=<o> study.seed=<s>` (30 trials of
10,000 epochs by default), a new process in a fresh temporary store, every graph compiled. Per
cell it prints the baseline (trial 0: the post's network trained on what the objective trains
on), the reference (the post's network trained the post's way, on the data points), the best
trial's value and both of its validation errors, and the ratios; then the times (from the first
trial's start) at which the study's best value first reached the baseline / 100, / 1000 and its
final best; then the medians over seeds, and the issue's targets for `log` where the cells to
judge them ran. `--n-colloc` repeats every cell per collocation count: how the default
`data.n_colloc` was chosen; `--set train.lr_decay.fraction=...` is how the sweep's learning-rate
decay was. `--baseline-ref <git ref>` also runs every cell, just before, with that checkout of
the project (a git worktree; its own defaults, `--set` not applied) and prints how many times
sooner this checkout reached the same levels, the ref's final best (median over seeds) among
them. An equation's problem (logistic, oscillator, poisson, gauss) runs the residual objective
only, and its rows add the relative L2 error against the exact solution (`val_l2re`) of the
baseline and of the best trial, which the study chose by its residual and conditions
(`objective_value`), never by the exact error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from quality_equations import EQUATIONS, compatible, report_l2re
from quality_times import best_over_time, checkout, ratio_text, seconds_text, time_to

REPO = Path(__file__).resolve().parents[1]

PROBLEMS = ("log", "sin", "exp", "runge")
OBJECTIVES = ("value", "derivative", "sobolev", "residual")
TARGETS = {  # the issue's, for problem=log
    "derivative": "best val_deriv_mse <= reference / 1000 (1.1e-6), its val_value_mse <= 1e-8",
    "value": "best val_value_mse <= baseline / 1000",
    "sobolev": "both errors of its best trial within 10x of the single-objective studies' best",
}


@dataclass(frozen=True)
class Cell:
    problem: str
    objective: str
    seed: int
    n_colloc: int | None  # None: the configured default


@dataclass(frozen=True)
class Outcome:
    baseline: float
    best: float
    reference: float  # = baseline where the objective trains on the data points
    best_value_mse: float
    best_deriv_mse: float
    seconds: float  # wall
    cpu: float  # CPU seconds of the sweep and its recording process
    # (seconds since the first trial started, best value then) at every improvement
    steps: list[tuple[float, float]] = field(default_factory=list, compare=False)
    baseline_l2re: float = float("nan")  # an equation's: relative L2 error against its solution
    best_l2re: float = float("nan")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=[*PROBLEMS, *EQUATIONS])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="study seeds")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--n-colloc", nargs="+", type=int, default=[None])
    parser.add_argument(
        "--set", nargs="*", default=[], help="more overrides, e.g. data.resample=true"
    )
    parser.add_argument("--log", type=Path, help="where the sweeps' own output goes")
    parser.add_argument("--baseline-ref", help="also run every cell with this git ref's checkout")
    return parser.parse_args()


def overrides(cell: Cell, args: argparse.Namespace) -> list[str]:
    """The cell's overrides, which both checkouts get (`--set` is this checkout's alone)."""
    found = [
        f"problem={cell.problem}",
        f"objective={cell.objective}",
        f"study.seed={cell.seed}",
        f"study.n_trials={args.trials}",
        f"train.epochs={args.epochs}",
    ]
    if cell.n_colloc is not None:
        found.append(f"data.n_colloc={cell.n_colloc}")
    return found


def run_cell(cell: Cell, overrides: list[str], checkout: Path, log) -> Outcome:
    """One sweep of `checkout`'s code in a fresh store (a new process, no compile cache); its
    figures read back from MLflow, its best value over time from Optuna's journal."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        root = Path(scratch)
        command = [sys.executable, "-m", "pipeline.sweep", *_stores(root), *overrides]
        started, cpu = time.perf_counter(), _cpu()
        done = subprocess.run(
            [*command, "train.compile_cache=null"],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            stdout=log,
            stderr=log,
        )
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"{cell} ({checkout}): the sweep exited {done.returncode}; see --log")
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("pipeline")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.`pipeline.role` = 'study'")
        metrics = parent.data.metrics
        best = client.get_run(parent.data.tags["best_run_id"]).data.metrics
        name = parent.data.tags["optuna.study_name"]
        (base,) = client.search_runs(
            [experiment.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
            "tags.`optuna.trial_number` = '0'",
        )
        nan = float("nan")
        return Outcome(
            baseline=metrics["baseline_value"],
            best=metrics["best_value"],
            reference=metrics.get("reference_value", metrics["baseline_value"]),
            best_value_mse=best.get("val_value_mse", nan),
            best_deriv_mse=best.get("val_deriv_mse", nan),
            seconds=seconds,
            cpu=cpu,
            steps=best_over_time(str(root / "optuna.journal"), name),
            baseline_l2re=base.data.metrics.get("val_l2re", nan),
            best_l2re=best.get("val_l2re", nan),
        )


def _stores(root: Path) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"study.storage={root / 'optuna.journal'}",
    ]


def _cpu() -> float:
    """User + system CPU seconds of this process and its finished children (the recorder)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _row(name: str, o: Outcome) -> str:
    return (
        f"{name:<34}{o.baseline:>11.3e}{o.reference:>11.3e}{o.best:>11.3e}"
        f"{o.baseline / o.best:>10,.0f}x{o.reference / o.best:>10,.0f}x"
        f"{o.best_value_mse:>11.3e}{o.best_deriv_mse:>11.3e}{o.seconds:>7.0f}s{o.cpu:>7.0f}s"
        + (
            ""
            if o.best_l2re != o.best_l2re
            else f"  l2re {o.baseline_l2re:.2e} -> {o.best_l2re:.2e}"
        )
    )


HEADER = (
    f"{'cell':<34}{'baseline':>11}{'reference':>11}{'best':>11}{'vs base':>11}{'vs ref':>11}"
    f"{'best val_v':>11}{'best val_d':>11}{'wall':>8}{'cpu':>8}"
)


def _median(outcomes: list[Outcome]) -> Outcome:
    fields = [k for k in Outcome.__dataclass_fields__ if k != "steps"]
    return Outcome(**{k: statistics.median(getattr(o, k) for o in outcomes) for k in fields})


def levels(yardstick: Outcome, best: float) -> dict[str, float]:
    """The levels a study's time to quality is taken at: the baseline / 100 and / 1000, `best`."""
    return {
        "base/100": yardstick.baseline / 100,
        "base/1000": yardstick.baseline / 1000,
        "best": best,
    }


def time_line(level_values: dict[str, float], ours: list[Outcome], ref: list[Outcome]) -> str:
    """Median seconds (over `ours`) to each level; with `ref`, its times and the ratio."""
    parts = []
    for name, level in level_values.items():
        mine = statistics.median(time_to(o.steps, level) for o in ours)
        part = f"{name} {level:.2e}: {seconds_text(mine)}"
        if ref:
            theirs = statistics.median(time_to(o.steps, level) for o in ref)
            part += f" (ref {seconds_text(theirs)}, ref/this {ratio_text(theirs, mine)})"
        parts.append(part)
    return "  time to " + "; ".join(parts)


def report_targets(medians: dict[tuple, Outcome], n_colloc: int | None) -> None:
    """The issue's targets for problem=log, judged on the medians over seeds."""
    colloc = "" if n_colloc is None else f", n_colloc={n_colloc}"
    print(f"\nTargets (problem=log{colloc}, medians over the seeds run):")
    for objective, what in TARGETS.items():
        cell = medians.get(("log", objective, n_colloc))
        if cell is None:
            continue
        if objective == "derivative":
            met = cell.best <= cell.reference / 1000 and cell.best_value_mse <= 1e-8
        elif objective == "value":
            met = cell.best <= cell.baseline / 1000
        else:
            value = medians.get(("log", "value", n_colloc))
            deriv = medians.get(("log", "derivative", n_colloc))
            if value is None or deriv is None:
                print(f"  sobolev: needs the value and derivative cells too ({what})")
                continue
            met = cell.best_value_mse <= 10 * value.best_value_mse and (
                cell.best_deriv_mse <= 10 * deriv.best_deriv_mse
            )
        print(f"  {objective}: {'met' if met else 'MISSED'} ({what})")


def main() -> None:
    args = parse_args()
    cells = [
        Cell(p, o, s, n)
        for p in args.problems
        for o in args.objectives
        for n in args.n_colloc
        for s in args.seeds
        if compatible(p, o)
    ]
    ref_note = f"; against {args.baseline_ref}" if args.baseline_ref else ""
    print(
        f"{len(cells)} sweeps of {args.trials} trials x {args.epochs} epochs; "
        f"{' '.join(args.set)}{ref_note}"
    )
    print(HEADER)
    groups: dict[tuple, list[Outcome]] = {}
    ref_groups: dict[tuple, list[Outcome]] = {}
    log = args.log.open("a") if args.log else open("/dev/null", "w")  # noqa: SIM115
    with log, checkout(REPO, args.baseline_ref) if args.baseline_ref else _none() as old:
        for cell in cells:
            key = (cell.problem, cell.objective, cell.n_colloc)
            colloc = "" if cell.n_colloc is None else f" n_colloc={cell.n_colloc}"
            name = f"{cell.problem}/{cell.objective}{colloc} seed {cell.seed}"
            ref = []
            if old is not None:
                ref = [run_cell(cell, overrides(cell, args), old, log)]
                ref_groups.setdefault(key, []).extend(ref)
                print(_row(f"{name} [ref]", ref[0]))
            outcome = run_cell(cell, overrides(cell, args) + list(args.set), REPO, log)
            groups.setdefault(key, []).append(outcome)
            print(_row(name, outcome))
            yardstick = ref[0] if ref else outcome
            print(time_line(levels(yardstick, yardstick.best), [outcome], ref))
            sys.stdout.flush()
    print("\nMedians over seeds:")
    print(HEADER)
    medians = {key: _median(found) for key, found in groups.items()}
    for key, median in medians.items():
        problem, objective, n_colloc = key
        colloc = "" if n_colloc is None else f" n_colloc={n_colloc}"
        ref = ref_groups.get(key, [])
        if ref:
            print(_row(f"{problem}/{objective}{colloc} [ref]", _median(ref)))
        print(_row(f"{problem}/{objective}{colloc}", median))
        yardstick = _median(ref) if ref else median
        print(time_line(levels(yardstick, yardstick.best), groups[key], ref))
    for n_colloc in args.n_colloc:
        report_targets(medians, n_colloc)
    report_l2re(medians)


@contextlib.contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
