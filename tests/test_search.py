"""The search space: the YAML is read and checked, and `suggest` samples the conditional space."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import FixedTrial

from pipeline.config_values import CONF_DIR
from pipeline.defaults import load
from pipeline.settings import ACTIVATIONS, OPTIMIZERS, ConfigError
from pipeline.sweeping.space import (
    BASELINE,
    FloatRange,
    Hyperparams,
    IntRange,
    SearchSpace,
    as_params,
    contains,
    layout_for,
    layouts,
    read_search,
    suggest,
)


def default_section() -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "search" / "default.yaml"))


def default_space(**changes: Any) -> SearchSpace:
    """The sweep's search space as shipped (conf/search/default.yaml), with `changes`."""
    return replace(load("sweep").search, **changes)


def test_default_yaml_reads_to_the_documented_space() -> None:
    space = read_search(default_section())
    assert space.n_layers == IntRange(1, 4)
    assert space.units == IntRange(4, 64, log=True)
    assert space.activation == ("sigmoid", "tanh", "softplus")
    assert space.optimizer == ("sgd", "adam")
    assert space.learning_rate == FloatRange(1e-4, 1.0, log=True)
    assert contains(space, BASELINE)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_suggest_gives_one_width_per_layer_from_units_l_i(n_layers: int) -> None:
    widths = [5, 17, 33, 64][:n_layers]
    params = {"n_layers": n_layers, "activation": "tanh", "optimizer": "adam"}
    params |= {f"units_l{i}": w for i, w in enumerate(widths)} | {"learning_rate": 3e-3}
    hp = suggest(FixedTrial(params), default_space())
    assert hp == Hyperparams(tuple(widths), "tanh", "adam", 3e-3)
    assert len(hp.hidden) == n_layers


def test_fixed_trial_missing_a_layer_width_fails() -> None:
    params = {"n_layers": 3, "units_l0": 8, "units_l1": 8, "activation": "tanh"}
    params |= {"optimizer": "sgd", "learning_rate": 0.01}
    with pytest.raises(ValueError, match="units_l2"):
        suggest(FixedTrial(params), default_space())


def test_extra_widths_beyond_n_layers_are_not_asked_for() -> None:
    trial = FixedTrial(as_params(BASELINE) | {"units_l2": 50, "units_l3": 60})
    assert suggest(trial, default_space()).hidden == (10, 10)


def test_as_params_round_trips_through_suggest() -> None:
    hp = Hyperparams((7, 9, 11), "softplus", "adam", 2e-3)
    assert suggest(FixedTrial(as_params(hp)), default_space()) == hp
    assert suggest(FixedTrial(as_params(BASELINE)), default_space()) == BASELINE


def test_sampled_trials_stay_inside_the_space_and_are_conditional() -> None:
    space = SearchSpace(
        n_layers=IntRange(1, 3),
        units=IntRange(4, 16, log=True),
        activation=("tanh",),
        optimizer=("sgd", "adam"),
        learning_rate=FloatRange(1e-3, 1e-1, log=True),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        hp = suggest(trial, space)
        study.tell(trial, 0.0)
        assert contains(space, hp)
        units_keys = {k for k in trial.params if k.startswith("units_l")}
        assert units_keys == {f"units_l{i}" for i in range(len(hp.hidden))}
    depths = {t.params["n_layers"] for t in study.trials}
    assert depths == {1, 2, 3}
    distribution = study.trials[0].distributions["learning_rate"]
    assert distribution.log and distribution.low == 1e-3 and distribution.high == 1e-1


def test_contains_rejects_the_baseline_outside_the_space() -> None:
    assert not contains(default_space(activation=("tanh",)), BASELINE)
    assert not contains(default_space(learning_rate=FloatRange(1e-4, 1e-2, log=True)), BASELINE)
    assert not contains(default_space(n_layers=IntRange(3, 4)), BASELINE)
    assert not contains(default_space(units=IntRange(16, 64)), BASELINE)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"n_layers": {"low": 3, "high": 2}}, "search.n_layers.low"),
        ({"units": {"low": 65, "high": 64}}, "search.units.low"),
        ({"learning_rate": {"low": 0.5, "high": 0.1}}, "search.learning_rate.low"),
        ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "search.learning_rate.low"),
        ({"learning_rate": {"low": -1.0, "high": 0.1, "log": True}}, "search.learning_rate.low"),
        ({"n_layers": {"low": 0, "high": 2}}, "search.n_layers.low"),
        ({"units": {"low": 0, "high": 8}}, "search.units.low"),
        ({"units": {"low": 4, "high": 0}}, "search.units.high"),
        ({"n_layers": {"low": 1.5, "high": 2}}, "search.n_layers.low"),
        ({"units": 32}, "search.units"),
        ({"activation": ["tanh", "relu6x"]}, "search.activation"),
        ({"activation": []}, "search.activation"),
        ({"optimizer": ["adam", "lbfgs"]}, "search.optimizer"),
        ({"optimizer": None}, "search.optimizer"),
    ],
)
def test_read_search_rejects_bad_bounds_naming_the_key(change: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_search(default_section() | change)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}=")


def test_read_search_accepts_every_known_choice_and_deduplicates() -> None:
    space = read_search(
        default_section()
        | {"activation": [*ACTIVATIONS, ACTIVATIONS[0]], "optimizer": list(OPTIMIZERS)}
    )
    assert space.activation == tuple(ACTIVATIONS)
    assert space.optimizer == tuple(OPTIMIZERS)
    single = read_search(default_section() | {"activation": "tanh"})
    assert single.activation == ("tanh",)


def test_layouts_compile_only_the_rules_the_space_samples() -> None:
    adam_only = default_space(optimizer=("adam",))
    assert [lay.optimizers for lay in layouts(adam_only)] == [("adam",), ("adam",)]
    assert [lay.optimizers for lay in layouts(default_space())] == [("sgd", "adam")] * 2
    # The post's network trains with SGD (the reference line), so it gets a graph of its own.
    assert layout_for(adam_only, BASELINE).optimizers == ("sgd",)
    assert layout_for(default_space(), BASELINE) == layouts(default_space())[0]
