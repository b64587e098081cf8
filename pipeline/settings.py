"""Typed settings for every concern, built from the Hydra config and checked once at the entry.

Entry points turn their `DictConfig` into these frozen dataclasses; nothing past the entry point
sees OmegaConf. Every check raises `ConfigError`, whose text is the one line users get.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.objectives import OBJECTIVES as REGISTRY

OBJECTIVES = tuple(REGISTRY)
ACTIVATIONS = ("sigmoid", "tanh", "softplus", "relu", "elu", "silu")
OPTIMIZERS = ("sgd", "adam")


class ConfigError(ValueError):
    """A config value users typed is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


@dataclass(frozen=True)
class DataConfig:
    """Domain [x_min, x_max], data and collocation points, a held-out validation grid."""

    x_min: float = 0.1
    x_max: float = 1.9
    n_train: int = 19
    n_val: int = 100
    n_colloc: int = 200
    resample: bool = False


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which loss to minimise (`pipeline.core.objectives`); the anchor pins the derivative
    objective's free constant, `deriv_weight` weighs f' against f in the Sobolev loss."""

    name: str = "value"
    anchor_weight: float = 1.0
    anchor_x: float = 1.0
    deriv_weight: float = 1.0

    def params(self) -> dict[str, float]:
        """The settings this objective's loss uses, as run params: the anchor where it has one,
        the Sobolev weight where it weighs f' against f."""
        entry = REGISTRY[self.name]
        params = {}
        if entry.anchored:
            params |= {"anchor_weight": self.anchor_weight, "anchor_x": self.anchor_x}
        if entry.fits_value and entry.fits_slope:
            params["deriv_weight"] = self.deriv_weight
        return params


@dataclass(frozen=True)
class ModelConfig:
    """Hidden layer widths and their activation; the output is one linear unit."""

    hidden: tuple[int, ...] = (10, 10)
    activation: str = "sigmoid"


@dataclass(frozen=True)
class TrainConfig:
    """Full-batch training: optimizer, learning rate, epochs, seed and history resolution."""

    epochs: int = 10_000
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    seed: int = 0
    log_every: int = 50


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow keeps runs: an embedded SQLite file by default, or a tracking server."""

    uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: str = "pipeline"
    # How long MLflow may not answer before a sweep stops (exit 1, its records kept in the
    # spool); trials go on training meanwhile.
    outage_timeout: float = 300.0


# --- readers: one per value kind, each raising ConfigError naming the full key ---------------


def _get(section: Mapping[str, Any], prefix: str, key: str) -> tuple[str, Any]:
    if key not in section or section[key] is None:
        raise ConfigError(f"{prefix}.{key}", None, "a value is required")
    return f"{prefix}.{key}", section[key]


def read_int(section: Mapping[str, Any], prefix: str, key: str, minimum: int | None = None) -> int:
    """An integer, optionally at least `minimum`."""
    name, value = _get(section, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(name, value, f"must be an integer >= {minimum}")
    return value


def read_float(section: Mapping[str, Any], prefix: str, key: str, positive: bool = False) -> float:
    """A finite number, optionally > 0."""
    name, value = _get(section, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if positive and value <= 0:
        raise ConfigError(name, value, "must be a number > 0")
    return float(value)


def read_choice(section: Mapping[str, Any], prefix: str, key: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed`."""
    name, value = _get(section, prefix, key)
    if value not in allowed:
        raise ConfigError(name, value, f"must be one of {', '.join(allowed)}")
    return str(value)


def read_bool(section: Mapping[str, Any], prefix: str, key: str) -> bool:
    """true or false."""
    name, value = _get(section, prefix, key)
    if not isinstance(value, bool):
        raise ConfigError(name, value, "must be true or false")
    return value


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
        n_colloc=read_int({"n_colloc": 200, **section}, "data", "n_colloc", minimum=2),
        resample=read_bool({"resample": False, **section}, "data", "resample"),
    )


def read_objective(section: Mapping[str, Any], allowed: tuple[str, ...]) -> ObjectiveConfig:
    """The objective's name, anchor and Sobolev weight (the anchor must be finite; where f is
    finite is the problem's check)."""
    name = section.get("name")
    if name not in allowed:
        raise ConfigError("objective", name, f"must be one of {', '.join(allowed)}")
    weight = read_float({"anchor_weight": 1.0, **section}, "objective", "anchor_weight")
    if weight < 0:
        raise ConfigError("objective.anchor_weight", weight, "must be a number >= 0")
    anchor_x = read_float({"anchor_x": 1.0, **section}, "objective", "anchor_x")
    deriv_weight = read_float({"deriv_weight": 1.0, **section}, "objective", "deriv_weight")
    if deriv_weight < 0:
        raise ConfigError("objective.deriv_weight", deriv_weight, "must be a number >= 0")
    return ObjectiveConfig(name, weight, anchor_x, deriv_weight)


def read_model(section: Mapping[str, Any]) -> ModelConfig:
    """A non-empty list of positive layer widths and a known activation."""
    name, hidden = _get(section, "model", "hidden")
    if (
        not isinstance(hidden, list | tuple)
        or not hidden
        or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in hidden)
    ):
        raise ConfigError(name, hidden, "must be a non-empty list of integers >= 1, e.g. [10,10]")
    return ModelConfig(
        hidden=tuple(hidden), activation=read_choice(section, "model", "activation", ACTIVATIONS)
    )


def read_train(section: Mapping[str, Any]) -> TrainConfig:
    """Epochs, optimizer, learning rate, seed and history resolution."""
    return TrainConfig(
        epochs=read_int(section, "train", "epochs", minimum=1),
        optimizer=read_choice(section, "train", "optimizer", OPTIMIZERS),
        learning_rate=read_float(section, "train", "learning_rate", positive=True),
        seed=read_int(section, "train", "seed", minimum=0),
        log_every=read_int(section, "train", "log_every", minimum=1),
    )


def read_tracking(section: Mapping[str, Any]) -> TrackingConfig:
    """An MLflow tracking URI MLflow can use (SQLite, a database, or a tracking server)."""
    name, uri = _get(section, "tracking", "uri")
    schemes = ("sqlite:///", "http://", "https://", "postgresql://", "postgresql+", "mysql")
    if not isinstance(uri, str) or not uri.startswith(schemes):
        raise ConfigError(
            name, uri, "must be sqlite:///path.db, http(s)://host:port or a database URL"
        )
    experiment = _get(section, "tracking", "experiment")[1]
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError("tracking.experiment", experiment, "must be a non-empty name")
    defaults = {"outage_timeout": TrackingConfig.outage_timeout}
    timeout = read_float({**defaults, **section}, "tracking", "outage_timeout", positive=True)
    return TrackingConfig(uri=uri, experiment=experiment, outage_timeout=timeout)


def redact(url: str) -> str:
    """`url` with any password replaced by ***: safe to print, log, or store as a param or tag."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"
