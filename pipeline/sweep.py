"""`python -m pipeline.sweep`: Optuna studies over architecture and learning rate, in MLflow.

Bare, it runs one study per objective (value, then derivative) on `problem=log`;
`objective=value` (or derivative, sobolev) runs one, `problem=<name>` picks the target.
`study.n_workers=N` runs N local worker processes on each study; `check=true` only compares
Optuna with MLflow and reports orphans. `main` reads config; the work is in plain functions.
"""

from __future__ import annotations

from dataclasses import replace

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline import entry
from pipeline.config_values import CONF_DIR
from pipeline.core.data import make_dataset
from pipeline.core.ode_problems import check_objective
from pipeline.core.problem_config import read_problem
from pipeline.settings import (
    OBJECTIVES,
    ConfigError,
    TrainConfig,
    read_data,
    read_objective,
    read_tracking,
    read_train,
)
from pipeline.sweeping.handle import SweepSettings
from pipeline.sweeping.space import read_search
from pipeline.sweeping.study import read_study

BOTH = ("value", "derivative")  # what `objective=both`, the sweep's default, runs

# Keys of `train` that a sweep samples per trial instead, with the search key to set and an example.
SAMPLED = {
    "optimizer": "search.optimizer=[adam]",
    "learning_rate": "search.learning_rate.low=1e-3 search.learning_rate.high=0.1",
}


def read_sweep_train(section: dict) -> TrainConfig:
    """`train` of a sweep: epochs, seed, log_every. An optimizer or learning rate given there is
    refused (conf/train/sweep.yaml leaves both null), since every trial samples its own."""
    for key, example in SAMPLED.items():
        if section.get(key) is not None:
            raise ConfigError(
                f"train.{key}",
                section[key],
                f"a sweep samples it per trial: set search.{key} instead, e.g. {example}",
            )
    return read_train(section, sampled=True)


def read_settings(cfg: DictConfig) -> SweepSettings:
    """Typed, validated sweep settings (raises ConfigError naming the key)."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    problem = read_problem(raw["problem"])
    check_objective(problem, raw["objective"].get("name"))  # an equation takes the residual
    chosen = read_objective(raw["objective"], (*OBJECTIVES, "both"))
    names = BOTH if chosen.name == "both" else (chosen.name,)
    objectives = tuple(replace(chosen, name=name) for name in names)
    data = read_data(raw["data"])
    train = read_sweep_train(raw["train"])
    make_dataset(data, problem, chosen.anchor_x, train.seed)  # f, f' finite: ConfigError if not
    return SweepSettings(
        objectives=objectives,
        problem=problem,
        data=data,
        train=train,
        search=read_search(raw["search"]),
        study=read_study(raw["study"], problem.study_key),
        tracking=read_tracking(raw["tracking"]),
    )


def read_worker(raw: dict, settings: SweepSettings) -> int | None:
    """`worker`: this process's index among workers a scheduler started (null: a plain sweep)."""
    worker = raw.get("worker")
    if worker is None:
        return None
    if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
        raise ConfigError("worker", worker, "must be null or an integer >= 0 (this worker's index)")
    if settings.study.n_workers != 1:
        raise ConfigError(
            "study.n_workers", settings.study.n_workers, "must be 1 when worker is set"
        )
    return worker


def _launch() -> tuple[bool, str]:
    """Whether this is a job of a Hydra multirun, and its launch key (`array.launch_key`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline.sweeping.array import launch_key

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return multirun, launch_key(str(hydra_cfg.sweep.dir) if multirun else None)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
def main(cfg: DictConfig) -> None:
    """Read and check the config, then sweep (or check) every chosen objective.

    A job of a multirun (`-m hydra/launcher=submitit_slurm 'worker=range(16)'`) returns, or
    raises `WorkerFailed`, instead of ending the process: its launcher waits for a result."""
    multirun, launch = _launch()
    try:
        try:
            settings = read_settings(cfg)
            worker = read_worker(OmegaConf.to_container(cfg, resolve=True), settings)
        except ConfigError as error:
            entry.fail(error)
        from pipeline.sweeping.runner import run_check, run_sweep

        code = run_check(settings) if cfg.get("check") else run_sweep(settings, worker, launch)
    except SystemExit as stop:  # a one-line error, already printed
        if not multirun:
            raise
        code = stop.code if isinstance(stop.code, int) else 1
        worker = cfg.get("worker")
    if not multirun:
        entry.exit_now(code)
    if code:
        from pipeline.sweeping.array import WorkerFailed

        raise WorkerFailed(worker, code)


if __name__ == "__main__":
    main()
