"""One worker's share of a study: ask for trials until the study has `n_trials` finished.

Any number of workers (processes here or on other machines) may run this on the same study;
each asks for its next trial as soon as the last one ends. Interrupts end the running trial
(FAIL in Optuna, KILLED in MLflow) and propagate; a rerun resumes the study.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from pipeline import consistency, tracking
from pipeline.config import ObjectiveConfig, redact
from pipeline.parent import BASELINE_ATTR, ensure_parent_run, finalize
from pipeline.search import BASELINE, as_params, contains
from pipeline.settings import SweepSettings
from pipeline.study import (
    REASON,
    RUN_ID_ATTR,
    STATE,
    WORKER_ATTR,
    StudyConfig,
    finished_count,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
    study_name,
    worker_id,
)

if TYPE_CHECKING:
    from pipeline.record import BackgroundRecorder


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
    why = t.user_attrs.get("failure_reason", "")
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
    """Open (or create) the study and its parent run, enqueue the baseline, repair leftovers.

    Returns (study, client, experiment_id, parent_run_id). Safe to call from any worker; the
    runner calls it once before starting local workers so they never race to create things.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours to print
    cfg = settings.study
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
    client, experiment_id = tracking.connect(settings.tracking)
    params = parent_params(settings, objective)
    parent = ensure_parent_run(study, created, client, experiment_id, objective.name, params)
    if created and contains(settings.search, BASELINE):
        study.enqueue_trial(
            as_params(BASELINE), user_attrs={BASELINE_ATTR: True}, skip_if_exists=True
        )
    _repair(study, client)
    return study, client, experiment_id, parent


def _repair(study: optuna.Study, client: Any, settled: set[int] | None = None) -> None:
    for line in consistency.repair(study, client, settled):
        tqdm.write(f"{study.study_name}: repaired {line}")


def _settle_others(
    study: optuna.Study, client: Any, settled: set[int], cfg: StudyConfig
) -> list[optuna.trial.FrozenTrial]:
    """Trials other workers still run once ours are done; a dead worker's are failed first.

    A local worker that died is seen at once. With heartbeats (RDB storage) a dead remote
    worker's trial turns stale within the grace period, so wait that long for the books to
    close; trials of live workers stay RUNNING and their workers finalise the study.
    """
    patience = cfg.grace_period + 2 * cfg.heartbeat_interval if cfg.is_rdb else 0
    deadline = time.monotonic() + patience
    while True:
        _repair(study, client, settled)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(cfg.heartbeat_interval)  # polling for another process's heartbeat to lapse


def _close_own_runs(study: optuna.Study, client: Any) -> None:
    """Close runs of this process's failed trials still RUNNING (an interrupt that landed
    between the run's start and the trial's own cleanup)."""
    me = worker_id()
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if not run_id or t.user_attrs.get(WORKER_ATTR) != me:
            continue
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, STATE, "FAIL")
            client.set_tag(run_id, REASON, t.user_attrs.get(REASON, "interrupted"))
            tracking.end_run(client, run_id, "KILLED")


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

    `recorder` records the finished trials; it is drained here, its owner closes it.
    """
    from pipeline.data import make_dataset
    from pipeline.trials import TrialContext, train_trials

    cfg = settings.study
    name = study_name(cfg.name, objective.name, n_objectives)
    study, client, experiment_id, parent = prepare_study(
        settings, objective, n_objectives, worker_index
    )
    ctx = TrialContext(
        client=client,
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
    done = finished_count(study)
    if done < cfg.n_trials:
        recorder.warm_up(ctx.data, settings.train.epochs)
    bar = tqdm(
        total=cfg.n_trials, initial=done, desc=name, disable=not progress or None, leave=False
    )
    failures = 0
    settled: set[int] = set()  # failed trials whose runs are known closed
    try:
        while finished_count(study) < cfg.n_trials:
            told = 0
            with contextlib.closing(train_trials(study, ctx, cfg.n_trials)) as trials:
                for trial in trials:
                    told += 1
                    failures = failures + 1 if trial.state == TrialState.FAIL else 0
                    best = _best(study)
                    bar.set_postfix_str(f"best {best:.3e}" if best is not None else "")
                    bar.n = min(finished_count(study), cfg.n_trials)
                    bar.refresh()
                    tqdm.write(trial_line(name, trial, best))
                    if failures >= cfg.max_failures:
                        raise TooManyFailures(
                            f"study {name}: {failures} trials failed in a row "
                            f"(last: {trial.user_attrs.get('failure_reason', 'unknown')}); "
                            "stopping. Fix the cause and rerun the same command to resume."
                        )
                    _repair(study, client, settled)
            if not told:  # other workers hold the study's last trials: they finish them
                break
    except BaseException as error:
        bar.close()
        recorder.drain()
        _close_own_runs(study, client)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            tracking.end_run(client, parent, status)
        raise
    bar.close()
    recorder.drain()
    running = _settle_others(study, client, settled, cfg)
    summary: dict[str, Any] = {"finished": finished_count(study)}
    if finalize_at_end and not running:
        summary = finalize(study, client, parent)
    return StudyOutcome(objective.name, name, parent, experiment_id, summary)
