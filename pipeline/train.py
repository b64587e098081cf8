"""`python -m pipeline.train`: one tape-trained run of one configuration, tracked in MLflow.

Default: the blog post's 10-10 sigmoid network, SGD lr 0.1, 10,000 epochs, value objective on
`problem=log`; `objective=derivative` (or sobolev) switches the loss, `problem=<name>` the target.
Logic lives in `run_one`; `main` only reads config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline import entry
from pipeline.config_values import CONF_DIR
from pipeline.core.data import Dataset, make_dataset
from pipeline.core.ode_problems import check_objective
from pipeline.core.problem_config import read_problem
from pipeline.core.problems import Problem
from pipeline.core.results import TrainResult
from pipeline.names import OBJECTIVE_TAG, ROLE_TAG
from pipeline.settings import (
    OBJECTIVES,
    ConfigError,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    TrackingConfig,
    TrainConfig,
    read_data,
    read_model,
    read_objective,
    read_tracking,
    read_train,
)

if TYPE_CHECKING:
    from pipeline.tracking.run_recorder import RunRecorder

PROGRESS_EVERY = 1000  # epochs between progress lines (one compiled chunk each)


@dataclass(frozen=True)
class RunSettings:
    """Everything one training run needs, checked."""

    objective: ObjectiveConfig
    problem: Problem
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    ui_command: str  # how to look at the run


def read_settings(cfg: DictConfig) -> RunSettings:
    """Typed, validated settings from the composed config (raises ConfigError)."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    problem = read_problem(raw["problem"])
    check_objective(problem, raw["objective"].get("name"))  # an equation takes the residual
    objective = read_objective(raw["objective"], OBJECTIVES)
    data = read_data(raw["data"])
    train = read_train(raw["train"])
    make_dataset(data, problem, objective.anchor_x, train.seed)  # f, f' finite: ConfigError if not
    return RunSettings(
        objective=objective,
        problem=problem,
        data=data,
        model=read_model(raw["model"]),
        train=train,
        tracking=read_tracking(raw["tracking"]),
    )


def run_one(settings: RunSettings, verbose: bool = True, background: bool = False) -> RunOutcome:
    """Train one configuration with the compiled tape loop and log it as one MLflow run;
    `background`: MLflow's side starts in a second process while TensorFlow imports."""
    from pipeline.tracking.run_recorder import RunRecorder

    s = settings
    data = make_dataset(s.data, s.problem, s.objective.anchor_x, s.train.seed)
    recorder = RunRecorder(s.tracking, data, s.train.epochs, background=background)
    try:
        outcome = _record(settings, _train(settings, data, verbose), data, recorder)
    except BaseException:  # Ctrl-C, a failure: no waiting on the recording process
        recorder.abandon()
        raise
    recorder.close()
    return outcome


def _train(settings: RunSettings, data: Dataset, verbose: bool) -> TrainResult:
    entry.import_tensorflow_quietly(settings.train.compile_cache)
    from pipeline.core.model import seeded_weights
    from pipeline.core.trainer import TrainSpec, train

    s = settings
    spec = TrainSpec(
        activation=s.model.activation,
        optimizer=s.train.optimizer,
        learning_rate=s.train.learning_rate,
        epochs=s.train.epochs,
        lr_decay=s.train.lr_decay,
        objective=s.objective.name,
        anchor_weight=s.objective.anchor_weight,
        deriv_weight=s.objective.deriv_weight,
        log_every=s.train.log_every,
        report_every=min(PROGRESS_EVERY, s.train.epochs),
        condition_weight=s.objective.condition_weight,
    )

    def progress(report) -> bool:
        if verbose:
            residual = report.val_residual_mse
            extra = "" if math.isnan(residual) else f"  val_residual_mse {residual:.3e}"
            print(
                f"epoch {report.epoch:>6}  loss {report.loss:.3e}  val_value_mse "
                f"{report.val_value_mse:.3e}  val_deriv_mse {report.val_deriv_mse:.3e}{extra}"
            )
        return False

    # The weights the post's Keras model starts from, without building it (~0.1 s).
    weights = seeded_weights(s.model.hidden, s.train.seed)
    result = train(spec, weights, data, on_report=progress)
    if result.diverged_at is not None and verbose:
        print(f"stopped: non-finite loss at epoch {result.diverged_at}")
    return result


def _record(
    settings: RunSettings, result: TrainResult, data: Dataset, recorder: RunRecorder
) -> RunOutcome:
    """The trained network as one MLflow run: FINISHED, or FAILED with why when it diverged."""
    from pipeline.tracking.recording import run_params
    from pipeline.tracking.run_recorder import TrainedRun

    s = settings
    params = run_params(
        s.model.hidden,
        s.model.activation,
        s.train.optimizer,
        s.train.learning_rate,
        s.train.lr_decay,
        s.train.epochs,
        s.train.seed,
        s.objective.name,
        s.problem,
    )
    params |= s.objective.params()
    params |= {f"data.{k}": v for k, v in vars(s.data).items()}
    label = f"{s.problem.name}-{s.objective.name}"
    diverged = result.diverged_at
    recorded = recorder.record(
        TrainedRun(
            f"train-{label}",
            label,
            {ROLE_TAG: "run", OBJECTIVE_TAG: s.objective.name},
            params,
            result,
            data,
            s.objective,
            failure=None if diverged is None else f"non-finite loss at epoch {diverged}",
        )
    )
    return RunOutcome(
        run_id=recorded.run_id,
        experiment_id=recorded.experiment_id,
        metrics=recorded.metrics,
        ui_command=recorded.ui_command,
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Read and check the config, train, and say where the run is."""
    try:
        settings = read_settings(cfg)
    except ConfigError as error:
        entry.fail(error)
    outcome = run_one(settings, background=True)
    m = outcome.metrics
    shown = [
        k for k in ("val_value_mse", "val_deriv_mse", "val_residual_mse", "val_l2re") if k in m
    ]
    errors = ", ".join(f"{k} {m[k]:.3e}" for k in shown)
    print(f"run {outcome.run_id}: {errors} ({m['train_seconds']:.1f} s training)")
    print(f"open it: {outcome.ui_command}  (experiment {outcome.experiment_id})")
    entry.exit_now(0)


if __name__ == "__main__":
    main()
