"""The simulated worker of `benchmarks/coordination.py`: the storage calls of the project's worker
loop around **a stand-in trainer** (a sleep and a made-up loss curve; no TensorFlow, no MLflow),
timing what the storage takes; and the finished trials a study's history is made of.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

EPOCHS = 10_000
# Study settings the benchmark changes (`--report-every`), set before the workers are forked.
STUDY_OVERRIDES: dict[str, object] = {}


def study_cfg(storage: str):
    from pipeline.defaults import load

    study = load("sweep").study
    return replace(study, storage=storage, heartbeat_interval=10, **STUDY_OVERRIDES)


class ReadingSampler(optuna.samplers.RandomSampler):
    """**A stand-in for TPE**: it reads the study's finished trials as TPE does (once per ask,
    through Optuna's per-ask cache) and then samples at random, computing nothing, so that the
    storage's time is not the CPU queue of 16 or 64 TPE models on 2 cores."""

    def infer_relative_search_space(self, study, trial):
        """The history read (what TPE's first look at the study costs); no relative space."""
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        study._get_trials(deepcopy=False, states=states, use_cache=True)
        return {}


class StorageClock:
    """Wall and CPU time spent inside the storage's own methods (outermost calls only), how
    many calls, and for an RDB how many SQL statements, per process."""

    def __init__(self, *storages) -> None:
        self.wall, self.cpu, self.calls, self.sql, self.depth = 0.0, 0.0, 0, 0, 0
        for storage in storages:
            self.wrap(storage)
            if hasattr(storage, "engine"):
                from sqlalchemy import event

                event.listen(storage.engine, "before_cursor_execute", self._statement)

    def _statement(self, *_) -> None:
        self.sql += 1

    def wrap(self, storage) -> None:
        for name in dir(type(storage)):
            method = getattr(storage, name)
            if not name.startswith("_") and callable(method):
                setattr(storage, name, self._timed(method))

    def _timed(self, method):
        def call(*args, **kwargs):
            self.depth += 1
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.wall += time.perf_counter() - wall
                    self.cpu += time.thread_time() - cpu
                    self.calls += 1

        return call

    def now(self) -> tuple[float, float, int, int]:
        """Wall seconds, CPU seconds, calls and SQL statements so far."""
        return self.wall, self.cpu, self.calls, self.sql


def history_trials(count: int, seed: int = 0) -> list:
    """`count` finished trials of the default space: params from a seeded random sampler, a
    decaying report every `report_every` and a final value; a quarter pruned half-way."""
    from pipeline.defaults import load
    from pipeline.sweeping.space import suggest

    space, every = load("sweep").search, study_cfg("x").report_every
    sampler = optuna.samplers.RandomSampler(seed=seed)
    scratch = optuna.create_study(sampler=sampler)
    trials = []
    for i in range(count):
        trial = scratch.ask()
        suggest(trial, space)
        steps = range(every, EPOCHS + 1, every)
        start = 10 ** (-1 - 3 * ((i * 7919) % 1000) / 1000)
        curve = {s: start * (s / every) ** -0.8 for s in steps}
        pruned = i % 4 == 0
        if pruned:
            curve = {s: v for s, v in curve.items() if s <= EPOCHS // 2}
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        value = curve[max(curve)]
        trials.append(optuna.trial.create_trial(
            params=trial.params, distributions=trial.distributions, value=value,
            intermediate_values=curve, state=state))  # fmt: skip
        scratch.tell(trial, value)
    return trials


@dataclass
class Outcome:
    worker: int
    told: list[int] = field(default_factory=list)
    coordination: list[float] = field(default_factory=list)  # per trial: wall outside the sleeps
    storage: list[tuple[float, float, int, int]] = field(default_factory=list)  # StorageClock.now
    errors: list[str] = field(default_factory=list)


@dataclass
class Bench:
    """What a simulated worker opens once: its settings, the study and what times its calls."""

    cfg: Any
    space: Any
    study: optuna.Study
    handle: Any  # sweeping.handle.StudyHandle: the heartbeats and the repair go through it
    clock: StorageClock
    view: Any  # telling.PrunerView, or None: the pruner reads the study itself


def worker(
    index: int, url: str, n_trials: int, trial_s: float, sampler: str, view_on: bool, start, queue
) -> None:
    """One simulated worker: the storage calls of `sweeping.trials` and `sweeping.worker._work`
    (the bounded ask, the worker attribute, suggest, report + prune check on the worker's
    `PrunerView`, heartbeats, the run id, the tell, then the tally and the repair of stale
    trials) around a sleeping stand-in trainer. `sampler`: "tpe" as the project builds it, or
    "reader" (`ReadingSampler`); `view_on` False: the pruner reads the study itself (as before
    `PrunerView`)."""
    from pipeline.sweeping import telling

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ["PGAPPNAME"] = f"coordination-worker-{index}"  # peak connections per worker
    out = Outcome(index)
    try:
        bench = open_bench(index, url, sampler, view_on)
    except Exception as error:
        out.errors.append(f"open: {type(error).__name__}: {str(error)[:200]}")
        queue.put(out)
        return
    start.wait()
    while True:
        try:
            if len(bench.study.get_trials(deepcopy=False, states=telling.LIVE)) >= n_trials:
                break
            one_trial(bench, n_trials, trial_s, out)
        except Exception as error:
            out.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
            if len(out.errors) > 20:
                break
    queue.put(out)


def open_bench(index: int, url: str, sampler: str, view_on: bool) -> Bench:
    """The study `bench` at `url` as worker `index` opens it, its history read once (as
    `run_study` does) before any trial."""
    from pipeline.defaults import load
    from pipeline.sweeping import telling
    from pipeline.sweeping.handle import StudyHandle
    from pipeline.sweeping.study import make_pruner, make_sampler, make_storage
    from pipeline.sweeping.worker import PRUNER_VIEW_S

    cfg = study_cfg(url)
    storage = make_storage(cfg)
    chosen = make_sampler(cfg, index) if sampler == "tpe" else ReadingSampler(seed=index)
    study = optuna.load_study(
        study_name="bench", storage=storage, sampler=chosen, pruner=make_pruner(cfg)
    )
    # What the study calls (for an RDB, Optuna's cache of finished trials in front of it)
    # and the storage itself, which the worker's heartbeats go to.
    clock = StorageClock(storage, *([study._storage] if study._storage is not storage else []))
    view = telling.PrunerView(study, PRUNER_VIEW_S) if view_on else None
    study.get_trials(deepcopy=False)
    handle = StudyHandle("bench", "value", storage, study)
    return Bench(cfg, load("sweep").search, study, handle, clock, view)


def one_trial(bench: Bench, n_trials: int, trial_s: float, out: Outcome) -> None:
    """Ask, train (the sleeping stand-in, reporting every `report_every`), tell, tally and
    repair one trial; its coordination and storage times go to `out`."""
    from pipeline.names import REASON, RUN_ATTR, WORKER_ATTR
    from pipeline.sweeping import consistency, telling
    from pipeline.sweeping.space import suggest
    from pipeline.sweeping.study import worker_id
    from pipeline.sweeping.worker import tally

    cfg, study, view = bench.cfg, bench.study, bench.view
    steps = list(range(cfg.report_every, EPOCHS + 1, cfg.report_every))
    began, before = time.perf_counter(), bench.clock.now()
    trial = telling.ask_within(study, n_trials)
    if trial is None:
        return
    trial.set_user_attr(WORKER_ATTR, worker_id())
    suggest(trial, bench.space)
    first = 10 ** -(1 + 3 * (trial.number * 7919 % 1000) / 1000)
    beaten, state, slept = 0.0, None, 0.0
    for step in steps:
        t0 = time.perf_counter()
        time.sleep(trial_s / len(steps))  # the stand-in trainer's chunk of epochs
        slept += time.perf_counter() - t0
        if cfg.is_rdb and time.monotonic() - beaten >= cfg.heartbeat_interval:
            bench.handle.beat(trial.number)
            beaten = time.monotonic()
        if telling.report(trial, first * (step / steps[0]) ** -0.8, step, view):
            state = optuna.trial.TrialState.PRUNED
            telling.set_attr(trial, REASON, f"pruned at epoch {step} by the pruner")
            break
    telling.set_attr(trial, RUN_ATTR, f"run-{trial.number}")
    if view is not None:
        view.refresh()
    if state is None:
        telling.tell(study, trial, first * (steps[-1] / steps[0]) ** -0.8)
    else:
        telling.tell(study, trial, state=state)
    tally(study)
    consistency.repair(bench.handle)
    out.told.append(trial.number)
    out.coordination.append(time.perf_counter() - began - slept)
    out.storage.append(tuple(a - b for a, b in zip(bench.clock.now(), before, strict=True)))


SAMPLERS = {  # the sampler options compared in memory, beside the project's default (tpe)
    "tpe (group=true)": ("tpe", {}),
    "tpe n_ei_candidates=8": ("tpe", {"n_ei_candidates": 8}),
    "tpe group=false": ("tpe", {"group": False}),
    "random": ("random", {}),
}


def sampler_costs(histories: list[int], asks: int = 10) -> None:
    """ms per ask (with the search space's suggest calls) of each sampler in `SAMPLERS` on an
    in-memory study holding `history` finished trials: the sampler's compute alone."""
    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.space import suggest
    from pipeline.sweeping.study import make_sampler

    space = load("sweep").search
    print(f"\nsampler's own compute, in memory, ms per ask (median of {asks}):")
    print(f"{'sampler':<26}" + "".join(f"{h:>10,}" for h in histories))
    trials = {h: history_trials(h) for h in histories}
    for label, (name, options) in SAMPLERS.items():
        cells = []
        for h in histories:
            cfg = replace(study_cfg("x"), sampler=name, sampler_options=options)
            study = optuna.create_study(sampler=make_sampler(cfg))
            study.add_trials(trials[h])
            times = []
            for _ in range(asks):
                began = time.perf_counter()
                trial = study.ask()
                suggest(trial, space)
                times.append(time.perf_counter() - began)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            cells.append(f"{statistics.median(times) * 1e3:>10.1f}")
        print(f"{label:<26}" + "".join(cells), flush=True)
