"""The most any pruner could shorten a finished study's time to a level: an oracle replay.

The oracle knows every trial's fate. On the study's own path (the same trials, asked in the same
order) it trains in full only the trials that lowered the study's best on the way to `level`
and stops every other one at its first report; the graphs' compile and the per-epoch cost stay.
Its time to the level, against the study's measured one, bounds what a pruner (median,
Hyperband, a patience rule, ...) can give on that path: a study needs another path (other
trials), cheaper epochs or less compile to beat it.

Costs come from the journal: the trials that started with the study (the first round, one per
layout, trained side by side) carry the compile; the study's span after them, shared out by
epochs trained x the layout's relative cost per epoch (`--deep-cost`: deep against shallow,
measured per objective in the README), gives the seconds per epoch. That fit also spreads a
graph compiled after the first round, and every trial's ask and tell, over the epochs, which
the oracle cuts: an estimate (a few seconds either way), not a measurement.

    python -m pipeline.sweep problem=log objective=value study.seed=0 \
        study.storage=/tmp/p/optuna.journal tracking.uri=sqlite:////tmp/p/mlflow.db
    python benchmarks/pruner_bound.py /tmp/p/optuna.journal log-value --level 1.5e-6
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

# Deep against shallow layout per epoch (README, "What holds the speed-ups down": one slot of
# 4 x 64 against 2 x 64: derivative 546 / 204 us, value 60 / 27 us).
DEEP_COST = {"derivative": 546 / 204, "value": 60 / 27}


@dataclass(frozen=True)
class Bound:
    reached: float  # seconds from the study's first trial to its best <= level (inf: never)
    oracle: float  # the oracle pruner's seconds to the same level
    compile: float  # the first round's seconds beyond its epochs (compile, first calls)
    trials: int  # trials asked up to the one that reached the level
    improving: int  # of them, the ones that lowered the best (trained in full)

    @property
    def ratio(self) -> float:
        """How many times sooner the oracle got there: the most any pruner could give."""
        return self.reached / self.oracle if math.isfinite(self.reached) else math.nan


def bound(
    trials: list[FrozenTrial], level: float, deep_cost: float, report_every: int, epochs: int
) -> Bound:
    """The oracle's time to `level` on the path these trials took (see the module's text)."""
    trials = [t for t in trials if t.datetime_start and t.datetime_complete]
    start = min(t.datetime_start for t in trials)
    since = lambda moment: (moment - start).total_seconds()  # noqa: E731

    def cost(trial: FrozenTrial, epochs_run: int) -> float:  # in shallow epochs
        return epochs_run * (deep_cost if trial.params.get("n_layers", 1) > 2 else 1.0)

    def run(trial: FrozenTrial) -> int:
        if trial.state == TrialState.COMPLETE:
            return epochs
        return max(trial.intermediate_values, default=report_every)  # pruned, or diverged

    first = [t for t in trials if since(t.datetime_start) < 1.0]
    later = [t for t in trials if t not in first]
    first_round = max(since(t.datetime_complete) for t in first)
    span = max(since(t.datetime_complete) for t in trials) - first_round
    per_epoch = span / max(sum(cost(t, run(t)) for t in later), 1.0)
    compile_s = first_round - per_epoch * sum(cost(t, run(t)) for t in first)
    best, improving = math.inf, []
    for trial in sorted(trials, key=lambda t: t.datetime_complete):
        if trial.state == TrialState.COMPLETE and trial.value < best:
            best = trial.value
            improving.append(trial)
            if best <= level:
                break
    if best > level:
        return Bound(math.inf, math.inf, compile_s, len(trials), len(improving))
    asked = [t for t in trials if t.datetime_start <= improving[-1].datetime_start]
    shares = [cost(t, run(t) if t in improving else min(report_every, run(t))) for t in asked]
    oracle = compile_s + per_epoch * sum(shares)
    return Bound(since(improving[-1].datetime_complete), oracle, compile_s, len(asked),
                 len(improving))  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="pairs of journal file and study name")
    parser.add_argument("--level", type=float, required=True, help="the best value to reach")
    parser.add_argument("--deep-cost", type=float, help="default: by the study name's objective")
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10_000)
    args = parser.parse_args()
    if len(args.studies) % 2:
        parser.error("give a journal file and a study name for every study")
    return args


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for journal, name in zip(args.studies[::2], args.studies[1::2], strict=True):
        storage = JournalStorage(JournalFileBackend(journal))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        deep = args.deep_cost or DEEP_COST.get(name.rsplit("-", 1)[-1], 1.0)
        b = bound(trials, args.level, deep, args.report_every, args.epochs)
        if math.isinf(b.reached):
            print(f"{name} ({journal}): never reached {args.level:.2e}")
            continue
        print(f"{name} ({journal}): reached {args.level:.2e} at {b.reached:.1f}s after "
              f"{b.trials} trials ({b.improving} lowered the best); an oracle pruner "
              f"{b.oracle:.1f}s (compile ~{b.compile:.1f}s of it): at most {b.ratio:.2f}x "
              f"sooner")  # fmt: skip


if __name__ == "__main__":
    main()
