"""The checked settings of a sweep, in one picklable value that worker processes can take."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.problems import Problem
from pipeline.settings import DataConfig, ObjectiveConfig, TrackingConfig, TrainConfig
from pipeline.sweeping.space import SearchSpace
from pipeline.sweeping.study import StudyConfig


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep needs, checked; picklable so worker processes can take it."""

    objectives: tuple[ObjectiveConfig, ...]
    problem: Problem
    data: DataConfig
    train: TrainConfig
    search: SearchSpace
    study: StudyConfig
    tracking: TrackingConfig
