"""A study's definition: every setting that decides what its trials are, stored with the study
when it is created and compared whenever a command opens it again.

Optuna lets any command add trials to a study, whatever they were trained with. Trials of other
epochs, another search space or another problem in one study compare nothing (and TPE fails
every trial once a categorical's choices change), so a command whose definition differs stops
before anything runs, with one line per differing key and the way out: a new `study.name`.
The trial budget, the sampler and the pruner say how a study is run, not what its trials are:
they may change on a resume (Optuna allows it), and the sweep says so once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.names import DEFINITION_ATTR, RUN_OPTIONS_ATTR
from pipeline.settings import ConfigError, ObjectiveConfig

if TYPE_CHECKING:
    import optuna

    from pipeline.sweeping.handle import SweepSettings
    from pipeline.sweeping.study import StudyConfig

# Settings that change how results are shown or kept, not what a trial is.
NOT_DEFINING = frozenset(
    {
        "train.log_every",
        "train.compile_cache",
        "train.optimizer",  # a sweep samples these two (search.*); always null in its train
        "train.learning_rate",
        "problem.label",
        "problem.f_text",
        "problem.df_text",
    }
)
# Settings under the key users type where the typed field is named otherwise.
KEYS = {
    "objective.name": "objective",
    "problem.expression": "problem.f",  # an equation's: its exact solution
    "problem.derivative": "problem.df",
}


class StudyChanged(ConfigError):
    """The command's definition of an existing study differs from the stored one: one line per
    differing key, `key=<new>: study <name> was made with <stored>; ...`."""

    def __init__(self, name: str, changes: list[tuple[str, Any, Any]]) -> None:
        key, _, new = changes[0]
        super().__init__(key, shown(new), "")
        lines = [
            f"{k}={shown(n)}: study {name} was made with {k}={shown(s)}; "
            "a study keeps its definition: keep that value, or name a new study.name"
            for k, s, n in changes
        ]
        self.args = ("\nerror: ".join(lines),)

    def __str__(self) -> str:
        return str(self.args[0])


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= _flat(f"{prefix}.{key}", item)
        return flat
    return {prefix: json.loads(json.dumps(value))}  # as the storage gives it back: tuples as lists


def definition(settings: SweepSettings, objective: ObjectiveConfig) -> dict[str, Any]:
    """The study's definition from the typed settings: `key: value` under the keys users type,
    generic over every field (a new setting is part of it unless listed in NOT_DEFINING)."""
    parts = {
        "problem": settings.problem,
        "objective": {"name": objective.name, **objective.params()},  # the weights its loss uses
        "data": settings.data,
        "train": settings.train,
        "search": settings.search,
        "study.report_every": settings.study.report_every,  # where the pruner sees a trial
    }
    flat: dict[str, Any] = {}
    for key, part in parts.items():
        flat |= _flat(key, part)
    if objective.name != "residual":  # only its trials sample a condition weight
        flat = {k: v for k, v in flat.items() if not k.startswith("search.condition_weight")}
    if settings.problem.equation is None:  # fields a target's problem leaves empty
        flat = {
            k: v for k, v in flat.items() if k not in ("problem.equation", "problem.conditions")
        }
    return {KEYS.get(k, k): v for k, v in flat.items() if k not in NOT_DEFINING}


def run_options(cfg: StudyConfig) -> dict[str, Any]:
    """How the study is run, which may change on a resume: budget, sampler, pruner."""
    options = {
        "study.n_trials": cfg.n_trials,
        "study.sampler.name": cfg.sampler,
        "study.sampler.options": cfg.sampler_options,
        "study.seed": cfg.seed,
        "study.pruner.name": cfg.pruner,
        "study.pruner.options": cfg.pruner_options,
    }
    return json.loads(json.dumps(options))


def shown(value: Any) -> str:
    """`value` as it is typed on the command line: [tanh,softplus], null, true, 0.001."""
    if isinstance(value, list):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{shown(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _changes(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = [*new, *(k for k in stored if k not in new)]
    return [(k, stored.get(k), new.get(k)) for k in keys if stored.get(k) != new.get(k)]


def check(
    name: str, attrs: Mapping[str, Any], settings: SweepSettings, objective: ObjectiveConfig
) -> str | None:
    """StudyChanged unless the stored definition (study user attrs `attrs`) is this command's;
    else the note to print once where the budget, sampler or pruner changed (None if not).
    A study made before definitions were stored has none to compare and takes this one."""
    stored = attrs.get(DEFINITION_ATTR)
    if stored is not None:
        changes = _changes(stored, definition(settings, objective))
        if changes:
            raise StudyChanged(name, changes)
    before = attrs.get(RUN_OPTIONS_ATTR)
    changed = _changes(before, run_options(settings.study)) if before is not None else []
    if not changed:
        return None
    what = ", ".join(f"{k}={shown(n)} (was {shown(s)})" for k, s, n in changed)
    return (
        f"note: study {name} resumes with {what}; budget, sampler and pruner may change on a resume"
    )


def record(study: optuna.Study, settings: SweepSettings, objective: ObjectiveConfig) -> None:
    """Store the definition with a study that has none yet (refusing a differing one, should
    another command have stored it since the check), and the run options as run now."""
    attrs = study.user_attrs
    new = definition(settings, objective)
    if DEFINITION_ATTR not in attrs:
        study.set_user_attr(DEFINITION_ATTR, new)
    elif changes := _changes(attrs[DEFINITION_ATTR], new):
        raise StudyChanged(study.study_name, changes)
    options = run_options(settings.study)
    if attrs.get(RUN_OPTIONS_ATTR) != options:
        study.set_user_attr(RUN_OPTIONS_ATTR, options)
