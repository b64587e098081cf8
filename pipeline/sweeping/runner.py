"""Running a sweep: preflight checks, local worker processes, signals, and the final summary.

Exit codes: 0 done, 1 stopped after too many failures or a tracking outage longer than
`tracking.outage_timeout` (or `check` found orphans), 2 bad input, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM). A stopped sweep resumes when rerun: it first sends what its spool holds.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import entry
from pipeline.names import OBJECTIVE_ATTR
from pipeline.settings import ConfigError, redact
from pipeline.sweeping import definition
from pipeline.sweeping.handle import StudyHandle, SweepSettings
from pipeline.sweeping.space import trial_params
from pipeline.sweeping.storage import reachable

if TYPE_CHECKING:
    from pipeline.sweeping.worker import StudyOutcome
    from pipeline.tracking.recorder import BackgroundRecorder
    from pipeline.tracking.spool import Spool

CONNECT_TIMEOUT_S = 5
OUTAGE_EXIT = 3  # a worker process stopped by a tracking outage (the sweep exits 1)


def preflight(settings: SweepSettings) -> None:
    """Fail fast (within seconds) on unreachable servers and conflicting studies; writes nothing."""
    uri = settings.tracking.uri
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=CONNECT_TIMEOUT_S)
        except (urllib.error.URLError, OSError) as error:
            raise ConfigError(
                "tracking.uri", redact(uri), f"no MLflow server answers there ({error})"
            ) from None
    elif not uri.startswith("sqlite"):
        reachable(uri, "tracking.uri")
    cfg = settings.study
    if "://" in cfg.storage and not cfg.storage.startswith("sqlite"):
        reachable(cfg.storage, "study.storage")
    if "://" not in cfg.storage and not Path(cfg.storage).exists():
        return
    import optuna

    from pipeline.sweeping.study import make_storage

    storage = make_storage(cfg)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    for objective in settings.objectives:
        name = settings.study_name(objective.name)
        if name not in existing:
            continue
        frozen = existing[name]
        owner = frozen.user_attrs.get(OBJECTIVE_ATTR, objective.name)
        if owner != objective.name or frozen.directions != [optuna.study.StudyDirection.MINIMIZE]:
            raise ConfigError(
                "study.name", name, f"an existing study of that name was made for objective={owner}"
            )
        note = definition.check(name, frozen.user_attrs, settings, objective)
        if note:
            print(note)


def _spool(settings: SweepSettings) -> Spool:
    from pipeline.tracking.spool import Spool

    return Spool.of_sweep(settings.tracking.uri, settings.study.storage)


def _recorder(settings: SweepSettings) -> BackgroundRecorder:
    """The process that records this process's finished trials, for all its studies in turn."""
    from pipeline.tracking.recorder import BackgroundRecorder

    return BackgroundRecorder(_spool(settings))


def _worker_studies(settings: SweepSettings, index: int, working: Any) -> None:
    """A local worker's share of every study, each opened once here. `working[k]` counts the
    workers still on study k; the one that leaves it last closes its books (plots, best model),
    so the sweep process never needs TensorFlow."""
    from pipeline.sweeping.worker import run_study

    with _recorder(settings) as recorder:
        for k, objective in enumerate(settings.objectives):
            handle = StudyHandle.open(settings, objective, index)
            run_study(handle, settings, recorder, finalize_at_end=False)
            with working.get_lock():
                working[k] -= 1
                last = working[k] == 0
            if last:  # every trial of this study is over: this asks for none, it finalises
                run_study(handle, settings, recorder, progress=False)


def _worker_main(settings: SweepSettings, index: int, working: Any, prepared: Any) -> None:
    """A local worker process, on one TF thread like every process: it imports TensorFlow
    while the sweep process prepares the studies, waits for `prepared`, then does its share."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM for us
    from pipeline.sweeping.stopping import Terminated, TooManyFailures, raise_on_sigterm
    from pipeline.tracking.outage import TrackingOutage

    raise_on_sigterm()
    code = 0
    try:
        entry.import_tensorflow_quietly(settings.train.compile_cache, settings.study.n_jobs)
        prepared.wait()
        _worker_studies(settings, index, working)
    except Terminated:
        code = 143
    except TooManyFailures as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except TrackingOutage:
        code = OUTAGE_EXIT  # the sweep process says it once for all workers
    entry.exit_now(code)


def _run_workers(settings: SweepSettings) -> tuple[int, list[StudyHandle]]:
    """The sweep's local worker processes, started at once; each study is prepared here
    meanwhile. Returns the exit code and the handles on the studies."""
    from pipeline.sweeping.worker import prepare_study

    context = multiprocessing.get_context("spawn")
    working = context.Array("i", [settings.study.n_workers] * len(settings.objectives))
    prepared = context.Event()
    workers = [
        context.Process(
            target=_worker_main, args=(settings, i, working, prepared), name=f"worker-{i}"
        )
        for i in range(settings.study.n_workers)
    ]
    for w in workers:
        w.start()
    handles: list[StudyHandle] = []
    try:
        # Create the tracking store, experiment, studies and parent runs here, once, while the
        # workers import TensorFlow (concurrent first use of a SQLite store races its
        # migrations); then let them join.
        for objective in settings.objectives:
            handles.append(prepare_study(StudyHandle.open(settings, objective), settings))
        prepared.set()
        for w in workers:
            w.join()
    except BaseException as error:
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGTERM)
        for w in workers:
            w.join()
        if isinstance(error, KeyboardInterrupt) and prepared.is_set():
            from pipeline.sweeping import closing

            closing.close_parents(handles, settings, "KILLED")
        raise
    finally:
        codes = [w.exitcode for w in workers]
        # Free the counters' semaphores now: the sweep exits without interpreter teardown.
        del workers, working, prepared
    if OUTAGE_EXIT in codes:
        from pipeline.tracking.outage import TrackingOutage

        cfg = settings.tracking
        raise TrackingOutage(cfg.uri, cfg.outage_timeout, _spool(settings).directory)
    return (1 if any(c == 1 for c in codes) else 0), handles


def print_summary(
    outcomes: list[StudyOutcome], tracking_uri: str, reference: dict[str, float] | None = None
) -> None:
    """Per objective: baseline, best, improvement, best params and run, then how to look; and
    the reference line (the post's network trained the post's way) where `reference` has one."""
    from pipeline.tracking.store import ui_command

    print()
    header = f"{'objective':<11}{'baseline':>11}{'best':>11}{'improvement':>13}  best trial"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        s = o.summary
        best, base = s.get("best_value"), s.get("baseline_value")
        factor = f"{base / best:,.1f}x" if best and base else "-"
        trial = s.get("best_trial")
        params = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in (trial_params(trial).items() if trial else [])
        )
        print(
            f"{o.objective:<11}{base if base is not None else float('nan'):>11.3e}"
            f"{best if best is not None else float('nan'):>11.3e}{factor:>13}  "
            f"#{trial.number if trial else '-'} {params}"
        )
        print(f"{'':<11}study {o.study_name}, best run {s.get('best_run_id', '-')}")
        if o.objective in (reference or {}):
            value = reference[o.objective]
            lower = f": best {value / best:,.1f}x lower" if best else ""
            print(
                f"{'':<11}reference {value:.3e}, the post's network trained the post's way "
                f"(the data points, not the collocation points){lower}"
            )
    experiment_id = outcomes[0].experiment_id if outcomes else None
    print(f"\nCompare the runs: {ui_command(tracking_uri, experiment_id)}")


def run_sweep(settings: SweepSettings, worker: int | None = None, launch: str = "") -> int:
    """The whole sweep, or worker `worker`'s share of it (`sweeping.array`); the exit code."""
    try:
        preflight(settings)
    except ConfigError as error:
        entry.fail(error)
    if settings.study.n_workers == 1:  # with more, only the worker processes train
        entry.import_tensorflow_quietly(settings.train.compile_cache, settings.study.n_jobs)
    from pipeline.sweeping.stopping import TooManyFailures, raise_on_sigterm
    from pipeline.sweeping.worker import run_study
    from pipeline.tracking.outage import TrackingOutage

    raise_on_sigterm()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        if settings.study.n_workers > 1:
            code, handles = _run_workers(settings)
            if code:
                return code
            from pipeline.sweeping import closing

            outcomes = closing.outcomes(handles, settings, _recorder)
        else:
            with _recorder(settings) as recorder:
                if worker is not None:  # None back unless this worker closed the last study
                    from pipeline.sweeping import array

                    outcomes = array.work(settings, worker, launch, recorder, _recorder)
                else:
                    outcomes = [
                        run_study(StudyHandle.open(settings, o), settings, recorder)
                        for o in settings.objectives
                    ]
    except ConfigError as error:
        entry.fail(error)
    except TooManyFailures as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except TrackingOutage as error:
        print(f"error: {error.line(_spool(settings).count())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        return _interrupted(settings, error)
    if worker is not None:
        print(f"worker {worker}: done")
    if outcomes is None:  # another worker closes the studies and prints the summary
        return 0
    from pipeline.sweeping.reference import references

    print_summary(outcomes, settings.tracking.uri, references(settings, outcomes))
    return 0


def run_check(settings: SweepSettings) -> int:
    """Send what the spool holds, then compare each study with its MLflow runs: 0 when they
    agree, 1 when orphans were found (or MLflow did not answer)."""
    from pipeline.sweeping.consistency import check_sweep
    from pipeline.tracking.outage import TrackingOutage

    try:
        return check_sweep(settings, _spool(settings))
    except TrackingOutage as error:
        print(f"error: {error.line(_spool(settings).count())}", file=sys.stderr)
        return 1


def _interrupted(settings: SweepSettings, error: KeyboardInterrupt) -> int:
    """Say what an interrupt left (the spooled records too) and give its exit code: 143 for
    SIGTERM, 130 for Ctrl-C."""
    from pipeline.sweeping.stopping import Terminated

    waiting = _spool(settings).count()
    spooled = f" ({waiting} records wait in {_spool(settings).directory})" if waiting else ""
    print(
        "\ninterrupted: the running trial was failed and its run closed as KILLED; "
        f"rerun the same command to resume{spooled}.",
        file=sys.stderr,
    )
    return 143 if isinstance(error, Terminated) else 130
