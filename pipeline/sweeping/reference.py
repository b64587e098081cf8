"""The yardstick of a study: the post's network trained the post's way, on the data points.

A study's baseline (trial 0) is the post's network trained on whatever the objective trains on:
for objectives that use f', the collocation points. The reference trains the same network on the
problem's data points (the post's 19 for `log`), as the post did, so the summary's improvement
over it credits the collocation points as well as the search. Needs TensorFlow.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pipeline.core.objectives import get as get_objective
from pipeline.settings import CONSTANT_RATE, ObjectiveConfig
from pipeline.sweeping.handle import SweepSettings

if TYPE_CHECKING:
    from pipeline.sweeping.worker import StudyOutcome

METRIC = "reference_value"  # the study run's metric


def reference_value(settings: SweepSettings, objective: ObjectiveConfig) -> float:
    """The objective's validation error (`objective_value`) of the post's network, optimizer
    and epochs trained on the data points, from the sweep's seed, as trial 0 is trained."""
    from pipeline.core.data import make_dataset
    from pipeline.core.model import seeded_weights
    from pipeline.core.trainer import TrainSpec, train
    from pipeline.sweeping.space import BASELINE, layout_for
    from pipeline.tracking.recording import objective_value

    data_cfg = settings.data
    if get_objective(objective.name).points == "colloc":  # the data points become the grid
        data_cfg = replace(data_cfg, n_colloc=data_cfg.n_train, resample=False)
    data = make_dataset(data_cfg, settings.problem, objective.anchor_x, settings.train.seed)
    spec = TrainSpec(
        activation=BASELINE.activation,
        optimizer=BASELINE.optimizer,
        learning_rate=BASELINE.learning_rate,
        epochs=settings.train.epochs,
        lr_decay=CONSTANT_RATE,  # the post's way
        objective=objective.name,
        anchor_weight=objective.anchor_weight,
        deriv_weight=objective.deriv_weight,
        log_every=settings.train.log_every,
        report_every=settings.study.report_every,
        condition_weight=objective.condition_weight,
    )
    # In trial 0's layout: over 10,000 SGD epochs the float rounding of the padding alone
    # moves the post's derivative fit by tens of percent (1.8e-3 against 1.09e-3 once).
    weights = seeded_weights(BASELINE.hidden, settings.train.seed)
    result = train(spec, weights, data, layout=layout_for(settings.search, BASELINE))
    return objective_value(objective, result)


def references(settings: SweepSettings, outcomes: list[StudyOutcome]) -> dict[str, float]:
    """Per study whose objective trains on collocation points, the post's network trained the
    post's way (on the data points), also logged on the study run as `reference_value`."""
    from pipeline import entry
    from pipeline.tracking import store

    found = {}
    client = None
    for objective, o in zip(settings.objectives, outcomes, strict=True):
        if get_objective(objective.name).points != "colloc":
            continue  # the baseline (trial 0) already is the post's network on the data points
        entry.import_tensorflow_quietly(settings.train.compile_cache)
        found[o.objective] = value = reference_value(settings, objective)
        client = client or store.connect(settings.tracking)[0]
        client.log_metric(o.parent_run_id, METRIC, value)
    return found
