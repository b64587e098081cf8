"""Every config group option composes, and each bad input raises ConfigError naming its key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.config_values import CONF_DIR
from pipeline.settings import (
    CONSTANT_RATE,
    OBJECTIVES,
    ConfigError,
    DataConfig,
    LrDecay,
    ModelConfig,
    ObjectiveConfig,
    TrainConfig,
    read_data,
    read_objective,
    read_tracking,
)
from pipeline.sweep import read_sweep_train
from pipeline.train import read_settings

ComposeFn = Callable[..., DictConfig]
PRIMARY_CONFIGS = ("train", "sweep")


def _groups_of(config_name: str) -> set[str]:
    """The config groups a primary config selects in its defaults list."""
    defaults = OmegaConf.load(CONF_DIR / f"{config_name}.yaml")["defaults"]
    return {
        next(iter(entry)) for entry in defaults if not isinstance(entry, str) and len(entry) == 1
    } - {"override hydra/job_logging"}


def _group_options() -> list[tuple[str, str, str]]:
    """(primary config, group, option) for every YAML file of every group a primary config uses."""
    cases = []
    for config_name in PRIMARY_CONFIGS:
        for group in sorted(_groups_of(config_name)):
            for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
                cases.append((config_name, group, option))
    return cases


def test_every_group_is_used_by_a_primary_config() -> None:
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    used = set().union(*(_groups_of(name) for name in PRIMARY_CONFIGS))
    assert groups == used, f"groups no primary config selects: {groups - used}"


def _package_global(path: Path) -> bool:
    """Whether the YAML file places its keys at the config's root (`# @package _global_`)."""
    return "# @package _global_" in path.read_text().splitlines()[0]


@pytest.mark.parametrize(("config_name", "group", "option"), _group_options())
def test_group_option_composes(
    compose_cfg: ComposeFn, config_name: str, group: str, option: str
) -> None:
    cfg = compose_cfg(config_name, [f"{group}={option}"])
    path = Path(CONF_DIR, group, f"{option}.yaml")
    expected = OmegaConf.to_container(_option(group, option))
    if not _package_global(path):
        # The problem (a global file, after the group in the defaults list) sets its own keys
        # of the group on top, such as the objective's anchor.
        problem = OmegaConf.load(CONF_DIR / "problem" / f"{cfg.problem.name}.yaml")
        on_top = OmegaConf.to_container(problem).get(group, {})
        assert OmegaConf.to_container(cfg[group]) == {**expected, **on_top}
        return
    # A global file (the problems) sets keys of other groups too: each lands where it says.
    for section, values in expected.items():
        assert OmegaConf.to_container(cfg[section]).items() >= values.items()


def _option(group: str, option: str) -> DictConfig:
    """A group option's YAML, on top of the options of its group it lists as defaults."""
    own = OmegaConf.load(Path(CONF_DIR, group, f"{option}.yaml"))
    # Entries such as `override /objective: residual` (an equation's problem) are other groups'.
    bases = [
        _option(group, b) for b in own.pop("defaults", []) if isinstance(b, str) and b != "_self_"
    ]
    return OmegaConf.merge(*bases, own)


@pytest.mark.parametrize("objective", [o for o in OBJECTIVES if o != "residual"])
def test_train_config_reads_into_settings(compose_cfg: ComposeFn, objective: str) -> None:
    settings = read_settings(compose_cfg("train", [f"objective={objective}"]))
    # Each objective's own settings, the anchor x0 = 1 of problem=log; weights of terms its
    # loss does not have are 0.
    weights = {"value": (0.0, 0.0), "derivative": (1.0, 0.0), "sobolev": (0.0, 1.0)}[objective]
    assert settings.objective == ObjectiveConfig(objective, *weights[:1], 1.0, weights[1])
    # The defaults are the blog post's setup.
    assert settings.data == DataConfig(
        0.1, 1.9, n_train=19, n_val=100, n_colloc=200, resample=False
    )
    assert settings.model == ModelConfig(hidden=(10, 10), activation="sigmoid")
    assert settings.train == TrainConfig(
        epochs=10_000,
        optimizer="sgd",
        learning_rate=0.1,
        seed=0,
        log_every=50,
        lr_decay=CONSTANT_RATE,  # the post's constant rate
        compile_cache="mlruns/xla-cache",
    )
    assert settings.tracking.uri == "sqlite:///mlruns/mlflow.db"


def test_train_overrides_reach_settings(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg(
        "train",
        [
            "model.hidden=[32,16,8]",
            "model.activation=tanh",
            "train.optimizer=adam",
            "train.learning_rate=0.003",
            "train.epochs=7",
            "data.n_train=2",
            "objective=derivative",
            "objective.anchor_weight=0",
            "train.lr_decay.fraction=0.25",
        ],
    )
    s = read_settings(cfg)
    assert s.train.lr_decay == LrDecay(fraction=0.25, final=0.01)
    assert s.model == ModelConfig(hidden=(32, 16, 8), activation="tanh")
    assert (s.train.optimizer, s.train.learning_rate, s.train.epochs) == ("adam", 0.003, 7)
    assert s.data.n_train == 2
    assert s.objective.anchor_weight == 0.0


@pytest.mark.parametrize("objective", ["both", *OBJECTIVES])
def test_sweep_config_composes_per_objective(compose_cfg: ComposeFn, objective: str) -> None:
    cfg = compose_cfg("sweep", [f"objective={objective}"])
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert read_objective(raw["objective"], (*OBJECTIVES, "both")).name == objective
    assert read_data(raw["data"]) == read_settings(compose_cfg("train")).data
    # A sweep samples optimizer and learning rate per trial: its `train` leaves both unset.
    assert (raw["train"]["optimizer"], raw["train"]["learning_rate"]) == (None, None)
    train = read_sweep_train(raw["train"])
    assert (train.epochs, train.optimizer, train.learning_rate) == (10_000, None, None)
    read_tracking(raw["tracking"])
    assert {"search", "study"} <= set(raw)


def test_sweep_objective_both_is_default(compose_cfg: ComposeFn) -> None:
    assert compose_cfg("sweep").objective.name == "both"


# (override, key the error must name): bad input users type, through the user's path.
BAD_INPUTS = [
    ("objective.name=foo", "objective"),
    ("objective=both", "objective"),  # a sweep-only option: `pipeline.train` runs one objective
    ("model.activation=swish2", "model.activation"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("data.x_min=0", "data.x_min"),  # log x and 1/x are not finite there: the problem's check
    ("data.x_min=-0.5", "data.x_min"),
    ("data.x_max=0.1", "data.x_max"),  # x_min == x_max
    ("data.x_max=0.05", "data.x_max"),  # x_min > x_max
    ("data.n_train=1", "data.n_train"),
    ("data.n_train=0", "data.n_train"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-10", "train.epochs"),
    ("model.hidden=[]", "model.hidden"),
    ("model.hidden=[10,0]", "model.hidden"),
    ("model.hidden=[-3]", "model.hidden"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=-0.1", "train.learning_rate"),
    ("data.n_colloc=1", "data.n_colloc"),
    ("data.n_colloc=201", "data.n_colloc"),  # its grid is the validation grid's cell midpoints
    ("data.resample=maybe", "data.resample"),
    ("problem.f=x**2", "problem.f"),  # problem=log's hand-written f' is not this f's
    ("train.compile_cache=/dev/null", "train.compile_cache"),  # a file, not a directory
    ("train.lr_decay.fraction=1.5", "train.lr_decay.fraction"),
    ("train.lr_decay.final=-0.5", "train.lr_decay.final"),
    ("train.lr_decay.final=abc", "train.lr_decay.final"),
]


@pytest.mark.parametrize(("override", "key"), BAD_INPUTS)
def test_bad_input_names_its_key(compose_cfg: ComposeFn, override: str, key: str) -> None:
    cfg = compose_cfg("train", [override])
    with pytest.raises(ConfigError) as caught:
        read_settings(cfg)
    assert caught.value.key == key
    message = str(caught.value).replace(" ", "")
    assert message.startswith(f"{key}=")
    typed = override.split("=", 1)[1]
    assert typed in message  # the value the user typed, whitespace aside


@pytest.mark.parametrize(
    "override",
    [
        "data.x_min=0.001",
        "data.n_train=2",
        "train.epochs=1",
        "model.hidden=[1]",
        "train.learning_rate=1e-9",
        "objective=derivative",
        "train.compile_cache=null",
        "train.lr_decay.fraction=1",
        "train.lr_decay.final=0",
    ],
)
def test_edge_of_allowed_input_is_accepted(compose_cfg: ComposeFn, override: str) -> None:
    read_settings(compose_cfg("train", [override]))


def test_read_objective_needs_only_the_weights_its_loss_uses() -> None:
    value = read_objective({"name": "value", "anchor_x": 1}, OBJECTIVES)
    assert value == ObjectiveConfig("value", anchor_weight=0.0, anchor_x=1.0, deriv_weight=0.0)
    free = read_objective({"name": "derivative", "anchor_weight": 0, "anchor_x": 0.5}, OBJECTIVES)
    assert (free.anchor_weight, free.anchor_x, free.deriv_weight) == (0.0, 0.5, 0.0)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"name": "derivative", "anchor_x": 1.0}, "objective.anchor_weight"),
        ({"name": "sobolev", "anchor_x": 1.0}, "objective.deriv_weight"),
        ({"name": "value"}, "objective.anchor_x"),
    ],
)
def test_read_objective_refuses_a_missing_setting(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_objective(section, OBJECTIVES)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"name": "derivative", "anchor_weight": -1.0}, "objective.anchor_weight"),
        ({"name": "sobolev", "deriv_weight": -0.5}, "objective.deriv_weight"),
        ({"name": "derivative", "anchor_weight": 1, "anchor_x": "one"}, "objective.anchor_x"),
        ({"name": None}, "objective"),
    ],
)
def test_bad_anchor_names_its_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_objective(section, OBJECTIVES)
    assert caught.value.key == key


# Where the anchor may lie is the problem's question: x0 = 0 is log's pole but
# the natural anchor of sin 3x, exp x and Runge's function.
@pytest.mark.parametrize("anchor", ["0", "-2.0"])
def test_an_anchor_where_log_is_not_finite_names_its_key(compose_cfg: ComposeFn, anchor: str):
    cfg = compose_cfg("train", ["objective=derivative", f"objective.anchor_x={anchor}"])
    with pytest.raises(ConfigError) as caught:
        read_settings(cfg)
    assert caught.value.key == "objective.anchor_x"
    assert "problem=log" in str(caught.value)


@pytest.mark.parametrize("problem", ["sin", "exp", "runge"])
def test_other_problems_anchor_at_zero(compose_cfg: ComposeFn, problem: str) -> None:
    settings = read_settings(compose_cfg("train", ["objective=derivative", f"problem={problem}"]))
    assert settings.objective.anchor_x == 0.0
    assert settings.problem.name == problem
