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
from pipeline.core.data import make_dataset
from pipeline.core.ode_problems import check_objective
from pipeline.core.problems import read_problem
from pipeline.settings import (
    CONF_DIR,
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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
def main(cfg: DictConfig) -> None:
    """Read and check the config, then sweep (or check) every chosen objective."""
    try:
        settings = read_settings(cfg)
    except ConfigError as error:
        entry.fail(error)
    from pipeline.sweeping.runner import run_check, run_sweep

    entry.exit_now(run_check(settings) if cfg.get("check") else run_sweep(settings))


if __name__ == "__main__":
    main()
