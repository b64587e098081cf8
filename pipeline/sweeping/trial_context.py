"""What every trial of one study shares (`TrialContext`), and the record a trial of it becomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.data import Dataset
from pipeline.settings import ObjectiveConfig, TrainConfig
from pipeline.sweeping import telling
from pipeline.sweeping.space import SearchSpace
from pipeline.tracking.recorder import BackgroundRecorder
from pipeline.tracking.spool import TrialRecord, trial_record

if TYPE_CHECKING:
    from pipeline.sweeping.handle import StudyHandle


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one study shares."""

    handle: StudyHandle
    objective: ObjectiveConfig
    train: TrainConfig
    space: SearchSpace
    data: Dataset
    report_every: int
    recorder: BackgroundRecorder
    population: int = 1
    n_jobs: int = 1  # threads training this worker's populations (each its own per layout)
    heartbeat_interval: float | None = None  # RDB storages with heartbeats
    share: int | None = None  # most trials in flight at once: this worker's share of the study
    pruner_view: telling.PrunerView | None = None  # what the pruner reads; None: the study itself


def record_of(ctx: TrialContext, number: int, state: str, **details: Any) -> TrialRecord:
    """`trial_record` for trial `number` of this context's study (see its keyword arguments)."""
    return trial_record(
        experiment_id=ctx.handle.experiment_id,
        parent_run_id=ctx.handle.parent_run_id,
        study_name=ctx.handle.name,
        number=number,
        objective=ctx.objective.name,
        state=state,
        deriv_weight=ctx.objective.deriv_weight,
        condition_weight=ctx.objective.condition_weight,
        **details,
    )
