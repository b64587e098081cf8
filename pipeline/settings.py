"""The checked settings of a sweep, in one picklable value that worker processes can take."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import DataConfig, ObjectiveConfig, TrackingConfig, TrainConfig
from pipeline.problems import Problem
from pipeline.search import SearchSpace
from pipeline.study import StudyConfig


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
