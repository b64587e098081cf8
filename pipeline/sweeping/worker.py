"""One worker's share of a study: ask for trials until the study has `n_trials` finished.

Any number of workers (processes here or on other machines) may run this on the same study;
each asks for its next trial as soon as the last one ends. Finished trials go to the recorder
(and its spool), so a tracking-server outage stops no trial: the sweep says so once, and stops
cleanly only after `tracking.outage_timeout`. Interrupts end the running trial (FAIL in Optuna,
KILLED in MLflow) and propagate; a rerun sends what the spool holds and resumes the study.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from pipeline.names import BASELINE_ATTR
from pipeline.sweeping import consistency
from pipeline.sweeping.handle import StudyHandle, SweepSettings
from pipeline.sweeping.progress import Watch, failure_reason, storage_away, trial_line
from pipeline.sweeping.space import BASELINE, as_params, contains
from pipeline.sweeping.stopping import TooManyFailures, wind_down
from pipeline.sweeping.study import FINISHED, StudyConfig, finished_count
from pipeline.sweeping.study_run import finalize
from pipeline.sweeping.telling import PrunerView
from pipeline.tracking import delivery
from pipeline.tracking.outage import on_storage, patiently
from pipeline.tracking.spool import Spool

if TYPE_CHECKING:
    from pipeline.sweeping.trial_context import TrialContext
    from pipeline.tracking.recorder import BackgroundRecorder

# How old other workers' finished trials may be when the pruner judges a trial on them (this
# worker's own are seen at once): one read of the study per trial, not one per report.
PRUNER_VIEW_S = 10.0


@dataclass
class StudyOutcome:
    """A study at the end of a sweep: its handle and `study_run.summarize`'s summary."""

    handle: StudyHandle
    summary: dict[str, Any]

    @property
    def objective(self) -> str:
        return self.handle.objective

    @property
    def study_name(self) -> str:
        return self.handle.name

    @property
    def parent_run_id(self) -> str:
        return self.handle.parent_run_id

    @property
    def experiment_id(self) -> str:
        return self.handle.experiment_id


def prepare_study(handle: StudyHandle, settings: SweepSettings) -> StudyHandle:
    """Send what the spool holds, enqueue the baseline in a new study, repair leftovers.

    Safe to call from any worker; the runner calls it once before starting local workers so
    they never race to create things. Returns `handle`.
    """
    patience, uri, say = settings.tracking.outage_timeout, settings.tracking.uri, tqdm.write
    spool = Spool.of_sweep(uri, settings.study.storage)
    delivery.send_waiting(spool, patience, say)  # a rerun's first act: what waits
    if handle.created:  # outside the space, trial 0 samples nothing: TPE never sees its params
        params = as_params(BASELINE) if contains(settings.search, BASELINE) else {}
        if params and settings.search.condition_weight and handle.objective == "residual":
            params["condition_weight"] = settings.objective(handle.objective).condition_weight
        baseline = {"user_attrs": {BASELINE_ATTR: True}, "skip_if_exists": True}
        on_storage(handle.storage, partial(handle.study.enqueue_trial, params, **baseline))

    def record_failed(t: FrozenTrial, reason: str) -> None:
        delivery.send_now(spool, consistency.failed_record(handle, t, reason), patience)

    patiently(partial(_repair, handle, record_failed, True), uri, patience, spool.directory, say)
    return handle


def _repair(
    handle: StudyHandle, record_failed: consistency.RecordFailed, close_runs: bool = False
) -> None:
    for line in consistency.repair(handle, record_failed, close_runs):
        tqdm.write(f"{handle.name}: repaired {line}")


def _settle_others(
    handle: StudyHandle, cfg: StudyConfig, record_failed: consistency.RecordFailed
) -> list[FrozenTrial]:
    """Trials other workers still run once ours are done; a dead worker's are failed first.

    A local worker that died is seen at once. With heartbeats (RDB storage) a dead remote
    worker's trial turns stale within the grace period, so wait that long for the books to
    close; trials of live workers stay RUNNING and their workers finalise the study.
    """
    patience = cfg.grace_period + 2 * cfg.heartbeat_interval if cfg.is_rdb else 0
    deadline = time.monotonic() + patience
    while True:
        _repair(handle, record_failed)
        running = handle.running()
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(cfg.heartbeat_interval)  # polling for another process's heartbeat to lapse


def _work(
    ctx: TrialContext,
    cfg: StudyConfig,
    watch: Watch,
    record_failed: consistency.RecordFailed,
    progress: bool,
) -> None:
    """This worker's trials, trained in populations (`trials.train_trials`), until the
    study has `n_trials`; a line per trial, the progress bar, and the failure and outage limits."""
    from pipeline.sweeping.trials import train_trials

    handle, name = ctx.handle, ctx.handle.name
    # The storage dropping its connections (a PostgreSQL restart) is waited for between
    # trials, and a trial it orphaned is repaired.
    say = lambda error: tqdm.write(f"{name}: {storage_away(error)}")  # noqa: E731
    wait = partial(on_storage, handle.storage, on_first=say)
    done = wait(partial(finished_count, handle.study))
    bar = tqdm(
        total=cfg.n_trials, initial=done, desc=name, disable=not progress or None, leave=False
    )
    failures = 0
    try:
        while done < cfg.n_trials:
            told = 0
            with contextlib.closing(train_trials(ctx, cfg.n_trials)) as trials:
                for trial in trials:
                    told += 1
                    failures = failures + 1 if trial.state == TrialState.FAIL else 0
                    done, best = wait(partial(tally, handle.study))
                    tqdm.write(trial_line(name, trial, best))
                    note = watch.check(tqdm.write)
                    best_text = f"best {best:.3e}" if best is not None else ""
                    bar.set_postfix_str(", ".join(filter(None, [best_text, note])))
                    bar.n = min(done, cfg.n_trials)
                    bar.refresh()
                    if failures >= cfg.max_failures:
                        raise TooManyFailures(
                            f"study {name}: {failures} trials failed in a row "
                            f"(last: {failure_reason(trial, {})}); stopping. "
                            "Fix the cause and rerun the same command to resume."
                        )
                    wait(partial(_repair, handle, record_failed))
            done = wait(partial(finished_count, handle.study))
            if not told:  # other workers hold the study's last trials: they finish them
                break
    finally:
        bar.close()


def tally(study: optuna.Study) -> tuple[int, float | None]:
    """The study's COMPLETE + PRUNED trials and its best value (it minimises; None before a
    COMPLETE trial), from one read of the study rather than two after every trial."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    values = [t.value for t in trials if t.state == TrialState.COMPLETE]
    return len(trials), min(values, default=None)


def _context(
    handle: StudyHandle, settings: SweepSettings, recorder: BackgroundRecorder
) -> TrialContext:
    """What every trial this worker trains for the study shares, its dataset made here."""
    from pipeline.core.data import make_dataset
    from pipeline.sweeping.trial_context import TrialContext

    cfg, objective = settings.study, settings.objective(handle.objective)
    return TrialContext(
        handle=handle,
        objective=objective,
        train=settings.train,
        space=settings.search,
        data=make_dataset(settings.data, settings.problem, objective.anchor_x, settings.train.seed),
        report_every=cfg.report_every,
        recorder=recorder,
        population=cfg.population,
        n_jobs=cfg.n_jobs,
        heartbeat_interval=cfg.heartbeat_interval if cfg.is_rdb else None,
        # Local workers split a small study rather than one of them asking for all of it.
        share=math.ceil(cfg.n_trials / cfg.n_workers),
        pruner_view=PrunerView(handle.study, PRUNER_VIEW_S),
    )


def run_study(
    handle: StudyHandle,
    settings: SweepSettings,
    recorder: BackgroundRecorder,
    finalize_at_end: bool = True,
    progress: bool = True,
) -> StudyOutcome:
    """Work on the study until it has `n_trials` COMPLETE + PRUNED trials (`prepare_study`
    first); then close its books (`study_run.finalize`) unless other workers still run trials.

    `recorder` records the finished trials; it is drained here (the study's books close only
    once MLflow has every run), its owner closes it.
    """
    cfg, tracking = settings.study, settings.tracking
    prepare_study(handle, settings)
    ctx = _context(handle, settings, recorder)

    def record_failed(t: FrozenTrial, reason: str) -> None:
        recorder.submit(consistency.failed_record(handle, t, reason))

    count = partial(on_storage, handle.storage, partial(finished_count, handle.study))
    if count() < cfg.n_trials:
        recorder.warm_up(ctx.data, settings.train.epochs)
    try:
        watch = Watch(handle.name, tracking, recorder)
        settle = partial(_settle_others, handle, cfg, record_failed)
        while True:
            before = count()
            _work(ctx, cfg, watch, record_failed, progress)
            running = on_storage(handle.storage, settle)
            # Settling can fail an orphan (a trial asked twice while the storage dropped its
            # connections) and enqueue its retry: this worker then trains that too.
            after = count()
            if running or after >= cfg.n_trials or after == before:
                break
        recorder.drain(tracking.outage_timeout, tick=lambda: watch.check(tqdm.write))
    except BaseException as error:
        wind_down(error, handle, recorder, tracking.uri)
        raise
    summary: dict[str, Any] = {"finished": count()}
    if finalize_at_end and not running:
        spool = recorder.spool.directory
        summary = patiently(partial(finalize, handle), tracking.uri, tracking.outage_timeout, spool)
    return StudyOutcome(handle, summary)
