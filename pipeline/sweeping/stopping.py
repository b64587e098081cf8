"""How a sweep stops: SIGTERM raised like Ctrl-C, too many failed trials in a row, and a worker's
way out (what can be sent quickly is sent; the study run ends if no trial still runs)."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from pipeline.tracking import store
from pipeline.tracking.outage import QUICK_S, TrackingOutage, patiently

if TYPE_CHECKING:
    from pipeline.sweeping.handle import StudyHandle
    from pipeline.tracking.recorder import BackgroundRecorder


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so Optuna fails the running trial and we unwind cleanly."""


class TooManyFailures(RuntimeError):
    """`study.max_failures` trials failed in a row: something is wrong beyond one trial."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in this process."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def wind_down(
    error: BaseException, handle: StudyHandle, recorder: BackgroundRecorder, uri: str
) -> None:
    """On the way out: send what can be sent quickly; end the study run (KILLED on an
    interrupt, else FAILED) if no trial still runs."""
    if isinstance(error, TrackingOutage):
        return  # nothing more reaches MLflow; the spool keeps the records
    try:
        recorder.drain(QUICK_S)
        if handle.running():
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        end = lambda: store.end_run(handle.client, handle.parent_run_id, status)  # noqa: E731
        patiently(end, uri, QUICK_S, recorder.spool.directory)
    except TrackingOutage:
        pass  # the rerun sends the records and reopens the study run
