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
import signal
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from pipeline.names import BASELINE_ATTR, REASON
from pipeline.settings import ObjectiveConfig, redact
from pipeline.sweeping import consistency
from pipeline.sweeping.handle import SweepSettings
from pipeline.sweeping.progress import Watch, failure_reason, storage_away
from pipeline.sweeping.space import BASELINE, as_params, contains
from pipeline.sweeping.study import (
    StudyConfig,
    finished_count,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
    study_name,
)
from pipeline.sweeping.study_run import ensure_parent_run, finalize
from pipeline.tracking import delivery, store
from pipeline.tracking.outage import (
    QUICK_S,
    TrackingOutage,
    on_storage,
    patiently,
    steady_heartbeats,
)
from pipeline.tracking.spool import Spool

if TYPE_CHECKING:
    from pipeline.sweeping.trials import TrialContext
    from pipeline.tracking.recorder import BackgroundRecorder


@dataclass
class StudyOutcome:
    objective: str
    study_name: str
    parent_run_id: str
    experiment_id: str
    summary: dict[str, Any]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so Optuna fails the running trial and we unwind cleanly."""


class TooManyFailures(RuntimeError):
    """`study.max_failures` trials failed in a row: something is wrong beyond one trial."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` in this process."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def parent_params(settings: SweepSettings, objective: ObjectiveConfig) -> dict[str, Any]:
    """What the study run records of its setup: the problem (f and f' as SymPy text), data,
    search space, the objective's own settings, the storage URL with any password masked."""
    s = settings
    params: dict[str, Any] = {
        "objective": objective.name,
        "n_trials": s.study.n_trials,
        "sampler": s.study.sampler,
        "sampler_options": s.study.sampler_options,
        "pruner": s.study.pruner,
        "pruner_options": s.study.pruner_options,
        "study_seed": s.study.seed,
        "report_every": s.study.report_every,
        "storage": redact(s.study.storage),
        "epochs": s.train.epochs,
        "seed": s.train.seed,
    }
    params |= {"problem": s.problem.name, "problem_f": s.problem.expression}
    params |= {"problem_df": s.problem.derivative, "problem_label": s.problem.label}
    params |= {f"data.{k}": v for k, v in vars(s.data).items()}
    params |= {f"search.{k}": v for k, v in vars(s.search).items()}
    return params | objective.params()


def trial_line(name: str, t: optuna.trial.FrozenTrial, best: float | None) -> str:
    """One concise line per finished trial."""
    p = t.params
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


def _best(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def prepare_study(
    settings: SweepSettings, objective: ObjectiveConfig, n_objectives: int, worker_index: int = 0
) -> tuple[optuna.Study, Any, str, str]:
    """Open (or create) the study and its parent run, send what the spool holds, enqueue the
    baseline, repair leftovers.

    Returns (study, client, experiment_id, parent_run_id). Safe to call from any worker; the
    runner calls it once before starting local workers so they never race to create things.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours to print
    cfg, patience = settings.study, settings.tracking.outage_timeout
    spool = Spool.of_sweep(settings.tracking.uri, cfg.storage)
    name = study_name(cfg.name, objective.name, n_objectives)
    study, created = open_study(
        make_storage(cfg),
        name,
        objective.name,
        make_sampler(cfg, seed_offset=worker_index),
        make_pruner(cfg),
    )
    # A resumed or parallel worker must not replay another's random stream: offset the seed.
    study.sampler = make_sampler(cfg, seed_offset=worker_index * 100_003 + len(study.trials))
    steady_heartbeats(study)
    params = parent_params(settings, objective)

    def books() -> tuple[Any, str, str]:
        client, experiment_id = store.connect(settings.tracking)
        parent = ensure_parent_run(study, created, client, experiment_id, objective.name, params)
        return client, experiment_id, parent

    uri, say = settings.tracking.uri, tqdm.write
    client, experiment_id, parent = patiently(books, uri, patience, spool.directory, say)
    delivery.send_waiting(spool, patience, say)  # a rerun's first act: what waits
    if created and contains(settings.search, BASELINE):
        study.enqueue_trial(
            as_params(BASELINE), user_attrs={BASELINE_ATTR: True}, skip_if_exists=True
        )

    def record_failed(t: FrozenTrial, reason: str) -> None:
        record = consistency.failed_record(name, experiment_id, parent, objective.name, t, reason)
        delivery.send_now(spool, record, patience)

    repair = lambda: _repair(study, client, record_failed)  # noqa: E731
    patiently(repair, uri, patience, spool.directory, say)
    return study, client, experiment_id, parent


def _repair(study: optuna.Study, client: Any, record_failed: Any = None) -> None:
    for line in consistency.repair(study, client, record_failed):
        tqdm.write(f"{study.study_name}: repaired {line}")


def _settle_others(
    study: optuna.Study, cfg: StudyConfig, record_failed: Any
) -> list[optuna.trial.FrozenTrial]:
    """Trials other workers still run once ours are done; a dead worker's are failed first.

    A local worker that died is seen at once. With heartbeats (RDB storage) a dead remote
    worker's trial turns stale within the grace period, so wait that long for the books to
    close; trials of live workers stay RUNNING and their workers finalise the study.
    """
    patience = cfg.grace_period + 2 * cfg.heartbeat_interval if cfg.is_rdb else 0
    deadline = time.monotonic() + patience
    while True:
        _repair(study, None, record_failed)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(cfg.heartbeat_interval)  # polling for another process's heartbeat to lapse


def _wind_down(
    error: BaseException, study: optuna.Study, client: Any, parent: str, recorder: Any, uri: str
) -> None:
    """On the way out: send what can be sent quickly; end the study run if no trial still runs."""
    if isinstance(error, TrackingOutage):
        return  # nothing more reaches MLflow; the spool keeps the records
    try:
        recorder.drain(QUICK_S)
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        end = lambda: store.end_run(client, parent, status)  # noqa: E731
        patiently(end, uri, QUICK_S, recorder.spool.directory)
    except TrackingOutage:
        pass  # the rerun sends the records and reopens the study run


def _work(
    study: optuna.Study,
    ctx: TrialContext,
    cfg: StudyConfig,
    watch: Watch,
    record_failed: consistency.RecordFailed,
    progress: bool,
) -> None:
    """This worker's trials, trained in populations (`trials.train_trials`), until the
    study has `n_trials`; a line per trial, the progress bar, and the failure and outage limits."""
    from pipeline.sweeping.trials import train_trials

    name = ctx.study_name
    # The storage dropping its connections (a PostgreSQL restart) is waited for between
    # trials, and a trial it orphaned is repaired.
    say = lambda error: tqdm.write(f"{name}: {storage_away(error)}")  # noqa: E731
    wait = partial(on_storage, study, on_first=say)
    done = wait(partial(finished_count, study))
    bar = tqdm(
        total=cfg.n_trials, initial=done, desc=name, disable=not progress or None, leave=False
    )
    failures = 0
    try:
        while done < cfg.n_trials:
            told = 0
            with contextlib.closing(train_trials(study, ctx, cfg.n_trials)) as trials:
                for trial in trials:
                    told += 1
                    failures = failures + 1 if trial.state == TrialState.FAIL else 0
                    best, done = wait(partial(_best, study)), wait(partial(finished_count, study))
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
                    wait(partial(_repair, study, None, record_failed))
            done = wait(partial(finished_count, study))
            if not told:  # other workers hold the study's last trials: they finish them
                break
    finally:
        bar.close()


def run_study(
    settings: SweepSettings,
    objective: ObjectiveConfig,
    n_objectives: int,
    recorder: BackgroundRecorder,
    worker_index: int = 0,
    finalize_at_end: bool = True,
    progress: bool = True,
) -> StudyOutcome:
    """Work on the objective's study until it has `n_trials` COMPLETE + PRUNED trials.

    `recorder` records the finished trials; it is drained here (the study's books close only
    once MLflow has every run), its owner closes it.
    """
    from pipeline.core.data import make_dataset
    from pipeline.sweeping.trials import TrialContext

    cfg, tracking_cfg = settings.study, settings.tracking
    name = study_name(cfg.name, objective.name, n_objectives)
    study, client, experiment_id, parent = prepare_study(
        settings, objective, n_objectives, worker_index
    )
    ctx = TrialContext(
        experiment_id=experiment_id,
        parent_run_id=parent,
        study_name=name,
        objective=objective,
        train=settings.train,
        space=settings.search,
        data=make_dataset(settings.data, settings.problem, objective.anchor_x, settings.train.seed),
        report_every=cfg.report_every,
        recorder=recorder,
        population=cfg.population,
        heartbeat_interval=cfg.heartbeat_interval if cfg.is_rdb else None,
        # Local workers split a small study rather than one of them asking for all of it.
        share=math.ceil(cfg.n_trials / cfg.n_workers),
    )

    def record_failed(t: FrozenTrial, reason: str) -> None:
        args = (name, experiment_id, parent, objective.name, t, reason)
        recorder.submit(consistency.failed_record(*args))

    if finished_count(study) < cfg.n_trials:
        recorder.warm_up(ctx.data, settings.train.epochs)
    try:
        watch = Watch(name, tracking_cfg, recorder)
        _work(study, ctx, cfg, watch, record_failed, progress)
        running = on_storage(study, partial(_settle_others, study, cfg, record_failed))
        recorder.drain(tracking_cfg.outage_timeout, tick=lambda: watch.check(tqdm.write))
    except BaseException as error:
        _wind_down(error, study, client, parent, recorder, tracking_cfg.uri)
        raise
    summary: dict[str, Any] = {"finished": finished_count(study)}
    if finalize_at_end and not running:
        close = lambda: finalize(study, client, parent)  # noqa: E731
        spool = recorder.spool.directory
        summary = patiently(close, tracking_cfg.uri, tracking_cfg.outage_timeout, spool)
    return StudyOutcome(objective.name, name, parent, experiment_id, summary)
