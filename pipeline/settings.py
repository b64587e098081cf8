"""Typed settings for every concern, built from the Hydra config and checked once at the entry.

Entry points turn their `DictConfig` into these frozen dataclasses; nothing past the entry point
sees OmegaConf. Every check raises `ConfigError`, whose text is the one line users get.

The values live in one place, the YAML under `CONF_DIR` (`conf/` of the checkout, shipped in the
wheel as `pipeline/conf`): the dataclasses give types and checks, not defaults. Code that needs
settings without a command line (benchmarks, tests, notebooks) takes them from
`pipeline.defaults.load`, which composes the config as `python -m pipeline.<name>` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config_values import (  # re-exported: the readers' one import for every layer
    ConfigError,
    read_bool,
    read_choice,
    read_float,
    read_int,
    required,
)
from pipeline.core.data import DataConfig  # re-exported: core owns the types it takes
from pipeline.core.objectives import OBJECTIVES as REGISTRY
from pipeline.core.specs import CONSTANT_RATE, LrDecay

OBJECTIVES = tuple(REGISTRY)
ACTIVATIONS = ("sigmoid", "tanh", "softplus", "relu", "elu", "silu")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which loss to minimise (`pipeline.core.objectives`); the anchor pins the derivative
    objective's free constant, `deriv_weight` weighs f' against f in the Sobolev loss.

    A weight is 0 where the objective's loss has no such term (the value fit has neither);
    `anchor_x` is where the dataset's anchor (x0, f(x0)) sits, set by the problem. A config
    rebuilt only to score a finished result (the recorder's) gives the name and `deriv_weight`
    alone, so the anchor has a not-given value rather than a copy of the YAML's.
    """

    name: str
    anchor_weight: float = 0.0
    anchor_x: float | None = None
    deriv_weight: float = 0.0
    # The residual objective's weight of the squared condition errors: in the loss of the
    # baseline (a sweep's other trials sample their own, search.condition_weight) and in what
    # its studies minimise.
    condition_weight: float = 0.0

    def params(self) -> dict[str, float]:
        """The settings this objective's loss uses, as run params: the anchor where it has one,
        the Sobolev weight where it weighs f' against f, the residual's condition weight."""
        entry = REGISTRY[self.name]
        if entry.residual:
            return {"condition_weight": self.condition_weight}
        params = {}
        if entry.anchored:
            params |= {"anchor_weight": self.anchor_weight, "anchor_x": self.anchor_x}
        if entry.fits_value and entry.fits_slope:
            params["deriv_weight"] = self.deriv_weight
        return params


@dataclass(frozen=True)
class ModelConfig:
    """Hidden layer widths and their activation; the output is one linear unit."""

    hidden: tuple[int, ...]
    activation: str


@dataclass(frozen=True)
class TrainConfig:
    """Full-batch training: optimizer, learning rate, epochs, seed and history resolution.
    In a sweep the optimizer and learning rate are None: every trial samples its own."""

    epochs: int
    optimizer: str | None
    learning_rate: float | None
    seed: int
    log_every: int
    # The learning-rate schedule (a sweep's baseline and reference keep the post's constant rate).
    lr_decay: LrDecay
    # XLA's persistent compilation cache (a directory; None: off): a later process loads the
    # graphs an earlier one compiled (`pipeline.core.compile_cache`).
    compile_cache: str | None


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow keeps runs: an embedded SQLite file, or a tracking server."""

    uri: str
    experiment: str
    # How long MLflow may not answer before a sweep stops (exit 1, its records kept in the
    # spool); trials go on training meanwhile.
    outage_timeout: float


def read_data(section: Mapping[str, Any]) -> DataConfig:
    """Domain and sample counts. Where f and f' are defined is the problem's own check
    (`pipeline.core.problems`), so any finite domain is read here."""
    x_min = read_float(section, "data", "x_min")
    x_max = read_float(section, "data", "x_max")
    if x_max <= x_min:
        raise ConfigError("data.x_max", x_max, f"must be > data.x_min={x_min}")
    return DataConfig(
        x_min=x_min,
        x_max=x_max,
        n_train=read_int(section, "data", "n_train", minimum=2),
        n_val=read_int(section, "data", "n_val", minimum=2),
        n_colloc=read_int(section, "data", "n_colloc", minimum=2),
        resample=read_bool(section, "data", "resample"),
    )


def read_objective(section: Mapping[str, Any], allowed: tuple[str, ...]) -> ObjectiveConfig:
    """The objective's name, anchor and Sobolev weight (the anchor must be finite; where f is
    finite is the problem's check). A weight the objective's loss uses is required; one it has
    no term for is read where given and 0 where not."""
    name = section.get("name")
    if name not in allowed:
        raise ConfigError("objective", name, f"must be one of {', '.join(allowed)}")
    # `both` runs value and derivative: the anchor of the derivative objective applies.
    entry = REGISTRY["derivative" if name == "both" else name]
    uses = {
        "anchor_weight": entry.anchored,
        "deriv_weight": entry.fits_value and entry.fits_slope,
        "condition_weight": entry.residual,
    }
    weights = {}
    for key, used in uses.items():
        weights[key] = read_float(section, "objective", key) if used or key in section else 0.0
        if weights[key] < 0:
            raise ConfigError(f"objective.{key}", weights[key], "must be a number >= 0")
    # An equation's conditions pin its solution: the residual objective has no anchor.
    anchor_x = None if entry.residual else read_float(section, "objective", "anchor_x")
    return ObjectiveConfig(name=name, anchor_x=anchor_x, **weights)


def read_model(section: Mapping[str, Any]) -> ModelConfig:
    """A non-empty list of positive layer widths and a known activation."""
    name, hidden = required(section, "model", "hidden")
    if (
        not isinstance(hidden, list | tuple)
        or not hidden
        or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in hidden)
    ):
        raise ConfigError(name, hidden, "must be a non-empty list of integers >= 1, e.g. [10,10]")
    return ModelConfig(
        hidden=tuple(hidden), activation=read_choice(section, "model", "activation", ACTIVATIONS)
    )


def read_train(section: Mapping[str, Any], sampled: bool = False) -> TrainConfig:
    """Epochs, optimizer, learning rate, seed and history resolution. `sampled` (a sweep, whose
    trials sample their own optimizer and learning rate) leaves those two None, unread."""
    epochs = read_int(section, "train", "epochs", minimum=1)
    optimizer = learning_rate = None
    if not sampled:
        optimizer = read_choice(section, "train", "optimizer", OPTIMIZERS)
        learning_rate = read_float(section, "train", "learning_rate", positive=True)
    return TrainConfig(
        epochs=epochs,
        optimizer=optimizer,
        learning_rate=learning_rate,
        seed=read_int(section, "train", "seed", minimum=0),
        log_every=read_int(section, "train", "log_every", minimum=1),
        lr_decay=_read_lr_decay(section),
        compile_cache=_read_compile_cache(section),
    )


def _read_lr_decay(section: Mapping[str, Any]) -> LrDecay:
    """`train.lr_decay`: {fraction, final}, both in [0, 1]."""
    decay = section.get("lr_decay")
    if not isinstance(decay, Mapping):
        raise ConfigError("train.lr_decay", decay, "must be a mapping {fraction: ..., final: ...}")
    found = {key: read_float(decay, "train.lr_decay", key) for key in ("fraction", "final")}
    meanings = {"fraction": "of the epochs that decay", "final": "x the rate at the last epoch"}
    for key, meaning in meanings.items():
        if not 0.0 <= found[key] <= 1.0:
            raise ConfigError(f"train.lr_decay.{key}", found[key], f"must be in [0, 1] ({meaning})")
    return CONSTANT_RATE if found["fraction"] == 0.0 else LrDecay(**found)


def _read_compile_cache(section: Mapping[str, Any]) -> str | None:
    """`train.compile_cache`: a directory, or null to compile in every process."""
    value = section.get("compile_cache")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("train.compile_cache", value, "must be a directory path, or null (off)")
    if Path(value).exists() and not Path(value).is_dir():
        raise ConfigError("train.compile_cache", value, "is a file; give a directory, or null")
    return value


def read_tracking(section: Mapping[str, Any]) -> TrackingConfig:
    """An MLflow tracking URI MLflow can use (SQLite, a database, or a tracking server)."""
    name, uri = required(section, "tracking", "uri")
    schemes = ("sqlite:///", "http://", "https://", "postgresql://", "postgresql+", "mysql")
    if not isinstance(uri, str) or not uri.startswith(schemes):
        raise ConfigError(
            name, uri, "must be sqlite:///path.db, http(s)://host:port or a database URL"
        )
    experiment = required(section, "tracking", "experiment")[1]
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError("tracking.experiment", experiment, "must be a non-empty name")
    timeout = read_float(section, "tracking", "outage_timeout", positive=True)
    return TrackingConfig(uri=uri, experiment=experiment, outage_timeout=timeout)


def redact(url: str) -> str:
    """`url` with any password replaced by ***: safe to print, log, or store as a param or tag."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"
