"""A tracking store that does not answer: which errors say so, waiting with backoff, and the
exception that stops a sweep cleanly once `tracking.outage_timeout` has passed.

Training never waits here: finished trials wait in the spool (`tracking.spool`). Only the few
MLflow calls a sweep makes at its start and end (the study run, the books) wait, and only this
long. MLflow's and urllib3's own retry messages are silenced in `pipeline.tracking.store`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pipeline.settings import redact

T = TypeVar("T")
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 5.0
QUICK_S = 5.0  # what an interrupted sweep still gives MLflow on its way out
# What a server says when it, not the request, is at fault: worth asking again later.
SERVER_SIDE = {
    "INTERNAL_ERROR",
    "TEMPORARILY_UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "REQUEST_LIMIT_EXCEEDED",
    "DEADLINE_EXCEEDED",
}
TRANSIENT_STATUS = (408, 429)
# SQLAlchemy's errors for a database that dropped or refused the connection (the last: a
# session still holding the dropped connection's transaction).
DATABASE_AWAY = ("OperationalError", "InterfaceError", "PendingRollbackError")
STORAGE_PATIENCE_S = 120.0  # how long the Optuna storage may not answer between trials


class TrackingOutage(RuntimeError):
    """The tracking store did not answer for `tracking.outage_timeout` seconds: stop cleanly,
    leaving the finished trials' records in the spool for the rerun to send."""

    def __init__(self, uri: str, seconds: float, spool: Path) -> None:
        super().__init__(f"MLflow at {redact(uri)} has not answered for {seconds:.0f} s")
        self.uri, self.seconds, self.spool = uri, seconds, spool

    def line(self, waiting: int) -> str:
        """The one line a user gets: where, how long, what waits and what to do."""
        records = f"{waiting} record{'' if waiting == 1 else 's'}"
        return (
            f"MLflow at {redact(self.uri)} has not answered for {self.seconds:.0f} s "
            f"(tracking.outage_timeout); the spool {self.spool} holds {records} of finished "
            "trials: rerun the same command once it is back to send them and continue the study"
        )


def _status(text: str) -> int | None:
    found = re.search(r"(?:error code|status code:?) (\d{3})", text)
    return int(found.group(1)) if found else None


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the store did not answer (worth retrying later), rather than that a
    request was wrong (which no retry mends)."""
    from mlflow.exceptions import MlflowException, RestException

    for _ in range(10):  # the chain below `error`, as deep as any sane one goes
        if error is None:
            return False
        if isinstance(error, RestException):
            return error.error_code in SERVER_SIDE
        if isinstance(error, MlflowException) and error.error_code == "TEMPORARILY_UNAVAILABLE":
            return True  # a database store's connection failed
        if isinstance(error, MlflowException) and error.message.startswith("API request to"):
            status = _status(error.message)  # None: no answer at all (refused, reset, timeout)
            return status is None or status >= 500 or status in TRANSIENT_STATUS
        if isinstance(error, OSError):  # requests' errors, sockets, timeouts
            response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            return status is None or status >= 500 or status in TRANSIENT_STATUS
        if type(error).__name__ in DATABASE_AWAY:
            return True
        # An error raised from (or while handling) one of those says the same (Optuna's failed
        # `tell` of a trial surfaces as an AssertionError raised while handling the storage's).
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def backoff() -> Iterator[float]:
    """Seconds to wait before each retry: 0.5, 1, 2, 4, then 5 for as long as it takes."""
    delay = BACKOFF_FIRST_S
    while True:
        yield delay
        delay = min(2 * delay, BACKOFF_MAX_S)


def first_line(error: BaseException) -> str:
    """The error's first line, any password masked: enough to say what happened."""
    text = str(error).strip().splitlines()
    return redact(text[0][:300]) if text else type(error).__name__


def retry(
    call: Callable[[], T],
    patience: float,
    on_first: Callable[[BaseException], object] | None = None,
) -> T:
    """`call()`, retried with backoff while its error says a store did not answer, for up to
    `patience` seconds from the first failure; then that error is raised. Any other error is
    raised at once. `on_first` hears of the first failure only (never of each retry)."""
    since = None
    delays = backoff()
    while True:
        try:
            return call()
        except Exception as error:
            if not unreachable(error):
                raise
            now = time.monotonic()
            if since is None:
                since = now
                if on_first is not None:
                    on_first(error)
            if now - since >= patience:
                raise
            time.sleep(min(next(delays), max(0.0, since + patience - now)))


def _drop_session(storage: Any) -> None:
    """Discard this thread's database session: a dropped connection leaves it unusable."""
    session = getattr(storage, "scoped_session", None)  # an RDB storage's (public) attribute
    if session is not None:
        session.remove()


def on_storage(
    storage: Any, call: Callable[[], T], on_first: Callable[[BaseException], object] | None = None
) -> T:
    """`call()` on an Optuna storage, retried while the storage does not answer (a PostgreSQL
    restart) for up to STORAGE_PATIENCE_S, with a fresh session each time."""

    def fresh() -> T:
        try:
            return call()
        except Exception:
            _drop_session(storage)
            raise

    return retry(fresh, STORAGE_PATIENCE_S, on_first)


def steady_beat(storage: Any, beat: Callable[[], object]) -> None:
    """`beat()`, a heartbeat on `storage`; one the storage cannot take (it is restarting) is a
    skipped beat, not an error that would leave the trial to be failed as stale."""
    try:
        beat()
    except Exception as error:
        if not unreachable(error):
            raise
        _drop_session(storage)  # the next beat, one interval later, reconnects


def patiently(
    call: Callable[[], T],
    uri: str,
    patience: float,
    spool: Path,
    say: Callable[[str], None] | None = None,
) -> T:
    """`call()` on MLflow, retried while MLflow does not answer (see `retry`); past `patience`
    seconds, TrackingOutage. `say` gets one line when the waiting starts."""

    def first(_: BaseException) -> None:
        if say is not None:
            say(
                f"MLflow at {redact(uri)} is not answering; waiting up to {patience:.0f} s "
                "(tracking.outage_timeout)"
            )

    try:
        return retry(call, patience, first)
    except Exception as error:
        if unreachable(error):
            raise TrackingOutage(uri, patience, spool) from None
        raise
