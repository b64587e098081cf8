"""Names other systems see: MLflow tags, params and metrics, Optuna attributes, default stores.

A user's MLflow search, a notebook's `study.user_attrs[...]` and this project's own repair all
read these strings; changing one is a change of the stored format, so each is written once here.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.config_values import CONF_DIR

# Where results go unless the user says otherwise: read from the shipped config, the one source.
_TRACKING = OmegaConf.load(CONF_DIR / "tracking" / "default.yaml")
DEFAULT_STORE: str = _TRACKING.uri  # MLflow's tracking store
DEFAULT_EXPERIMENT: str = _TRACKING.experiment
DEFAULT_STORAGE: str = OmegaConf.load(CONF_DIR / "study" / "default.yaml").storage  # Optuna's

# MLflow run tags.
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its study's run
ROLE_TAG = "pipeline.role"  # "study", "trial" or "run" (a `pipeline.train` run)
OBJECTIVE_TAG = "pipeline.objective"  # the objective a run or trial minimised
MODEL_TAG = "pipeline.model"  # "logged" once the best trial's Keras model is in its run
STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.state"  # the trial's Optuna state, as its run records it
BEST_TRIAL_TAG, BEST_RUN_TAG = "best_trial_number", "best_run_id"  # on the study run
BEST_ALIAS = "best"  # models:/<study name>@best is the study's best model

# Optuna attributes.
REASON = "failure_reason"  # a failed or pruned trial's reason: user attr and run tag
WORKER_ATTR = "worker"  # "<host>:<pid>" of the process that trained the trial
PARENT_ATTR = "mlflow_parent_run_id"  # the study's MLflow run, a study user attr
BASELINE_ATTR = "baseline"  # a trial user attr: True on the baseline trial (the post's network)
OBJECTIVE_ATTR = "pipeline.objective"  # the objective a study minimises, a study user attr
DEFINITION_ATTR = "definition"  # what its trials are (`sweeping.definition`), a study user attr
RUN_OPTIONS_ATTR = "run_options"  # its trial budget, sampler and pruner, as last run
RUN_ATTR = "mlflow_run_id"  # a trial's MLflow run, a trial user attr
# An empty study whose creation claims closing a study's books (`sweeping.array`): the workers
# of one launch create it once per study state, so exactly one of them closes the study run.
CLOSED_MARKER = "{study}~closed~{launch}~{finished}"

# Run params that describe a network, the same for every run so MLflow's charts line them up.
N_LAYERS = "n_layers"
UNITS_PREFIX = "units_l"  # units_l0 .. units_l{n-1}
LOG10_LEARNING_RATE = "log10_learning_rate"
UNIFORM_PARAMS = (
    N_LAYERS,
    "hidden",
    "n_params",
    "activation",
    "optimizer",
    "learning_rate",
    LOG10_LEARNING_RATE,
    "lr_decay_fraction",
    "lr_decay_final",
    "epochs",
    "seed",
    "objective",
    "problem",
)


def units_param(layer: int) -> str:
    """The param naming layer `layer`'s width."""
    return f"{UNITS_PREFIX}{layer}"


# Metrics every run logs, and their base-10 logs (MLflow's charts have linear axes only).
VAL_VALUE, VAL_DERIV, OBJECTIVE_VALUE = "val_value_mse", "val_deriv_mse", "objective_value"
ERRORS = (VAL_VALUE, VAL_DERIV, OBJECTIVE_VALUE)


def log10_metric(name: str) -> str:
    """The metric holding log10 of `name`."""
    return f"log10_{name}"
