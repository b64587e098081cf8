"""Running a sweep: preflight checks, local worker processes, signals, and the final summary.

Exit codes: 0 done, 1 stopped after too many failures (or `check` found orphans), 2 bad input,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). An interrupted sweep resumes when rerun.
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

from pipeline import cli
from pipeline.config import ConfigError, redact
from pipeline.settings import SweepSettings
from pipeline.study import study_name

if TYPE_CHECKING:
    from pipeline.record import BackgroundRecorder
    from pipeline.worker import StudyOutcome

CONNECT_TIMEOUT_S = 5


def _reachable_database(url: str, key: str) -> None:
    from sqlalchemy import create_engine, text

    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
    try:
        engine = create_engine(url, connect_args=connect_args)
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(key, redact(url), f"cannot connect ({redact(first)})") from None


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
        _reachable_database(uri, "tracking.uri")
    cfg = settings.study
    if cfg.is_rdb and not cfg.storage.startswith("sqlite"):
        _reachable_database(cfg.storage, "study.storage")
    if not cfg.is_rdb and not Path(cfg.storage).exists():
        return
    import optuna

    from pipeline.study import OBJECTIVE_ATTR, make_storage

    storage = make_storage(cfg)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    for objective in settings.objectives:
        name = study_name(cfg.name, objective.name, len(settings.objectives))
        if name not in existing:
            continue
        frozen = existing[name]
        owner = frozen.user_attrs.get(OBJECTIVE_ATTR, objective.name)
        if owner != objective.name or frozen.directions != [optuna.study.StudyDirection.MINIMIZE]:
            raise ConfigError(
                "study.name", name, f"an existing study of that name was made for objective={owner}"
            )


def _recorder(settings: SweepSettings) -> BackgroundRecorder:
    """The process that records this process's finished trials, for all its studies in turn."""
    from pipeline.record import BackgroundRecorder

    return BackgroundRecorder(settings.tracking.uri)


def _worker_main(settings: SweepSettings, index: int, working: Any, prepared: Any) -> None:
    """A local worker process: its share of every study, on one TF thread like every process.

    It imports TensorFlow while the sweep process prepares the studies, then waits for
    `prepared`. `working[k]` counts the workers still on study k; the one that leaves it last
    closes its books (study plots, best model), so the sweep process never needs TensorFlow.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM for us
    from pipeline.worker import Terminated, TooManyFailures, raise_on_sigterm, run_study

    raise_on_sigterm()
    code = 0
    n = len(settings.objectives)
    try:
        cli.import_tensorflow_quietly()
        prepared.wait()
        with _recorder(settings) as recorder:
            for k, objective in enumerate(settings.objectives):
                run_study(settings, objective, n, recorder, index, finalize_at_end=False)
                with working.get_lock():
                    working[k] -= 1
                    last = working[k] == 0
                if last:  # every trial of this study is over: this asks for none, it finalises
                    run_study(settings, objective, n, recorder, index, progress=False)
    except Terminated:
        code = 143
    except TooManyFailures as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    cli.exit_now(code)


def _run_workers(settings: SweepSettings) -> int:
    from pipeline.worker import prepare_study

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
    try:
        # Create the tracking store, experiment, studies and parent runs here, once, while the
        # workers import TensorFlow (concurrent first use of a SQLite store races its
        # migrations); then let them join.
        for objective in settings.objectives:
            prepare_study(settings, objective, len(settings.objectives))
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
            _close_parents(settings, "KILLED")
        raise
    finally:
        codes = [w.exitcode for w in workers]
        # Free the counters' semaphores now: the sweep exits without interpreter teardown.
        del workers, working, prepared
    return 1 if any(c == 1 for c in codes) else 0


def _close_parents(settings: SweepSettings, status: str) -> None:
    """After the workers stopped: close leftovers and end each study's parent run as `status`."""
    import optuna
    from optuna.trial import TrialState

    from pipeline import consistency, tracking
    from pipeline.parent import PARENT_ATTR
    from pipeline.study import make_storage

    client, _ = tracking.connect(settings.tracking)
    storage = make_storage(settings.study)
    for objective in settings.objectives:
        name = study_name(settings.study.name, objective.name, len(settings.objectives))
        study = optuna.load_study(study_name=name, storage=storage)
        consistency.repair(study, client)
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            tracking.end_run(client, parent, status)


def _outcomes(settings: SweepSettings) -> list[StudyOutcome]:
    """After the workers: each study's summary; a study whose books a worker could not close
    (it died) is finalised here, the one case where this process needs TensorFlow."""
    import optuna

    from pipeline import tracking
    from pipeline.parent import PARENT_ATTR, summarize
    from pipeline.study import make_storage
    from pipeline.worker import StudyOutcome, run_study

    client, experiment_id = tracking.connect(settings.tracking)
    storage = make_storage(settings.study)
    outcomes = []
    for objective in settings.objectives:
        name = study_name(settings.study.name, objective.name, len(settings.objectives))
        study = optuna.load_study(study_name=name, storage=storage)
        parent = study.user_attrs.get(PARENT_ATTR, "")
        if parent and client.get_run(parent).info.status == "FINISHED":
            summary = summarize(study)
            outcomes.append(StudyOutcome(objective.name, name, parent, experiment_id, summary))
            continue
        cli.import_tensorflow_quietly()
        with _recorder(settings) as idle:  # never started: there is nothing to record
            n = len(settings.objectives)
            outcomes.append(run_study(settings, objective, n, idle, progress=False))
    return outcomes


def print_summary(
    outcomes: list[StudyOutcome], tracking_uri: str, reference: dict[str, float] | None = None
) -> None:
    """Per objective: baseline, best, improvement, best params and run, then how to look; and
    the reference line (the post's network trained the post's way) where `reference` has one."""
    from pipeline.tracking import ui_command

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
            for k, v in (trial.params.items() if trial else [])
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


def run_sweep(settings: SweepSettings) -> int:
    """The whole sweep; returns the process exit code."""
    try:
        preflight(settings)
    except ConfigError as error:
        cli.fail(error)
    if settings.study.n_workers == 1:  # with more, only the worker processes train
        cli.import_tensorflow_quietly()
    from pipeline.worker import Terminated, TooManyFailures, raise_on_sigterm, run_study

    raise_on_sigterm()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n = len(settings.objectives)
    try:
        if settings.study.n_workers > 1:
            code = _run_workers(settings)
            if code:
                return code
            outcomes = _outcomes(settings)
        else:
            with _recorder(settings) as recorder:
                outcomes = [run_study(settings, o, n, recorder) for o in settings.objectives]
    except ConfigError as error:
        cli.fail(error)
    except TooManyFailures as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        code = 143 if isinstance(error, Terminated) else 130
        print(
            "\ninterrupted: the running trial was failed and its run closed as KILLED; "
            "rerun the same command to resume.",
            file=sys.stderr,
        )
        return code
    from pipeline.reference import references

    print_summary(outcomes, settings.tracking.uri, references(settings, outcomes))
    return 0


def run_check(settings: SweepSettings) -> int:
    """Compare each study with its MLflow runs; 0 when consistent, 1 when orphans were found."""
    import optuna
    from mlflow.tracking import MlflowClient

    from pipeline import consistency
    from pipeline.parent import PARENT_ATTR
    from pipeline.study import make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    client = MlflowClient(tracking_uri=settings.tracking.uri)
    experiment = client.get_experiment_by_name(settings.tracking.experiment)
    storage = make_storage(settings.study)
    clean = True
    for objective in settings.objectives:
        name = study_name(settings.study.name, objective.name, len(settings.objectives))
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            print(f"{name}: no such study")
            continue
        parent = study.user_attrs.get(PARENT_ATTR)
        if experiment is None or parent is None:
            print(f"{name}: no MLflow study run recorded")
            clean = False
            continue
        found = consistency.check(study, client, experiment.experiment_id, parent)
        print(f"{name}: {'consistent' if found.clean else 'INCONSISTENT'}")
        for line in found.lines():
            print(f"  {line}")
        clean = clean and found.clean
    return 0 if clean else 1
