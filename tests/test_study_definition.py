"""A study keeps its definition, through the command line: a rerun that changes what its trials
are stops before anything is written; the budget, sampler and pruner may change on a resume;
the baseline trains whatever the space; every finished trial names its MLflow run; a sweep on
PostgreSQL prints no heartbeat warning.

Sweeps run as real subprocesses (`python -m pipeline.sweep`, cwd = a temp dir).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pg
import pytest
import sweeps
from test_bad_input import snapshot

from pipeline.names import BASELINE_ATTR, PARENT_TAG, RUN_ATTR, TRIAL_TAG

JOURNAL = "mlruns/optuna.journal"
TRACKING = "sqlite:///mlruns/mlflow.db"
# The README's search-space example, whose space leaves out the post's sigmoid.
NARROW = ["search.learning_rate.low=1e-3", "search.activation=[tanh,softplus]"]
STUDY = [*sweeps.SMALL, "study.n_trials=3", *NARROW]


def assert_trials_name_their_runs(storage: str, name: str, cwd: Path | None = None) -> list:
    """Every finished trial carries `mlflow_run_id`: its own run, under the study's run."""
    from optuna.trial import TrialState

    study = sweeps.load_study(storage, name, cwd)
    client = sweeps.tracking_client(TRACKING, cwd)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert finished
    for t in finished:
        run = client.get_run(t.user_attrs[RUN_ATTR])
        assert run.data.tags[TRIAL_TAG] == str(t.number)
        assert run.data.tags[PARENT_TAG] == study.user_attrs["mlflow_parent_run_id"]
        assert run.info.status == "FINISHED"
    return finished


@pytest.fixture(scope="module")
def narrow_study(tmp_path_factory) -> tuple[Path, str]:
    """A 3-trial study on the README's narrow space: its folder and the sweep's stdout."""
    folder = tmp_path_factory.mktemp("narrow")
    result = sweeps.run_sweep(folder, *STUDY)
    assert result.returncode == 0, result.stderr
    return folder, result.stdout


@pytest.mark.slow
def test_baseline_trains_outside_the_space_and_trials_name_their_runs(narrow_study):
    folder, stdout = narrow_study
    line = next(row for row in stdout.splitlines() if row.startswith("value "))
    baseline = line.split()[1]
    assert baseline != "nan" and float(baseline) > 0, line
    finished = assert_trials_name_their_runs(JOURNAL, "log-value", folder)
    (trial0,) = [t for t in finished if t.user_attrs.get(BASELINE_ATTR)]
    assert trial0.number == 0 and trial0.params == {}  # the sampler never sees a sigmoid
    run = sweeps.tracking_client(TRACKING, folder).get_run(trial0.user_attrs[RUN_ATTR])
    assert run.data.params["activation"] == "sigmoid"
    assert run.data.params["hidden"] == "[10, 10]"
    assert run.data.params["units_l1"] == "10"


@pytest.mark.slow
def test_a_changed_definition_stops_with_a_line_per_key_and_writes_nothing(narrow_study):
    folder, _ = narrow_study
    before = snapshot(folder)
    # The README's own flow: the default space's rerun on this study, and a longer budget.
    result = sweeps.run_sweep(folder, *sweeps.SMALL, "study.n_trials=5", "train.epochs=500")
    lines = [row for row in result.stderr.splitlines() if row.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    keys = [re.match(r"error: ([\w.]+)=", row).group(1) for row in lines]
    assert keys == ["train.epochs", "search.activation", "search.learning_rate.low"], lines
    assert "was made with train.epochs=300" in lines[0] and "study.name" in lines[0]
    assert "search.activation=[tanh,softplus]" in lines[1]
    assert snapshot(folder) == before


@pytest.mark.slow
def test_budget_and_sampler_may_change_on_a_resume_said_once(narrow_study, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(narrow_study[0], folder)
    result = sweeps.run_sweep(folder, *STUDY, "study.n_trials=4", "study.sampler.name=random")
    assert result.returncode == 0, result.stderr
    notes = [row for row in result.stdout.splitlines() if row.startswith("note:")]
    assert len(notes) == 1, result.stdout
    assert "study.n_trials=4 (was 3)" in notes[0] and "study.sampler.name=random" in notes[0]
    sweeps.assert_books(JOURNAL, TRACKING, "log-value", 4, cwd=folder)
    again = sweeps.run_sweep(folder, *STUDY, "study.n_trials=4", "study.sampler.name=random")
    assert again.returncode == 0 and "note:" not in again.stdout  # recorded: said once


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_sweep_prints_no_heartbeat_warning_and_links_runs(tmp_path):
    with pg.database() as name:
        storage = pg.url(name)
        overrides = [*sweeps.SMALL, "study.n_trials=2", f"study.storage={storage}"]
        result = sweeps.run_sweep(tmp_path, *overrides)
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr, result.stderr
        assert_trials_name_their_runs(storage, "log-value", tmp_path)
