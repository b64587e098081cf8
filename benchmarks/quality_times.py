"""Time to quality for `benchmarks/quality.py`: when a study's best value first reached a level,
and an older checkout of the project (a git worktree) to run the same studies with.

A study's clock starts at its first trial's start; its best `objective_value` at a moment is
the least value of the COMPLETE trials finished by then (what `study.best_value` said then).
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna


def best_over_time(storage: str, study_name: str) -> list[tuple[float, float]]:
    """(seconds since the study's first trial started, best value then) at every improvement,
    read from the Optuna journal file `storage`."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(
        study_name=study_name, storage=JournalStorage(JournalFileBackend(storage))
    )
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start is not None)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    steps, best = [], math.inf
    for trial in sorted(complete, key=lambda t: t.datetime_complete):
        if trial.value < best:
            best = trial.value
            steps.append(((trial.datetime_complete - start).total_seconds(), best))
    return steps


def time_to(steps: Sequence[tuple[float, float]], level: float) -> float:
    """Seconds until the best value was <= `level`; inf if it never was."""
    return next((seconds for seconds, best in steps if best <= level), math.inf)


def seconds_text(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds:.0f}s"


def ratio_text(reference: float, ours: float) -> str:
    """How many times sooner ours reached a level than the reference did ("-": neither did)."""
    if math.isinf(reference) and math.isinf(ours):
        return "-"
    if math.isinf(ours):
        return "0x"
    if math.isinf(reference):
        return "inf"
    return f"{reference / ours:.2f}x" if ours > 0 else "inf"


@contextlib.contextmanager
def checkout(repo: Path, ref: str) -> Iterator[Path]:
    """`ref` of the repository at `repo` checked out in a temporary git worktree (removed after)."""
    with tempfile.TemporaryDirectory(prefix="quality-ref-") as scratch:
        path = Path(scratch) / "checkout"
        git = ["git", "-C", str(repo)]
        subprocess.run([*git, "worktree", "add", "--detach", str(path), ref], check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False,
                           capture_output=True)  # fmt: skip
