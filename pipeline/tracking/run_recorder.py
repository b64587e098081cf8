"""The MLflow side of `pipeline.train`, in a second process started as the run begins.

MLflow's import, the store's connection and the plots' shared axes take 2-3 s of one core; done in
a spawned process while this one imports TensorFlow and trains, they leave only the recording
itself after training. Nothing is written before `record` (an interrupted run leaves no run) but
the experiment, as before. Imports no MLflow here: the process that trains never needs it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.data import Dataset
from pipeline.core.results import TrainResult
from pipeline.settings import ObjectiveConfig, TrackingConfig
from pipeline.tracking.child import bind_to_parent


@dataclass(frozen=True)
class TrainedRun:
    """What one trained run's MLflow run is made of: FINISHED, or FAILED with `failure`."""

    name: str
    label: str  # the plots' title
    tags: Mapping[str, str]
    params: Mapping[str, Any]
    result: TrainResult
    data: Dataset
    objective: ObjectiveConfig
    failure: str | None = None


@dataclass(frozen=True)
class Recorded:
    """Where the run went and what it scored."""

    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    ui_command: str  # how to look at it (`store.ui_command`)


class RunRecorder:
    """Connects to the tracking store and warms the plots at once, records the trained run on
    `record`. `background=False` does the same in this process (code that trains many runs in
    one process, e.g. tests, would otherwise start a process per run)."""

    def __init__(
        self, tracking: TrackingConfig, data: Dataset, epochs: int, background: bool = True
    ) -> None:
        self._executor: Executor = (
            ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=bind_to_parent,
                initargs=(os.getpid(),),
            )
            if background
            else _Here()
        )
        self._connected = self._executor.submit(_connect, tracking, data, epochs)

    def record(self, run: TrainedRun) -> Recorded:
        """One run: its params, its result's history, final metrics and plots, weights;
        FINISHED, or FAILED with its failure as the reason. Errors of either step (connecting,
        recording) are raised here."""
        self._connected.result()
        return self._executor.submit(_record, run).result()

    def close(self) -> None:
        """End the process (at once: its last recording is committed). Waited for: an exit
        that left it running would wait for it forever (multiprocessing joins its children)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """Kill the process now (the run was interrupted or failed): it may be waiting on a
        store that does not answer, and nothing of the run is written before `record`."""
        if isinstance(self._executor, ProcessPoolExecutor):
            from pipeline.tracking.recorder import pool_processes

            processes = pool_processes(self._executor)  # shutdown forgets them
            self._executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()


class _Here(Executor):
    """An executor that runs each call at once, in this process."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


_STORE: dict[str, Any] = {}  # this process's client and experiment id (set by `_connect`)


def _connect(tracking: TrackingConfig, data: Dataset, epochs: int) -> None:
    from pipeline.tracking import store
    from pipeline.tracking.plots import save_run_plots
    from pipeline.tracking.recording import truth

    client, experiment_id = store.connect(tracking)
    _STORE.update(client=client, experiment_id=experiment_id, uri=tracking.uri)
    with store.scratch_dir() as scratch:  # the plots' shared axes for this data and length
        steps = np.array([1, epochs])
        save_run_plots(Path(scratch), truth(data), data.y_val, data.dy_val, steps, np.ones(2),
                       "", epochs, curves=data.problem.equation is None)  # fmt: skip


def _record(run: TrainedRun) -> Recorded:
    from pipeline.names import REASON
    from pipeline.tracking import store
    from pipeline.tracking.recording import record_training

    client, experiment_id = _STORE["client"], _STORE["experiment_id"]
    run_id = store.start_run(client, experiment_id, name=run.name, tags=dict(run.tags))
    metrics = record_training(client, run_id, run.result, run.data, dict(run.params),
                              run.objective, label=run.label)  # fmt: skip
    if run.failure is None:
        store.end_run(client, run_id, "FINISHED")
    else:
        store.end_run(client, run_id, "FAILED", tags={REASON: run.failure})
    return Recorded(run_id, experiment_id, metrics, store.ui_command(_STORE["uri"]))
