"""An entry point's typed settings without its command line, for benchmarks, tests, notebooks.

`compose` builds the config `python -m pipeline.<name> <overrides>` would see (Hydra, from
`CONF_DIR`); `load` reads it with that entry point's own reader, so the checks and errors are the
entry point's. This module sits above the entry points: nothing in the package imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.config_values import CONF_DIR

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from pipeline.sweeping.handle import SweepSettings
    from pipeline.train import RunSettings


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m pipeline.<config_name> <overrides>` sees, composed by Hydra from
    `CONF_DIR` (not usable inside a running Hydra app, which has composed its own)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name=config_name):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


@functools.cache
def _load(config_name: str, overrides: tuple[str, ...]) -> RunSettings | SweepSettings:
    if config_name == "train":
        from pipeline.train import read_settings
    elif config_name == "sweep":
        from pipeline.sweep import read_settings
    else:
        raise ValueError(f"no entry point reads {config_name!r}: train or sweep")
    return read_settings(compose(config_name, overrides))


def load(config_name: str, overrides: Sequence[str] = ()) -> RunSettings | SweepSettings:
    """Typed, checked settings of `python -m pipeline.<config_name> <overrides>` ("train" gives
    `RunSettings`, "sweep" `SweepSettings`): the shipped defaults for code and tests that have
    no command line, e.g. `load("train").data`. Raises ConfigError like the entry point."""
    return _load(config_name, tuple(overrides))
