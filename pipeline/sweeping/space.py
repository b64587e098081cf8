"""The search space declared in `conf/search/`, and the one function that samples it.

`suggest` is the only place that calls `trial.suggest_*`: per-layer units are conditional on
`n_layers` (units_l0 .. units_l{n-1}), the learning rate is sampled on a log scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from pipeline.core.layout import Layout
from pipeline.names import BASELINE_ATTR
from pipeline.settings import ACTIVATIONS, OPTIMIZERS, ConfigError, read_float, read_int


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    """Bounds and choices every trial samples from."""

    n_layers: IntRange
    units: IntRange
    activation: tuple[str, ...]
    optimizer: tuple[str, ...]
    learning_rate: FloatRange
    # The residual objective's weight of the conditions (log range); other objectives have none.
    condition_weight: FloatRange | None = None


@dataclass(frozen=True)
class Hyperparams:
    """One sampled network and optimizer (and the residual objective's condition weight)."""

    hidden: tuple[int, ...]
    activation: str
    optimizer: str
    learning_rate: float
    condition_weight: float | None = None


# The blog post's network and optimizer, as a trial of this space: every study's first trial.
BASELINE = Hyperparams(hidden=(10, 10), activation="sigmoid", optimizer="sgd", learning_rate=0.1)


def as_params(hp: Hyperparams) -> dict[str, Any]:
    """The Optuna params that `suggest` would produce for `hp` (for enqueueing)."""
    params: dict[str, Any] = {"n_layers": len(hp.hidden)}
    params |= {f"units_l{i}": units for i, units in enumerate(hp.hidden)}
    return params | {
        "activation": hp.activation,
        "optimizer": hp.optimizer,
        "learning_rate": hp.learning_rate,
    }


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's network and optimizer as Optuna params: its own, or the post's for a baseline
    trained outside the space (which samples none, so that the sampler never sees them)."""
    if not trial.params and trial.user_attrs.get(BASELINE_ATTR):
        return as_params(BASELINE)
    return trial.params


def suggest(trial: Any, space: SearchSpace, weighted: bool = False) -> Hyperparams:
    """Sample one configuration: the only caller of `trial.suggest_*`. `weighted` (the residual
    objective) samples the conditions' weight too, where the space has a range for it."""
    n_layers = trial.suggest_int("n_layers", space.n_layers.low, space.n_layers.high)
    hidden = tuple(
        trial.suggest_int(f"units_l{i}", space.units.low, space.units.high, log=space.units.log)
        for i in range(n_layers)
    )
    return Hyperparams(
        hidden=hidden,
        activation=trial.suggest_categorical("activation", list(space.activation)),
        optimizer=trial.suggest_categorical("optimizer", list(space.optimizer)),
        learning_rate=trial.suggest_float(
            "learning_rate",
            space.learning_rate.low,
            space.learning_rate.high,
            log=space.learning_rate.log,
        ),
        condition_weight=_weight(trial, space) if weighted else None,
    )


def _weight(trial: Any, space: SearchSpace) -> float | None:
    r = space.condition_weight
    return None if r is None else trial.suggest_float("condition_weight", r.low, r.high, log=r.log)


def contains(space: SearchSpace, hp: Hyperparams) -> bool:
    """Whether `hp` lies inside `space` (the baseline is enqueued only where it does)."""
    lr = space.learning_rate
    return (
        space.n_layers.low <= len(hp.hidden) <= space.n_layers.high
        and all(space.units.low <= u <= space.units.high for u in hp.hidden)
        and hp.activation in space.activation
        and hp.optimizer in space.optimizer
        and lr.low <= hp.learning_rate <= lr.high
    )


def layouts(space: SearchSpace) -> tuple[Layout, ...]:
    """The compiled graphs a study's trials share, smallest first: every network of the space
    fits the last. Two depths (shallow networks skip the deep graph's extra layers, about a
    third of a deep network's cost each), every width padded to the widest, every activation."""
    deep = Layout(space.n_layers.high, space.units.high, space.activation, space.optimizer)
    if space.n_layers.high - space.n_layers.low < 2:
        return (deep,)
    depth = (space.n_layers.low + space.n_layers.high) // 2
    shallow = Layout(depth, deep.width, deep.activations, deep.optimizers)
    return (shallow, deep)


def layout_for(space: SearchSpace, hp: Hyperparams) -> Layout:
    """The first of the space's layouts that holds `hp` (or `hp`'s own, outside the space)."""
    for layout in layouts(space):
        if layout.holds(hp.hidden, hp.activation, hp.optimizer):
            return layout
    return Layout.exact(hp.hidden, hp.activation, hp.optimizer)


def _range(section: Mapping[str, Any], key: str, integer: bool) -> IntRange | FloatRange:
    bounds = section.get(key)
    prefix = f"search.{key}"
    if not isinstance(bounds, Mapping):
        raise ConfigError(prefix, bounds, "must be a mapping {low: ..., high: ..., log: ...}")
    log = bool(bounds.get("log", False))
    if integer:
        low = read_int(bounds, prefix, "low", minimum=1)
        high = read_int(bounds, prefix, "high", minimum=1)
    else:
        low, high = read_float(bounds, prefix, "low"), read_float(bounds, prefix, "high")
    if log and low <= 0:
        raise ConfigError(f"{prefix}.low", low, "must be > 0 on a log scale")
    if low > high:
        raise ConfigError(f"{prefix}.low", low, f"must be <= {prefix}.high={high}")
    return IntRange(low, high, log) if integer else FloatRange(low, high, log)


def _choices(section: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = section.get(key)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"search.{key}", values, f"must be a non-empty list of {allowed}")
    for value in values:
        if value not in allowed:
            raise ConfigError(f"search.{key}", value, f"must be one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


def read_search(section: Mapping[str, Any]) -> SearchSpace:
    """The checked search space (raises ConfigError naming the bad bound)."""
    return SearchSpace(
        n_layers=_range(section, "n_layers", integer=True),
        units=_range(section, "units", integer=True),
        activation=_choices(section, "activation", ACTIVATIONS),
        optimizer=_choices(section, "optimizer", OPTIMIZERS),
        learning_rate=_range(section, "learning_rate", integer=False),
        condition_weight=(
            _range(section, "condition_weight", integer=False)
            if section.get("condition_weight") is not None
            else None
        ),
    )
