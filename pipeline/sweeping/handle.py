"""A sweep's checked settings (picklable, for worker processes) and the handle on one study.

A `StudyHandle` is opened once per study and process: the study's name, its Optuna storage and
study, the MLflow client and the study (parent) run. A live storage and client do not cross
processes, so a worker process opens its own from the settings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.core.problems import Problem
from pipeline.names import PARENT_ATTR
from pipeline.settings import DataConfig, ObjectiveConfig, TrackingConfig, TrainConfig
from pipeline.sweeping.space import SearchSpace
from pipeline.sweeping.study import StudyConfig, study_name

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep needs, checked; picklable so worker processes can take it."""

    objectives: tuple[ObjectiveConfig, ...]
    problem: Problem
    data: DataConfig
    train: TrainConfig
    search: SearchSpace
    study: StudyConfig
    tracking: TrackingConfig

    def study_name(self, objective: str) -> str:
        """The name of the objective's study in this sweep (the one place it is worked out)."""
        return study_name(self.study.name, objective, len(self.objectives))

    def objective(self, name: str) -> ObjectiveConfig:
        """The settings of the objective called `name`."""
        return next(o for o in self.objectives if o.name == name)


@dataclass
class StudyHandle:
    """One study of a sweep as this process holds it: Optuna's side and MLflow's side."""

    name: str
    objective: str
    storage: optuna.storages.BaseStorage  # the one `study` was opened on (Optuna hides it)
    study: optuna.Study
    client: MlflowClient | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    created: bool = False  # this process created the study

    @classmethod
    def open(
        cls, settings: SweepSettings, objective: ObjectiveConfig, worker_index: int = 0
    ) -> StudyHandle:
        """Create or load the objective's study and find or create its study run, waiting for
        MLflow up to `tracking.outage_timeout`. A study made for another objective is refused."""
        from tqdm import tqdm

        from pipeline.sweeping import definition
        from pipeline.sweeping.study import (
            finished_count,
            make_pruner,
            make_sampler,
            make_storage,
            open_study,
            trials_so_far,
        )
        from pipeline.sweeping.study_run import ensure_parent_run, parent_params
        from pipeline.tracking import store
        from pipeline.tracking.outage import STORAGE_PATIENCE_S, on_storage, patiently, retry
        from pipeline.tracking.spool import Spool

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours to print
        cfg, tracking, key = settings.study, settings.tracking, objective.name
        # A worker may start while PostgreSQL restarts: each step waits for it (`on_storage`).
        name = settings.study_name(key)
        storage = retry(functools.partial(make_storage, cfg), STORAGE_PATIENCE_S)
        made: list[bool] = []  # whether an attempt created the study (a retry then loads it)

        def opened() -> tuple[optuna.Study, bool]:
            # A resumed or parallel worker must not replay another's random stream: offset it.
            sampler = make_sampler(cfg, worker_index * 100_003 + trials_so_far(storage, name))
            study, created = open_study(storage, name, key, sampler, make_pruner(cfg))
            made.append(created)
            definition.record(study, settings, objective)
            return study, finished_count(study) < cfg.n_trials  # else its run stays as closed

        study, short = on_storage(storage, opened)
        created = any(made)
        params = parent_params(settings, objective)

        def books() -> tuple[MlflowClient, str, str]:
            client, experiment_id = store.connect(tracking)
            parent = ensure_parent_run(study, created, client, experiment_id, key, params, short)
            return client, experiment_id, parent

        spool = Spool.of_sweep(tracking.uri, cfg.storage).directory
        books_of = patiently(books, tracking.uri, tracking.outage_timeout, spool, tqdm.write)
        return cls(name, key, storage, study, *books_of, created=created)

    @classmethod
    def load(
        cls,
        settings: SweepSettings,
        objective: str,
        storage: optuna.storages.BaseStorage,
        client: MlflowClient | None = None,
        experiment_id: str | None = None,
    ) -> StudyHandle:
        """The objective's existing study (KeyError when there is none) and the study run it
        records, creating nothing."""
        name = settings.study_name(objective)
        study = optuna.load_study(study_name=name, storage=storage)
        parent = study.user_attrs.get(PARENT_ATTR)
        return cls(name, objective, storage, study, client, experiment_id, parent)

    @functools.cached_property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.name)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial `number`, what heartbeats are recorded under."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def beat(self, number: int) -> None:
        """Tell the storage that trial `number` lives (RDB storages with heartbeats)."""
        self.storage.record_heartbeat(self.trial_id(number))

    def running(self) -> list[FrozenTrial]:
        """The study's RUNNING trials, this process's and any other's."""
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
