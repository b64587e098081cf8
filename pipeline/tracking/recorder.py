"""The recording process: finished trials go to MLflow from here while the next ones train.

A spawned process (MLflow's Python never competes with the trainer for the GIL) that sends
spooled records (`tracking.delivery`); if it dies, the sweep process records what it left.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.data import Dataset
from pipeline.tracking import store
from pipeline.tracking.child import bind_to_parent
from pipeline.tracking.outage import TrackingOutage
from pipeline.tracking.plots import save_run_plots
from pipeline.tracking.recording import truth
from pipeline.tracking.spool import Spool, TrialRecord

if TYPE_CHECKING:
    from pipeline.tracking.delivery import Link

_LINK: Link  # the recording process's view of how MLflow answers (set at its start)


def recorder_process_init(parent_pid: int, link: Link) -> None:
    """Start of the recording process: Ctrl-C is the sweep's to handle, so recordings already
    queued still finish; and it dies with its sweep process, even one killed with SIGKILL
    (before this ran, too: its imports take seconds), instead of lingering. It retries
    itself (`pipeline.tracking.delivery`), so MLflow's own HTTP retries would only delay that."""
    bind_to_parent(parent_pid)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    global _LINK
    _LINK = link


def _warm_up(tracking_uri: str, data: Dataset, epochs: int) -> None:
    from pipeline.tracking.delivery import client_for

    client_for(tracking_uri).search_experiments(max_results=1)
    with store.scratch_dir() as scratch:
        steps = np.array([1, epochs])
        save_run_plots(
            Path(scratch),
            truth(data),
            data.y_val,
            data.dy_val,
            steps,
            np.ones(2),
            "",
            epochs,
            curves=data.problem.equation is None,  # an equation's run draws its own
        )


def _deliver(spool: Spool, path: Path) -> bool:
    """In the recording process: send one spooled record, retrying until it is in MLflow."""
    from pipeline.tracking.delivery import deliver

    return deliver(spool, path, _LINK)


def _open_run(record: TrialRecord, uri: str) -> str | None:
    """In the recording process: the trial's run as it starts training; None while MLflow does
    not answer (the trial's record makes the run later, and the trial goes without the id)."""
    from pipeline.tracking.delivery import client_for, open_run

    if _LINK.outage():
        return None
    try:
        return open_run(client_for(uri), record)
    except Exception:
        return None


MAX_RESTARTS = 3  # a recording process that keeps dying is a broken environment, not bad luck


class BackgroundRecorder:
    """Records finished trials in a separate process while the next trial trains.

    A trial's recording (plots, the metric batch, the artifact upload, closing the run) is
    Python that holds the GIL; in the training process it stalled the trainer between its
    compiled chunks. Here `submit` only writes the record to the spool and hands its path over.
    The process sends records in order, retrying while MLflow does not answer (the sweep reads
    `waiting` and `outage`); a record stays in the spool until MLflow has it. A process that
    dies is replaced. One recorder serves a sweep's studies in turn; `drain` before reading
    runs back, `close` when done (leaving the block by an exception abandons what waits).
    """

    def __init__(self, spool: Spool) -> None:
        from pipeline.tracking.delivery import Link

        self.spool = spool
        self._link = Link()
        self._restarts = 0
        self._pool = self._start()
        self._pending: list[tuple[Future, Path]] = []

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=recorder_process_init,
            initargs=(os.getpid(), self._link),
        )

    def _submit(self, call: Callable, *args: object) -> Future:
        try:
            return self._pool.submit(call, *args)
        except BrokenProcessPool:
            if self._restarts >= MAX_RESTARTS:
                raise
            self._restarts += 1
            self._pool = self._start()
            return self._pool.submit(call, *args)

    def _send(self, path: Path) -> Future:
        return self._submit(_deliver, self.spool, path)

    def open_run(self, record: TrialRecord) -> Future:
        """Create the run of a trial that starts training (`record`, state RUNNING) in the
        recording process; the future gives its id, or None while MLflow does not answer."""
        return self._submit(_open_run, record, self.spool.uri)

    def warm_up(self, data: Dataset, epochs: int) -> Future:
        """Start the process now, while the first trial trains: its imports, the store's
        connection and the plots' shared axes for `data` and `epochs` are then ready."""
        return self._pool.submit(_warm_up, self.spool.uri, data, epochs)

    def submit(self, record: TrialRecord) -> None:
        """Spool `record`, then queue its sending; a refusal is reported at `drain`."""
        path = self.spool.write(record)
        self._pending = [(f, p) for f, p in self._pending if not f.done() or f.exception()]
        self._pending.append((self._send(path), path))

    def waiting(self) -> int:
        """Records handed over that MLflow does not have yet."""
        return sum(not f.done() for f, _ in self._pending)

    def outage(self) -> float:
        """Seconds since MLflow stopped answering the recording process; 0 while it answers."""
        return self._link.outage()

    def drain(self, patience: float = math.inf, tick: Callable[[], object] | None = None) -> int:
        """Wait until MLflow has every record handed over; print and count the refused ones.
        Raises TrackingOutage once MLflow has not answered for `patience` seconds; `tick` is
        called while waiting (the sweep's progress line)."""
        while True:
            futures = [f for f, _ in self._pending]
            if not wait(futures, timeout=0.25).not_done:
                broken = [p for f, p in self._pending if _broken(f)]
                if not broken:
                    break
                self._pending = [(f, p) for f, p in self._pending if not _broken(f)]
                self._pending += [(self._send(p), p) for p in broken]
            if tick is not None:
                tick()
            if self.outage() > patience:
                raise TrackingOutage(self.spool.uri, self.outage(), self.spool.directory)
        failed = 0
        for future, path in self._pending:
            if future.exception() is not None:
                failed += 1
                print(f"warning: trial record {path.name}: {future.exception()}", file=sys.stderr)
        self._pending = []
        return failed

    def abandon(self) -> None:
        """Stop at once: what was not sent stays in the spool for the next start to send.

        The process is killed once the record it is sending (if any) is in, or after 5 s: a
        pool shut down without waiting can leave its process blocked on its queue, and the
        interpreter's exit handler would then wait for it forever. Sends are idempotent.
        """
        self._link.stop.set()
        processes = pool_processes(self._pool)  # shutdown forgets them
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait([f for f, _ in self._pending], timeout=5)  # the record being sent, if any
        for process in processes:
            process.kill()

    def close(self) -> None:
        """Drain, then stop the process. Interrupted meanwhile, it stops the process at once: a
        pool left halfway through its shutdown keeps its process, and this one, from exiting."""
        try:
            self.drain()
            self._pool.shutdown()
        except BaseException:
            processes = pool_processes(self._pool)  # shutdown forgets them
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            raise

    def __enter__(self) -> BackgroundRecorder:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()


def _broken(future: Future) -> bool:
    return future.done() and isinstance(future.exception(), BrokenProcessPool)


def pool_processes(pool: ProcessPoolExecutor) -> list[multiprocessing.Process]:
    """The processes of `pool`, to kill them. CPython 3.11's ProcessPoolExecutor has no public
    handle on them (3.14 adds `kill_workers`): this reads its private `_processes` (checked
    against CPython 3.11; `tests/test_private_apis.py` fails if it goes)."""
    return list((pool._processes or {}).values())
