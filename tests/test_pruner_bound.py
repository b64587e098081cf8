"""benchmarks/pruner_bound.py: the oracle pruner's time to a level on a study's own path."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pruner_bound import bound

T0 = datetime(2026, 12, 5, 12, 0, 0)


def _trial(number: int, layers: int, start: float, end: float, value: float | None,
           reports: list[int]) -> FrozenTrial:  # fmt: skip
    return FrozenTrial(
        number=number,
        state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        value=value,
        datetime_start=T0 + timedelta(seconds=start),
        datetime_complete=T0 + timedelta(seconds=end),
        params={"n_layers": layers},
        distributions={"n_layers": IntDistribution(1, 4)},
        user_attrs={},
        system_attrs={},
        intermediate_values={step: 1.0 for step in reports},
        trial_id=number,
    )


# 1,000 epochs a trial, reports every 100, a deep epoch costs 2 shallow ones. The first round
# (trials 0 and 1, 3,000 shallow epochs) ends at 12 s; after it 2,500 shallow epochs take 2.5 s,
# so an epoch costs 1 ms and the compile 12 - 3 = 9 s.
STUDY = [
    _trial(0, 2, 0.0, 12.0, 1e-3, list(range(100, 1001, 100))),
    _trial(1, 4, 0.0, 12.0, 1e-5, list(range(100, 1001, 100))),
    _trial(2, 2, 12.0, 12.5, None, [100, 200, 300, 400, 500]),  # pruned at 500
    _trial(3, 4, 12.5, 14.5, 1e-6, list(range(100, 1001, 100))),
]


def test_the_oracle_trains_only_the_improving_trials_in_full() -> None:
    b = bound(STUDY, level=1e-6, deep_cost=2.0, report_every=100, epochs=1000)
    assert b.reached == pytest.approx(14.5)
    assert b.compile == pytest.approx(9.0)
    assert (b.trials, b.improving) == (4, 3)
    # compile 9 s + trials 0, 1 and 3 in full (1,000 + 2,000 + 2,000 ms) + trial 2's first
    # report (100 ms): 14.1 s.
    assert b.oracle == pytest.approx(14.1)
    assert b.ratio == pytest.approx(14.5 / 14.1)


def test_a_level_reached_sooner_counts_only_the_trials_asked_by_then() -> None:
    b = bound(STUDY, level=1e-5, deep_cost=2.0, report_every=100, epochs=1000)
    assert b.reached == pytest.approx(12.0) and b.trials == 2
    assert b.oracle == pytest.approx(12.0)  # the first round is all it took: ratio 1


def test_a_level_never_reached_has_no_ratio() -> None:
    b = bound(STUDY, level=1e-7, deep_cost=2.0, report_every=100, epochs=1000)
    assert math.isinf(b.reached) and math.isinf(b.oracle) and math.isnan(b.ratio)


def test_the_script_reads_a_journal(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(study_name="log-value", storage=storage).add_trials(STUDY)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pruner_bound.py"
    args = ["--level", "1e-6", "--deep-cost", "2", "--report-every", "100", "--epochs", "1000"]
    done = subprocess.run([sys.executable, str(script), str(journal), "log-value", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "after 4 trials (3 lowered the best)" in done.stdout, done.stdout
    assert "oracle pruner 14.1s (compile ~9.0s of it): at most 1.03x sooner" in done.stdout
