"""The sweep end to end: what Optuna and MLflow hold after `python -m pipeline.sweep`.

Sweeps run in-process (Hydra-composed config -> `read_settings` -> `run_sweep`) in a temporary
directory, with tiny epochs. Both stores are read back independently: MLflow through its client
on the SQLite file, Optuna through a fresh `JournalStorage` on the journal file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import sweeps
from contract import UNIFORM_PARAMS
from optuna.trial import TrialState
from sweeping import (
    BASELINE_SPACE,
    NARROW_SPACE,
    REPO_ROOT,
    RUN_PLOTS,
    Stores,
    artifact_paths,
    run_sweep_in,
    trial_of,
)

from pipeline.defaults import load
from pipeline.names import (
    BASELINE_ATTR,
    BEST_TRIAL_TAG,
    MODEL_TAG,
    PARENT_ATTR,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
)
from pipeline.settings import CONSTANT_RATE

# ---------------------------------------------------------------------------------------------
# End to end: both objectives, default sampler and pruner, a few short trials. The space is
# narrowed to the baseline's depth, activation and optimizer to keep XLA compiles to one per
# study; the slow command-line test below runs the full default space.

E2E_TRIALS, E2E_EPOCHS = 3, 400
SWEEP_DECAY = load("sweep").train.lr_decay  # the sweep's default schedule: it decays
assert SWEEP_DECAY != CONSTANT_RATE


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    root = tmp_path_factory.mktemp("sweep")
    overrides = [f"study.n_trials={E2E_TRIALS}", f"train.epochs={E2E_EPOCHS}"]
    code = run_sweep_in(root, [*overrides, "study.report_every=100", *BASELINE_SPACE])
    assert code == 0
    return Stores(root)


def test_one_experiment_holds_one_parent_run_per_study(swept: Stores) -> None:
    parents = swept.parents()
    by_objective = {p.data.tags["pipeline.objective"]: p for p in parents}
    assert len(parents) == 2 and set(by_objective) == {"value", "derivative"}
    studies = {s.study_name for s in swept.storage.get_all_studies()}
    assert studies == {"log-value", "log-derivative"}
    for objective, parent in by_objective.items():
        assert parent.data.tags[STUDY_TAG] == f"log-{objective}"
        assert parent.info.status == "FINISHED"
        study = swept.study(f"log-{objective}")
        assert study.user_attrs[PARENT_ATTR] == parent.info.run_id


def test_parent_run_records_the_best_trial_and_study_plots(swept: Stores) -> None:
    client = swept.client
    for parent in swept.parents():
        study = swept.study(parent.data.tags[STUDY_TAG])
        best = study.best_trial
        assert parent.data.metrics["best_value"] == pytest.approx(best.value, rel=1e-9)
        assert parent.data.tags[BEST_TRIAL_TAG] == str(best.number)
        best_run = client.get_run(parent.data.tags["best_run_id"])
        assert best_run.data.tags[PARENT_TAG] == parent.info.run_id
        assert best_run.data.tags[TRIAL_TAG] == str(best.number)
        plots = artifact_paths(client, parent.info.run_id)
        assert {"plots/optimization_history.png", "plots/parallel_coordinate.png"} <= plots
        varied = len({tuple(sorted(t.params.items())) for t in study.trials}) > 1
        if varied and len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2:
            assert "plots/param_importances.png" in plots


def test_every_trial_is_a_child_run_mirroring_its_optuna_trial(swept: Stores) -> None:
    client = swept.client
    for parent in swept.parents():
        study = swept.study(parent.data.tags[STUDY_TAG])
        children = swept.children(parent.info.run_id)
        assert len(children) == len(study.trials) == E2E_TRIALS
        numbers = sorted(int(c.data.tags[TRIAL_TAG]) for c in children)
        assert numbers == list(range(E2E_TRIALS))
        for run in children:
            tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
            trial = trial_of(study, run)
            assert tags[ROLE_TAG] == "trial"
            assert tags["pipeline.objective"] == parent.data.tags["pipeline.objective"]
            assert tags[STUDY_TAG] == study.study_name
            assert tags[STATE_TAG] == trial.state.name
            assert run.info.status == "FINISHED"
            assert set(UNIFORM_PARAMS) <= set(params)
            assert params["epochs"] == str(E2E_EPOCHS)
            assert params["objective"] == parent.data.tags["pipeline.objective"]
            assert params["n_layers"] == str(trial.params["n_layers"])
            hidden = [trial.params[f"units_l{i}"] for i in range(trial.params["n_layers"])]
            assert params["hidden"] == str(hidden)
            assert params["activation"] == trial.params["activation"]
            assert params["optimizer"] == trial.params["optimizer"]
            assert float(params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
            # The baseline keeps the post's constant rate; every other trial decays its own.
            decay = CONSTANT_RATE if trial.user_attrs.get(BASELINE_ATTR) else SWEEP_DECAY
            assert float(params["lr_decay_fraction"]) == decay.fraction
            assert float(params["lr_decay_final"]) == decay.final
            loss = client.get_metric_history(run.info.run_id, "loss")
            steps = sorted(m.step for m in loss)
            assert len(steps) > 2 and steps[-1] == E2E_EPOCHS == int(metrics["epochs_run"])
            for key in ("val_value_mse", "val_deriv_mse", "objective_value"):
                assert key in metrics
            own = "val_value_mse" if params["objective"] == "value" else "val_deriv_mse"
            assert metrics["objective_value"] == metrics[own]
            if trial.state == TrialState.COMPLETE:
                assert metrics["objective_value"] == pytest.approx(trial.value, rel=1e-9)
            assert artifact_paths(client, run.info.run_id) >= RUN_PLOTS


def test_baseline_is_trial_zero(swept: Stores) -> None:
    for summary in swept.storage.get_all_studies():
        trial = swept.study(summary.study_name).trials[0]
        assert trial.user_attrs.get(BASELINE_ATTR) is True
        assert trial.params == {
            "n_layers": 2,
            "units_l0": 10,
            "units_l1": 10,
            "activation": "sigmoid",
            "optimizer": "sgd",
            "learning_rate": pytest.approx(0.1),
        }
        others = swept.study(summary.study_name).trials[1:]
        assert not any(t.user_attrs.get(BASELINE_ATTR) for t in others)


def test_best_trial_run_carries_a_loadable_keras_model(swept: Stores) -> None:
    import mlflow
    import numpy as np

    client = swept.client
    parent = next(p for p in swept.parents() if p.data.tags["pipeline.objective"] == "value")
    best_run = parent.data.tags["best_run_id"]
    assert client.get_run(best_run).data.tags.get(MODEL_TAG) == "logged"
    models = client.search_logged_models(experiment_ids=[swept.experiment_id()])
    from_best = [m for m in models if m.source_run_id == best_run]
    assert len(from_best) == 1 and from_best[0].name == "model"
    others = {p.info.run_id for p in swept.children(parent.info.run_id)} - {best_run}
    assert not [m for m in models if m.source_run_id in others], "only the best run has a model"
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.keras.load_model(from_best[0].model_uri)
    study = swept.study("log-value")
    units = [
        study.best_trial.params[f"units_l{i}"] for i in range(study.best_trial.params["n_layers"])
    ]
    assert [layer.units for layer in model.layers[:-1]] == units
    # The logged model is the trained one: its validation error is the run's objective value.
    from pipeline.core.data import make_dataset
    from pipeline.core.problem_config import shipped
    from pipeline.defaults import load

    data = make_dataset(load("train").data, shipped("log"), anchor_x=1.0)
    predicted = np.asarray(model(data.x_val)).ravel()
    mse = float(np.mean((predicted - np.ravel(data.y_val)) ** 2))
    assert mse == pytest.approx(study.best_value, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# The real command line, once.


@pytest.mark.slow
def test_command_line_sweep_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline.sweep", "study.n_trials=2", "train.epochs=300"]
    command += ["study.report_every=100"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Compare the runs:" in done.stdout  # the summary ends with how to look
    stores = Stores(tmp_path)
    parents = stores.parents()
    assert sorted(p.data.tags["pipeline.objective"] for p in parents) == ["derivative", "value"]
    for parent in parents:
        study = stores.study(parent.data.tags[STUDY_TAG])
        assert len(stores.children(parent.info.run_id)) == len(study.trials) == 2
        best_run = sweeps.trial_run(stores.client, study, study.best_trial.number)
        assert parent.data.tags["best_run_id"] == best_run.info.run_id
    assert not (tmp_path / "outputs").exists(), "Hydra must not write outputs/ beside mlruns/"


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_threads_train_trials_of_one_layout_side_by_side(tmp_path: Path, n_jobs: int) -> None:
    """study.n_jobs=2: a second population of the layout trains a second trial at once on its
    own thread; with one thread the one layout trains one trial at a time."""
    overrides = ["objective=value", "study.n_trials=4", f"study.n_jobs={n_jobs}"]
    overrides += ["train.epochs=300", "study.report_every=100", "study.pruner.name=none"]
    assert run_sweep_in(tmp_path, [*overrides, *BASELINE_SPACE], log_model=False) == 0
    stores = Stores(tmp_path)
    trials = sorted(stores.study("log-value").trials, key=lambda t: t.datetime_start)
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE}
    overlaps = [b.datetime_start < a.datetime_complete for a, b in pairwise(trials)]
    assert any(overlaps) == (n_jobs == 2), overlaps
    (parent,) = stores.parents()
    assert len(stores.children(parent.info.run_id)) == 4


def test_a_population_trains_trials_together_each_its_own_run(tmp_path: Path) -> None:
    overrides = ["objective=value", "study.n_trials=6", "study.population=3", "train.epochs=300"]
    overrides += ["study.report_every=100", "study.pruner.name=none", *NARROW_SPACE]
    assert run_sweep_in(tmp_path, overrides, log_model=False) == 0
    stores = Stores(tmp_path)
    trials = stores.study("log-value").trials
    assert len(trials) == 6 and {t.state for t in trials} == {TrialState.COMPLETE}
    # Three slots: the first three trials were all asked before any of them was told.
    first = sorted(trials, key=lambda t: t.datetime_start)[:3]
    assert max(t.datetime_start for t in first) < min(t.datetime_complete for t in first)
    (parent,) = stores.parents()
    runs = stores.children(parent.info.run_id)
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in runs) == list(range(6))
    for run in runs:
        trial = trial_of(stores.study("log-value"), run)
        assert run.data.metrics["objective_value"] == pytest.approx(trial.value, rel=1e-6)
        assert run.data.metrics["epochs_run"] == 300
