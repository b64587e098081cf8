"""The study run of a scheduled array ends FINISHED whatever the order of a late worker's
reopening and the closer's finalising (`sweeping.array.close_or_leave`).

A worker opening a study reads its finished count and, the study still short, sets its run
RUNNING; the worker that finishes the last trial claims the study and finalises the run. These
tests call the two workers' steps in the racing orders, on one journal file through two
storages (two processes' views) and one MLflow store. Finalising is replaced by its last act,
ending the run: the race is between status writes, and the real one needs TensorFlow.
"""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
from mlflow.tracking import MlflowClient

from pipeline.defaults import load
from pipeline.sweeping import array
from pipeline.sweeping.handle import StudyHandle
from pipeline.sweeping.study import finished_count, make_storage
from pipeline.sweeping.study_run import ensure_parent_run
from pipeline.tracking import store

N_TRIALS, LAUNCH = 2, "race"


@pytest.fixture
def books(tmp_path, monkeypatch):
    """Two workers' handles on one study (trial 0 done, trial 1 running at the closer), the
    study run RUNNING, and the tracking settings."""
    cfg = load("sweep", [f"study.storage={tmp_path / 'optuna.journal'}"]).study
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = replace(load("sweep").tracking, uri=uri, outage_timeout=5)
    client = MlflowClient(uri)
    experiment = client.create_experiment("pipeline", (tmp_path / "artifacts").as_uri())
    handles = []
    for created in (True, False):
        storage = make_storage(cfg)
        if created:
            study = optuna.create_study(storage=storage, study_name="s")
        else:
            study = optuna.load_study(study_name="s", storage=storage)
        parent = ensure_parent_run(study, created, client, experiment, "value", {})
        handles.append(StudyHandle("s", "value", storage, study, client, experiment, parent))
    closer = handles[0].study
    closer.tell(closer.ask(), 1.0)
    last = closer.ask()

    def end_run(handle: StudyHandle) -> dict:
        store.end_run(handle.client, handle.parent_run_id)
        return {}

    monkeypatch.setattr(array, "finalize", end_run)
    return handles, last, tracking, tmp_path / "spool"


def status(handle: StudyHandle) -> str:
    return handle.client.get_run(handle.parent_run_id).info.status


def late_open(handle: StudyHandle, short: bool) -> None:
    """What `StudyHandle.open` does with the study run, given the count it read earlier."""
    study = handle.study
    ensure_parent_run(study, False, handle.client, handle.experiment_id, "value", {}, short)


def test_a_late_reopening_after_the_closer_ended_the_run_is_closed_again(books):
    (closer, late), last, tracking, spool = books
    short = finished_count(late.study) < N_TRIALS  # the late worker reads: still short
    assert short
    assert not array.close_or_leave(late, N_TRIALS, LAUNCH, tracking, spool)  # trial 1 runs
    closer.study.tell(last, 0.5)  # the last trial ends at the closer, which closes the books
    assert array.close_or_leave(closer, N_TRIALS, LAUNCH, tracking, spool)
    assert status(closer) == "FINISHED"
    late_open(late, short)  # the late worker's write lands after the closer's end
    assert status(late) == "RUNNING"
    assert not array.close_or_leave(late, N_TRIALS, LAUNCH, tracking, spool)
    assert status(late) == "FINISHED"


def test_a_worker_leaving_while_the_closer_finalises_does_not_end_the_run_early(books, monkeypatch):
    (closer, late), last, tracking, spool = books
    short = finished_count(late.study) < N_TRIALS
    closer.study.tell(last, 0.5)
    seen = []

    def finalising(handle: StudyHandle) -> dict:
        late_open(late, short)  # the late worker reopens and leaves before the closer's end
        monkeypatch.setattr(array, "WAIT_FOR_CLOSER_S", 0.0)  # it gives up waiting at once
        seen.append(array.close_or_leave(late, N_TRIALS, LAUNCH, tracking, spool))
        seen.append(status(late))
        store.end_run(handle.client, handle.parent_run_id)
        return {}

    monkeypatch.setattr(array, "finalize", finalising)
    assert array.close_or_leave(closer, N_TRIALS, LAUNCH, tracking, spool)
    assert seen == [False, "RUNNING"]  # it left the run to the closer, still finalising
    assert status(closer) == "FINISHED"
    assert closer.study.user_attrs[array.CLOSED_ATTR] == array.closed_marker("s", LAUNCH, 2)
