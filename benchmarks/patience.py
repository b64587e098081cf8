"""What a patience rule would save and cost, replayed on the reports of finished studies.

A patience rule stops a trial whose best reported validation error has not improved by
`--min-delta` (relative) for `--patience` epochs. Replayed here on the reports a study's trials
made (every `study.report_every` epochs), before any decay of the learning rate begins (from
`--decay-start` x epochs on, a trial's error falls for reasons a plateau cannot see). Printed per
patience: the epochs it would have saved (a share of all the study trained), the COMPLETE
trials it would have stopped before their decay, and whether the study's best trial is one of
them. A replay, not a rerun: TPE would have seen other values and asked other trials.

    python -m pipeline.sweep problem=log objective=derivative study.seed=0 \
        study.storage=/tmp/p/optuna.journal tracking.uri=sqlite:////tmp/p/mlflow.db
    python benchmarks/patience.py /tmp/p/optuna.journal log-derivative [more journal study ...]
"""

from __future__ import annotations

import argparse
import math

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="pairs of journal file and study name")
    parser.add_argument("--patience", type=int, nargs="+", default=[1000, 2000, 3000, 4000, 5000])
    parser.add_argument("--min-delta", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=10_000)
    parser.add_argument("--decay-start", type=float, default=0.7, help="1 - lr_decay.fraction")
    args = parser.parse_args()
    if len(args.studies) % 2:
        parser.error("give a journal file and a study name for every study")
    return args


def stop_epoch(trial: FrozenTrial, patience: int, min_delta: float, before: int) -> int | None:
    """The report's epoch at which the rule would stop `trial`, or None."""
    best, improved = math.inf, 0
    for epoch in sorted(trial.intermediate_values):
        if epoch >= before:
            return None
        value = trial.intermediate_values[epoch]
        if value < best * (1 - min_delta):
            best, improved = value, epoch
        elif epoch - improved >= patience:
            return epoch
    return None


def replay(trials: list[FrozenTrial], patience: int, args: argparse.Namespace) -> str:
    """One line: epochs saved, COMPLETE trials stopped before their decay, the best among them."""
    trained = sum(max(t.intermediate_values, default=0) for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    saved, stopped = 0, []
    for trial in trials:
        epoch = stop_epoch(trial, patience, args.min_delta, int(args.decay_start * args.epochs))
        if epoch is None:
            continue
        saved += max(trial.intermediate_values) - epoch
        if trial.state == TrialState.COMPLETE:
            stopped.append(trial)
    hit = "STOPS the best trial" if best in stopped else "keeps the best trial"
    names = ", ".join(f"#{t.number} ({t.value:.1e})" for t in stopped) or "none"
    return f"  patience {patience:>5}: saves {saved / max(trained, 1):>4.0%}; {hit}; stops {names}"


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    args = parse_args()
    for path, name in zip(args.studies[::2], args.studies[1::2], strict=True):
        storage = JournalStorage(JournalFileBackend(path))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        trials = [t for t in trials if t.intermediate_values]
        print(f"{name} ({path}): {len(trials)} trials with reports")
        for patience in args.patience:
            print(replay(trials, patience, args))


if __name__ == "__main__":
    main()
