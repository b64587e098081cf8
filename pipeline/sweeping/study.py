"""The Optuna side of a sweep: study settings, storage, sampler, pruner, and opening a study.

Everything here is Optuna's own machinery chosen by name from `conf/study/`; nothing is
reimplemented. A local journal file is the default storage (safe for several processes on one
machine); an RDB URL (PostgreSQL) lets workers on many machines share one study, with
heartbeats so a dead worker's trial is failed and retried.
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from pipeline.core import objectives
from pipeline.names import OBJECTIVE_ATTR, REASON, RUN_ATTR, WORKER_ATTR
from pipeline.settings import ConfigError, read_int
from pipeline.sweeping.experimental import experimental_quietly
from pipeline.sweeping.storage import GRPC, open_storage, read_storage

# What a trial carries: its run id and worker (Optuna user attrs), its state as a run tag, and
# why it failed or was pruned (both).

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
AUTO_JOBS = 2  # study.n_jobs=auto's most threads per worker
ATTEMPT_ATTRS = (REASON, RUN_ATTR, WORKER_ATTR)  # one attempt's, not a retry's
MAX_RETRY = 3  # a trial whose worker died is retried this often (Optuna's heartbeat retry)


@dataclass(frozen=True)
class StudyConfig:
    """How the study is stored, sampled, pruned and how far it goes."""

    name: str
    n_trials: int
    storage: str
    sampler: str
    sampler_options: dict[str, Any]
    pruner: str
    pruner_options: dict[str, Any]
    seed: int | None
    n_workers: int
    n_jobs: int
    population: int
    report_every: int
    max_failures: int
    heartbeat_interval: int
    grace_period: int

    @property
    def is_rdb(self) -> bool:
        """A database URL (with heartbeats), not a journal file nor the gRPC proxy."""
        return "://" in self.storage and not self.storage.startswith(GRPC)


def _component(section: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> tuple[str, dict]:
    value = section.get(key)
    name, options = (value, {}) if isinstance(value, str) else (None, None)
    if isinstance(value, Mapping):
        name, options = value.get("name"), value.get("options") or {}
    if name not in allowed:
        raise ConfigError(f"study.{key}.name", name, f"must be one of {', '.join(allowed)}")
    if not isinstance(options, Mapping):
        raise ConfigError(f"study.{key}.options", options, "must be a mapping of keyword args")
    return name, dict(options)


def read_study(section: Mapping[str, Any], problem: str) -> StudyConfig:
    """Checked study settings (raises ConfigError naming the key); `{problem}` in the name
    becomes `problem` (the problem's study key: `log`, or `expr-<hash>` per expression)."""
    name = section.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("study.name", name, "must be a non-empty name")
    name = name.replace("{problem}", problem)
    sampler, sampler_options = _component(section, "sampler", SAMPLERS)
    pruner, pruner_options = _component(section, "pruner", PRUNERS)
    seed = section.get("seed")
    if seed is not None:
        seed = read_int(section, "study", "seed", minimum=0)
    cfg = StudyConfig(
        name=name,
        n_trials=read_int(section, "study", "n_trials", minimum=1),
        storage=read_storage(section.get("storage")),
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        seed=seed,
        n_workers=read_int(section, "study", "n_workers", minimum=1),
        n_jobs=read_n_jobs(section),
        population=read_int(section, "study", "population", minimum=1),
        report_every=read_int(section, "study", "report_every", minimum=1),
        max_failures=read_int(section, "study", "max_failures", minimum=1),
        heartbeat_interval=read_int(section, "study", "heartbeat_interval", minimum=1),
        grace_period=read_int(section, "study", "grace_period", minimum=1),
    )
    make_sampler(cfg), make_pruner(cfg)  # a missing package or bad option fails before any write
    return cfg


def read_n_jobs(section: Mapping[str, Any]) -> int:
    """`study.n_jobs`: an integer >= 1, or `auto`: 2 threads per worker where this process may
    use 2 CPUs per local worker (two graph calls side by side train up to twice the epochs of
    one; 2 is where 30-trial studies were measured), else 1."""
    value = section.get("n_jobs")
    if value != "auto":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("study.n_jobs", value, "must be an integer >= 1 or auto")
        return value
    n_workers = section.get("n_workers")
    workers = n_workers if isinstance(n_workers, int) and n_workers >= 1 else 1
    return max(1, min(AUTO_JOBS, len(os.sched_getaffinity(0)) // workers))


def study_name(template: str, objective: str, n_objectives: int) -> str:
    """`{objective}` filled in; a plain name gets `-<objective>` when one sweep runs both."""
    if "{objective}" in template:
        return template.replace("{objective}", objective)
    return f"{template}-{objective}" if n_objectives > 1 else template


def worker_id() -> str:
    """host:pid of this process, recorded on the trials it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(cfg: StudyConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna's sampler of that name with its options; workers get distinct seeds."""
    seed = None if cfg.seed is None else cfg.seed + seed_offset
    options = {"seed": seed, **cfg.sampler_options}
    try:
        if cfg.sampler == "tpe":
            # units_l1.. exist only for deeper networks: group=True models each set of params
            # that occur together (better on both objectives over 5 seeds, benchmarks/quality.py).
            with experimental_quietly():
                return optuna.samplers.TPESampler(**{"group": True, **options})
        if cfg.sampler == "random":
            return optuna.samplers.RandomSampler(**options)
        if cfg.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(**options)
        if cfg.sampler == "qmc":
            return optuna.samplers.QMCSampler(**options)
        import torch  # noqa: F401  (GPSampler needs it)

        return optuna.samplers.GPSampler(**options)
    except ImportError:
        raise ConfigError(
            "study.sampler.name", cfg.sampler, "needs PyTorch: pip install -e '.[gp]'"
        ) from None
    except (TypeError, ValueError) as error:  # an unknown option, or options that conflict
        raise ConfigError("study.sampler.options", cfg.sampler_options, str(error)) from None


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruner of that name with its options (`none` never prunes)."""
    try:
        if cfg.pruner == "median":
            return optuna.pruners.MedianPruner(**cfg.pruner_options)
        if cfg.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(**cfg.pruner_options)
        if cfg.pruner == "successive_halving":  # ASHA's rungs, one bracket: TPE sees every trial
            return optuna.pruners.SuccessiveHalvingPruner(**cfg.pruner_options)
        return optuna.pruners.NopPruner()
    except TypeError as error:
        raise ConfigError("study.pruner.options", cfg.pruner_options, str(error)) from None


def retry_stale() -> Callable[[optuna.Study, FrozenTrial], None]:
    """Optuna's retry of a trial whose worker died: a copy of it is enqueued (MAX_RETRY times)."""
    with experimental_quietly():
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def retry_stopped(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue a copy of a trial a scheduler stopped (SIGTERM: scancel, a pod deleted), as
    Optuna's retry does for a dead worker's, without its run, worker and failure reason."""
    again = copy.copy(trial)
    again.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
    retry_stale()(study, again)


class StaleTrials:
    """An RDB storage's stale-trial callback: Optuna's retry, noting each trial failed so that
    the sweep can record its run (`take` hands over those noted since the last call)."""

    def __init__(self) -> None:
        self.retry, self.failed = retry_stale(), []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failed.append(trial)
        self.retry(study, trial)

    def take(self) -> list[FrozenTrial]:
        failed, self.failed = self.failed, []
        return failed


def make_storage(cfg: StudyConfig) -> optuna.storages.BaseStorage:
    """A journal file (default, local processes), the gRPC proxy, or an RDB with heartbeats
    and retries (`sweeping.storage`)."""
    return open_storage(
        cfg.storage, cfg.heartbeat_interval, cfg.grace_period, StaleTrials() if cfg.is_rdb else None
    )


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    objective: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """Create the study or load it; True when this call created it.

    A study of that name made for the other objective (or to maximise) is refused with a
    ConfigError before anything is written.
    """
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", sampler=sampler, pruner=pruner
        )
        study.set_user_attr(OBJECTIVE_ATTR, objective)
        _name_metric(study, objective)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
    owner = study.user_attrs.get(OBJECTIVE_ATTR, objective)
    if owner != objective or study.directions != [optuna.study.StudyDirection.MINIMIZE]:
        what = f"objective={owner}" if owner != objective else "a different direction"
        raise ConfigError(
            "study.name", name, f"an existing study of that name was made for {what}; pick another"
        )
    _name_metric(study, objective)  # studies made before metric names were set get one too
    return study, False


def metric_name(objective: str) -> str:
    """What a study of `objective` minimises, as its runs name it: val_value_mse for a value
    fit, val_deriv_mse for a derivative fit, objective_value for a combination of both."""
    spec = objectives.get(objective)
    if spec.fits_value != spec.fits_slope:
        return "val_value_mse" if spec.fits_value else "val_deriv_mse"
    return "objective_value"


def _name_metric(study: optuna.Study, objective: str) -> None:
    """Name the study's objective so Optuna's plots and optuna-dashboard show it, not
    "Objective 0"."""
    names = [metric_name(objective)]
    if study.metric_names != names:
        with experimental_quietly():
            study.set_metric_names(names)


def finished_count(study: optuna.Study) -> int:
    """COMPLETE + PRUNED trials: what `study.n_trials` counts (failed ones are made up)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trials_so_far(storage: optuna.storages.BaseStorage, name: str) -> int:
    """How many trials (any state) the study `name` has in `storage`; 0 when there is none."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))
