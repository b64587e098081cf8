"""The best model in the Model Registry: `<study name>@best`, moved when a resume improves it.

A value study runs in-process on the default embedded store layout (SQLite under `mlruns/`):
first one trial, the baseline (the post's sigmoid network and SGD, slow to learn in its few
epochs), then the same command topped up to two trials, the second from a space of Adam-trained
tanh networks that learn faster, so the resumed study's best trial changes.
`mlflow.pyfunc.load_model("models:/log-value@best")` must follow.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import sweeps
from sweeping import NARROW_SPACE, Stores, run_sweep_in

from pipeline.core.data import make_dataset
from pipeline.core.problem_config import shipped
from pipeline.defaults import load
from pipeline.names import BASELINE_ATTR
from pipeline.sweeping.study_run import register_best

DATA = load("train").data  # the shipped data settings (conf/data/default.yaml)
NAME = "log-value"
LEARNS = ["search.learning_rate.low=0.01", "search.learning_rate.high=0.03"]
COMMON = ["objective=value", "train.epochs=300", "study.report_every=100", *NARROW_SPACE, *LEARNS]


def _best(stores: Stores):
    """(the study's best trial's run id, the version `best` names, that version's run id)."""
    client = stores.client
    version = client.get_model_version_by_alias(NAME, "best")
    study = stores.study(NAME)
    best_run = sweeps.trial_run(client, study, study.best_trial.number).info.run_id
    return best_run, version


def _load_best(stores: Stores):
    mlflow.set_tracking_uri(stores.client.tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{NAME}@best")


def _mse(model, study_value: float) -> None:
    data = make_dataset(DATA, shipped("log"), 1.0)
    predicted = np.asarray(model.predict(data.x_val.reshape(-1, 1))).ravel()
    mse = float(np.mean((predicted - np.ravel(data.y_val)) ** 2))
    assert mse == pytest.approx(study_value, rel=1e-3)


@pytest.mark.slow
def test_best_alias_follows_the_best_trial_across_a_resume(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    assert run_sweep_in(tmp_path, [*COMMON, "study.n_trials=1"]) == 0
    best_run, version = _best(stores)
    assert str(version.version) == "1" and version.run_id == best_run
    first_value = stores.study(NAME).best_value
    _mse(_load_best(stores), first_value)  # the registered model is the trained one

    assert run_sweep_in(tmp_path, [*COMMON, "study.n_trials=2"]) == 0
    study = stores.study(NAME)
    assert study.trials[0].user_attrs[BASELINE_ATTR]  # the first run trained the post's network
    assert study.best_trial.number == 1 and study.best_value < first_value
    best_run, version = _best(stores)
    assert str(version.version) == "2" and version.run_id == best_run
    _mse(_load_best(stores), study.best_value)
    client = stores.client
    assert {str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")} == {"1", "2"}
    parent = stores.parents()[0]
    assert parent.data.tags["best_run_id"] == version.run_id

    # Finalising again (any worker may) registers nothing new.
    assert register_best(client, NAME, best_run) == "2"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2
