"""Result quality: the default sweep per problem, objective and study seed, against its baselines.

    python benchmarks/quality.py                                   # the whole matrix (hours)
    python benchmarks/quality.py --problems log --objectives derivative --seeds 0
    python benchmarks/quality.py --problems log --objectives derivative --n-colloc 50 100 200
    python benchmarks/quality.py --problems log --seeds 0 1 2 3 4 --set train.lr_decay.fraction=0
    python benchmarks/quality.py --problems logistic oscillator poisson gauss --seeds 0

Each cell is `python -m pipeline.sweep problem=<p> objective=<o> study.seed=<s>` (30 trials of
10,000 epochs by default) run in-process in a fresh temporary store. Per cell it prints the
baseline (trial 0: the post's network trained on what the objective trains on), the reference
(the post's network trained the post's way, on the data points), the best trial's value and both
of its validation errors, and the ratios; then the medians over seeds, and the issue's targets for
`log` where the cells to judge them ran. `--n-colloc` repeats every cell per collocation count:
how the default `data.n_colloc` was chosen; `--set train.lr_decay.fraction=...` is how the
sweep's learning-rate decay was. An equation's problem (logistic, oscillator, poisson, gauss)
runs the residual objective only, and its rows add the relative L2 error against the exact
solution (`val_l2re`) of the baseline and of the best trial, which the study chose by its
residual and conditions (`objective_value`), never by the exact error.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROBLEMS = ("log", "sin", "exp", "runge")
EQUATIONS = ("logistic", "oscillator", "poisson", "gauss")  # the residual objective's
OBJECTIVES = ("value", "derivative", "sobolev", "residual")
L2RE_TARGET = 1e-3  # the best trial's val_l2re on every shipped equation (median over seeds)
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
    return parser.parse_args()


def overrides(cell: Cell, args: argparse.Namespace, root: Path) -> list[str]:
    found = [
        f"problem={cell.problem}",
        f"objective={cell.objective}",
        f"study.seed={cell.seed}",
        f"study.n_trials={args.trials}",
        f"train.epochs={args.epochs}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"study.storage={root / 'optuna.journal'}",
    ]
    if cell.n_colloc is not None:
        found.append(f"data.n_colloc={cell.n_colloc}")
    return found + list(args.set)


def run_cell(cell: Cell, args: argparse.Namespace, log) -> Outcome:
    """One default sweep in a fresh store; its figures read back from Optuna and MLflow."""
    from mlflow.tracking import MlflowClient

    from pipeline.names import ROLE_TAG
    from pipeline.settings import load
    from pipeline.sweeping.reference import METRIC
    from pipeline.sweeping.runner import run_sweep

    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        root = Path(scratch)
        settings = load("sweep", overrides(cell, args, root))
        started, cpu = time.perf_counter(), _cpu()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            code = run_sweep(settings)
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
        if code != 0:
            raise SystemExit(f"{cell}: the sweep exited {code}; see the log")
        client = MlflowClient(settings.tracking.uri)
        experiment = client.get_experiment_by_name(settings.tracking.experiment)
        (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'study'")
        metrics = parent.data.metrics
        best = client.get_run(parent.data.tags["best_run_id"]).data.metrics
        (base,) = client.search_runs(
            [experiment.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
            "tags.`optuna.trial_number` = '0'",
        )
        nan = float("nan")
        return Outcome(
            baseline=metrics["baseline_value"],
            best=metrics["best_value"],
            reference=metrics.get(METRIC, metrics["baseline_value"]),
            best_value_mse=best.get("val_value_mse", nan),
            best_deriv_mse=best.get("val_deriv_mse", nan),
            seconds=seconds,
            cpu=cpu,
            baseline_l2re=base.data.metrics.get("val_l2re", nan),
            best_l2re=best.get("val_l2re", nan),
        )


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


def compatible(problem: str, objective: str) -> bool:
    """An equation's problem trains the residual objective only; a target's every other."""
    return (problem in EQUATIONS) == (objective == "residual")


def report_l2re(medians: dict[tuple, Outcome]) -> None:
    """The issue's target for every equation run: the best trial's val_l2re <= 1e-3."""
    rows = [(key, o) for key, o in medians.items() if key[1] == "residual"]
    if rows:
        print("\nTargets (equations, medians over the seeds run; best chosen by objective_value):")
    for (problem, _, _), o in rows:
        verdict = "met" if o.best_l2re <= L2RE_TARGET else "MISSED"
        print(f"  {problem}: best val_l2re {o.best_l2re:.2e} (baseline {o.baseline_l2re:.2e}): "
              f"{verdict} (target <= {L2RE_TARGET:g})")  # fmt: skip


def _median(outcomes: list[Outcome]) -> Outcome:
    fields = Outcome.__dataclass_fields__
    return Outcome(**{k: statistics.median(getattr(o, k) for o in outcomes) for k in fields})


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
    from pipeline import entry
    from pipeline.tracking import store

    entry.import_tensorflow_quietly(None)  # every graph compiled: what is measured
    store.log_keras_model = lambda client, run_id, model: None  # not what is measured here
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cells = [
        Cell(p, o, s, n)
        for p in args.problems
        for o in args.objectives
        for n in args.n_colloc
        for s in args.seeds
        if compatible(p, o)
    ]
    print(
        f"{len(cells)} sweeps of {args.trials} trials x {args.epochs} epochs; {' '.join(args.set)}"
    )
    print(HEADER)
    groups: dict[tuple, list[Outcome]] = {}
    log = args.log.open("a") if args.log else open("/dev/null", "w")  # noqa: SIM115
    with log:
        for cell in cells:
            outcome = run_cell(cell, args, log)
            groups.setdefault((cell.problem, cell.objective, cell.n_colloc), []).append(outcome)
            colloc = "" if cell.n_colloc is None else f" n_colloc={cell.n_colloc}"
            print(_row(f"{cell.problem}/{cell.objective}{colloc} seed {cell.seed}", outcome))
            sys.stdout.flush()
    print("\nMedians over seeds:")
    print(HEADER)
    medians = {key: _median(found) for key, found in groups.items()}
    for (problem, objective, n_colloc), median in medians.items():
        colloc = "" if n_colloc is None else f" n_colloc={n_colloc}"
        print(_row(f"{problem}/{objective}{colloc}", median))
    for n_colloc in args.n_colloc:
        report_targets(medians, n_colloc)
    report_l2re(medians)


if __name__ == "__main__":
    main()
