"""What a sweep tells its terminal beyond one line per trial: the state of the tracking store
(said once, not once per retry), the records waiting for it, and why trials failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial

from pipeline.names import REASON
from pipeline.settings import TrackingConfig, redact
from pipeline.sweeping.space import trial_params
from pipeline.tracking.outage import TrackingOutage, first_line

if TYPE_CHECKING:
    from pipeline.tracking.recorder import BackgroundRecorder


class Watch:
    """A sweep's eye on its recorder: says once that MLflow stopped answering (and once that it
    is back), notes the waiting records for the progress bar, and past
    `tracking.outage_timeout` raises TrackingOutage."""

    def __init__(self, name: str, cfg: TrackingConfig, recorder: BackgroundRecorder) -> None:
        self.name, self.cfg, self.recorder, self.announced = name, cfg, recorder, False

    def check(self, say: Callable[[str], None]) -> str:
        """The progress bar's note on waiting records ('' while MLflow answers)."""
        down, spool = self.recorder.outage(), self.recorder.spool.directory
        if down and not self.announced:
            say(
                f"{self.name}: MLflow at {redact(self.cfg.uri)} is not answering; finished "
                f"trials wait in {spool} and are sent once it is back (training goes on)"
            )
        elif not down and self.announced:
            say(f"{self.name}: MLflow answers again; sending the waiting records")
        self.announced = bool(down)
        if down > self.cfg.outage_timeout:
            raise TrackingOutage(self.cfg.uri, down, spool)
        waiting = self.recorder.waiting()
        return f"{waiting} records waiting for MLflow" if down and waiting else ""


def failure_reason(trial: FrozenTrial, errors: dict[int, BaseException]) -> str:
    """Why a trial failed, always named: its recorded reason, else the error the objective
    raised (`errors`, by trial number), else what is left: Optuna failed it after the return."""
    if trial.user_attrs.get(REASON):
        return trial.user_attrs[REASON]
    error = errors.get(trial.number)
    if error is not None:
        return f"{type(error).__name__}: {error}"
    return "Optuna failed it after the objective returned (no usable value)"


def storage_away(error: BaseException) -> str:
    """The line for an Optuna storage that stopped answering between trials (said once)."""
    return f"the Optuna storage did not answer ({first_line(error)}); retrying"


def trial_line(name: str, t: FrozenTrial, best: float | None) -> str:
    """One concise line per finished trial."""
    p = trial_params(t)
    units = ",".join(str(p.get(f"units_l{i}")) for i in range(p.get("n_layers", 0)))
    value = f"{t.value:.3e}" if t.value is not None else "-"
    why = t.user_attrs.get(REASON, "")
    seconds = (t.duration.total_seconds()) if t.duration else 0.0
    best_text = f"best {best:.3e}" if best is not None else "best -"
    return (
        f"{name} #{t.number:<3} {t.state.name:<8} {value:>10}  [{units}] {p.get('activation')} "
        f"{p.get('optimizer')} lr={p.get('learning_rate', 0):.1e}  {seconds:.2f}s  {best_text}"
        + (f"  ({why})" if why else "")
    )
