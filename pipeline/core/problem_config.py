"""The `problem` config group read into a problem: a target f (`core.problems`) or an
equation (`core.ode_problems`), whichever the section describes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.config_values import CONF_DIR, ConfigError
from pipeline.core.ode_problems import read_ode
from pipeline.core.problems import Problem, read_target

PROBLEMS_DIR = CONF_DIR / "problem"


def read_problem(section: Mapping[str, Any]) -> Problem:
    """The checked problem of the `problem` config group (raises ConfigError naming the key):
    an equation's where the section has `equation`, else a target's."""
    name = section.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("problem.name", name, "must be a non-empty name")
    if "equation" in section:
        return read_ode(section, name)
    return read_target(section, name)


def shipped(name: str) -> Problem:
    """A problem shipped under conf/problem/ (for code and tests that compose no config)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(PROBLEMS_DIR / f"{name}.yaml"), resolve=True)
    return read_problem(raw["problem"])
