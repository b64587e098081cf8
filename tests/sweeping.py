"""Running a sweep in-process in a temporary directory and reading both stores back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.defaults import load
from pipeline.names import PARENT_TAG, ROLE_TAG, TRIAL_TAG
from pipeline.sweeping.handle import SweepSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "pipeline"
RUN_PLOTS = {"plots/fit.png", "plots/derivative.png", "plots/loss.png"}
# One depth, activation and optimizer: every trial of these tests reuses one compiled graph.
NARROW_SPACE = ("search.activation=[tanh]", "search.optimizer=[adam]", "search.n_layers.high=1")
# Narrow too, but holding the post's network (so the baseline is enqueued): one graph per study.
BASELINE_SPACE = (
    "search.activation=[sigmoid]",
    "search.optimizer=[sgd]",
    "search.n_layers.low=2",
    "search.n_layers.high=2",
)


def store_overrides(root: Path) -> list[str]:
    """Absolute store locations under `root` (MLflow caches stores per URI: never share one)."""
    return [
        f"tracking.uri=sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        f"study.storage={root / 'mlruns' / 'optuna.journal'}",
    ]


def settings_for(overrides: Sequence[str]) -> SweepSettings:
    """What `python -m pipeline.sweep <overrides>` would run with."""
    settings = load("sweep", overrides)
    assert isinstance(settings, SweepSettings)
    return settings


def run_sweep_in(root: Path, overrides: Sequence[str], log_model: bool = True) -> int:
    """Run a sweep with `root` as working directory and stores; return its exit code.

    `log_model=False` skips only MLflow's Keras model logging (seconds per study, spent in a
    subprocess that infers pip requirements) for tests about other things.
    """
    from pipeline.sweeping.runner import run_sweep
    from pipeline.tracking import store

    settings = settings_for([*store_overrides(root), *overrides])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        if not log_model:
            patch.setattr(store, "log_keras_model", lambda client, run_id, model: None)
        return run_sweep(settings)


@dataclass
class Stores:
    """Both stores of one sweep directory, opened read-only-style for assertions."""

    root: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}")

    @property
    def storage(self) -> JournalStorage:
        return JournalStorage(JournalFileBackend(str(self.root / "mlruns" / "optuna.journal")))

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None, "the sweep made no MLflow experiment"
        return experiment.experiment_id

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def summaries(self) -> list[optuna.study.FrozenStudy]:
        return self.storage.get_all_studies()

    def finished(self, name: str) -> int:
        """COMPLETE + PRUNED trials of study `name`."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(self.study(name).get_trials(deepcopy=False, states=states))

    def runs(self, filter_string: str = "") -> list[Run]:
        return self.client.search_runs(
            [self.experiment_id()], filter_string=filter_string, max_results=1000
        )

    def parents(self) -> list[Run]:
        return self.runs(f"tags.`{ROLE_TAG}` = 'study'")

    def children(self, parent_id: str) -> list[Run]:
        return self.runs(f"tags.`{PARENT_TAG}` = '{parent_id}'")


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every file path (recursively) among a run's artifacts."""
    found = set()
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found |= artifact_paths(client, run_id, info.path)
        else:
            found.add(info.path)
    return found


def trial_of(study: optuna.Study, run: Run) -> optuna.trial.FrozenTrial:
    number = int(run.data.tags[TRIAL_TAG])
    trial = study.trials[number]
    assert trial.number == number
    return trial
