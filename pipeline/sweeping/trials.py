"""A study's trials, trained in populations: ask, train K at once, prune, tell, record.

A worker asks Optuna for trials while it has free slots (TPE samples each from the finished
trials; its `constant_liar` option, off by default, would also steer clear of running ones),
trains them together in one compiled graph per layout (`core.trainer`; with `study.n_jobs`
threads, a population per layout per thread, their graph calls side by side), reports every slot's
validation error at each chunk and stops the slots the pruner prunes, and refills a finished
slot with a newly asked trial. Training and Optuna never wait on MLflow: a finished trial
(COMPLETE, PRUNED or FAIL, an interrupt included) becomes one `TrialRecord` (`tracking.spool`)
before Optuna learns its state, and the recorder turns it into the trial's child run of its
study run whenever the tracking store can take it (found by its tags).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import optuna

from pipeline.core.layout import Layout
from pipeline.core.model import seeded_weights
from pipeline.core.objectives import get as get_objective
from pipeline.core.results import TrainResult
from pipeline.core.trainer import NetworkSpec, Population
from pipeline.names import BASELINE_ATTR, REASON, RUN_ATTR, WORKER_ATTR, units_param
from pipeline.settings import CONSTANT_RATE, LrDecay
from pipeline.sweeping import telling
from pipeline.sweeping.space import (
    BASELINE,
    Hyperparams,
    contains,
    layout_for,
    layouts,
    suggest,
)
from pipeline.sweeping.stopping import Terminated
from pipeline.sweeping.study import retry_stopped, worker_id
from pipeline.sweeping.trial_context import TrialContext, record_of
from pipeline.tracking.outage import on_storage, steady_beat
from pipeline.tracking.recording import objective_value, run_params

T = TypeVar("T")
RUN_WAIT_S = 30  # longest a finished trial waits for its run's id (the recorder starting up)


@dataclass
class _Flight:
    """A trial this worker asked for and has not told yet."""

    trial: optuna.Trial
    hp: Hyperparams | None
    params: dict[str, Any] = field(default_factory=dict)
    decay: LrDecay = CONSTANT_RATE
    started: float = field(default_factory=time.time)
    run: Future | None = None  # its MLflow run's id, once the recording process made the run
    taken: telling.Taken | None = None  # set when another worker failed it as stale


class _Slots:
    """This worker's populations, one per layout of the space, and the trial of each slot."""

    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx
        # One population per layout for each of the worker's threads (`study.n_jobs`).
        self.crowds = [self._population(layout) for layout in layouts(ctx.space) * ctx.n_jobs]
        self.flights: dict[tuple[int, int], _Flight] = {}
        self.beaten = 0.0

    def _population(self, layout: Layout) -> Population:
        o, ctx = self.ctx.objective, self.ctx
        return Population(layout, ctx.population, ctx.data, o.name, o.anchor_weight, o.deriv_weight,
                          ctx.report_every, ctx.train.log_every, o.condition_weight)  # fmt: skip

    def discard(self, p: int) -> list[_Flight]:
        """Empty population `p` (after an error in it); return the trials it was training."""
        lost = [
            self.flights.pop((p, k)) for k in range(self.ctx.population) if (p, k) in self.flights
        ]
        self.crowds[p] = self._population(self.crowds[p].layout)
        return lost

    def free(self) -> bool:
        """Whether a new trial may start: a free slot, and fewer in flight than with one thread
        (a population per layout) or one population per thread if that is more. Threads speed
        trials up rather than thin out what TPE and the pruner learn from finished ones."""
        kinds = len({crowd.layout for crowd in self.crowds})
        room = self.ctx.population * max(kinds, self.ctx.n_jobs)
        return len(self.flights) < room and any(crowd.free() for crowd in self.crowds)

    def place(self, flight: _Flight) -> bool:
        """Start the trial's network in the first population of the first layout that holds
        it with a free slot; False when those are full (the trial waits for a slot there)."""
        hp, ctx = flight.hp, self.ctx
        holding = [c.layout for c in self.crowds if c.layout.holds(hp.hidden, hp.activation,
                                                                   hp.optimizer)]  # fmt: skip
        if not holding:  # the baseline outside the space: a population of its own exact layout
            self.crowds.append(self._population(layout_for(ctx.space, hp)))
            return self.place(flight)
        for p, crowd in enumerate(self.crowds):  # one population per thread has this layout
            if crowd.layout != holding[0] or not crowd.free():
                continue
            k = crowd.free()[0]
            epochs = ctx.train.epochs
            spec = NetworkSpec(hp.activation, hp.optimizer, hp.learning_rate, epochs, flight.decay,
                               condition_weight=hp.condition_weight)  # fmt: skip
            crowd.start(k, seeded_weights(hp.hidden, ctx.train.seed), spec)
            self.flights[(p, k)] = flight
            return True
        return False


def train_trials(ctx: TrialContext, n_trials: int) -> Iterator[optuna.trial.FrozenTrial]:
    """Ask, train, prune, tell and record trials until the study has `n_trials` finished or
    running ones; yield each trial (FrozenTrial) as it finishes.

    On an error or interrupt every trial still in training ends FAIL (its run FAILED, or KILLED
    on an interrupt) before the error goes on, so a rerun resumes the study.
    """
    slots, waiting = _Slots(ctx), []
    judge = partial(telling.report, view=ctx.pruner_view)  # report, then the pruner's verdict
    minimised = get_objective(ctx.objective.name).minimised
    threads = ThreadPoolExecutor(ctx.n_jobs, "trainer") if ctx.n_jobs > 1 else None
    try:
        while True:
            yield from _fill(ctx, slots, waiting, n_trials)
            busy = [p for p, crowd in enumerate(slots.crowds) if crowd.busy()]
            if not busy:
                return
            # On several threads every busy population trains its chunk at once (TensorFlow
            # runs the graph calls side by side); results are taken in order, as with one.
            chunks = [threads.submit(slots.crowds[p].step) for p in busy] if threads else None
            for i, p in enumerate(busy):
                crowd = slots.crowds[p]
                try:
                    reports = chunks[i].result() if chunks else crowd.step()
                except Exception as error:  # its trials fail with it; the sweep goes on
                    for flight in slots.discard(p):
                        yield _fail(ctx, flight, error)
                    continue
                for k, report in reports.items():
                    value = minimised(report, ctx.objective.deriv_weight,
                                      ctx.objective.condition_weight)  # fmt: skip
                    flight = slots.flights[(p, k)]
                    if math.isfinite(value) and not flight.taken:
                        try:
                            report_to = partial(judge, flight.trial, value, report.epoch)
                            if _steady(ctx, report_to):
                                crowd.stop(k)
                        except telling.Taken as taken:  # failed elsewhere: stop, never tell
                            flight.taken = taken
                            crowd.stop(k)
                _heartbeat(ctx, slots)
                for k in [k for k in range(crowd.size) if crowd.finished(k)]:
                    yield _finish(ctx, slots.flights.pop((p, k)), crowd.take(k))
    except BaseException as error:
        for flight in [*slots.flights.values(), *waiting]:
            _fail(ctx, flight, error)
        raise
    finally:
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


def _fill(
    ctx: TrialContext, slots: _Slots, waiting: list, n_trials: int
) -> Iterator[optuna.trial.FrozenTrial]:
    """Ask for trials while a slot is free and the study wants more than are finished or
    running; a trial whose population is full waits for its next free slot."""
    waiting[:] = [f for f in waiting if not slots.place(f)]
    study = ctx.handle.study
    while slots.free() and not waiting and len(slots.flights) < (ctx.share or n_trials):
        live = _steady(ctx, partial(study.get_trials, deepcopy=False, states=telling.LIVE))
        if len(live) >= n_trials:
            return
        trial = _steady(ctx, partial(telling.ask_within, study, n_trials))
        if trial is None:  # another worker asked the study's last trial at the same moment
            return
        _steady(ctx, partial(trial.set_user_attr, WORKER_ATTR, worker_id()))
        # The baseline is the post's recipe, constant rate included; the others decay theirs.
        baseline = _steady(ctx, partial(getattr, trial, "user_attrs")).get(BASELINE_ATTR)
        try:
            hp = BASELINE if baseline and not contains(ctx.space, BASELINE) else None
            weighted = get_objective(ctx.objective.name).residual  # condition_weight searched
            hp = hp or _steady(ctx, partial(suggest, trial, ctx.space, weighted))
        except Exception as error:  # a sampler's failure fails this trial, not the sweep
            yield _fail(ctx, _Flight(trial, None), error)
            continue
        decay = CONSTANT_RATE if baseline else ctx.train.lr_decay
        flight = _Flight(trial, hp, _params(ctx, hp, decay), decay)
        flight.run = ctx.recorder.open_run(record_of(ctx, trial.number, "RUNNING"))
        if not slots.place(flight):
            waiting.append(flight)


def _params(ctx: TrialContext, hp: Hyperparams, decay: LrDecay) -> dict[str, Any]:
    """The params a trial's run carries: the uniform ones plus the per-layer widths."""
    t, widths = ctx.train, {units_param(i): units for i, units in enumerate(hp.hidden)}
    if get_objective(ctx.objective.name).residual:  # the loss's weight of the conditions
        widths["condition_weight"] = hp.condition_weight or ctx.objective.condition_weight
    return run_params(hp.hidden, hp.activation, hp.optimizer, hp.learning_rate, decay, t.epochs,
                      t.seed, ctx.objective.name, ctx.data.problem) | widths  # fmt: skip


def _steady(ctx: TrialContext, call: Callable[[], T]) -> T:
    """`call()` on the study's storage, waited out while the storage drops its connections (a
    PostgreSQL restart) rather than failing the trials in flight."""
    return on_storage(ctx.handle.storage, call)


def _tell(ctx: TrialContext, trial: optuna.Trial, *args: Any, **kwargs: Any):
    """`telling.tell`, waited out like every storage call; the pruner then sees it."""
    if ctx.pruner_view is not None:
        ctx.pruner_view.refresh()
    return _steady(ctx, partial(telling.tell, ctx.handle.study, trial, *args, **kwargs))


def _heartbeat(ctx: TrialContext, slots: _Slots) -> None:
    """Tell an RDB storage with heartbeats that this worker's trials live (what
    `study.optimize` does in a thread), so a dead worker's trials turn stale and retry."""
    interval, handle = ctx.heartbeat_interval, ctx.handle
    if not interval or time.monotonic() - slots.beaten < interval:
        return
    slots.beaten = time.monotonic()
    for flight in slots.flights.values():
        steady_beat(handle.storage, partial(handle.beat, flight.trial.number))


def _link_run(ctx: TrialContext, flight: _Flight, wait: bool = True) -> None:
    """The trial's `mlflow_run_id` user attr, set while Optuna still lets it change: its run's
    id, waited for up to RUN_WAIT_S only while MLflow answers (else the trial goes without)."""
    try:
        run_id = flight.run.result(RUN_WAIT_S if wait and not ctx.recorder.outage() else 0)
    except Exception:  # not made yet, no run (a sampler's failure), the recorder restarted
        return
    if run_id:
        _steady(ctx, partial(telling.set_attr, flight.trial, RUN_ATTR, run_id))


def _finish(ctx: TrialContext, flight: _Flight, result: TrainResult):
    """Spool and tell a trained trial: COMPLETE with its value, or PRUNED (pruned, diverged);
    FAIL (its run too) if another worker took it meanwhile."""
    trial = flight.trial
    state, reason = telling.outcome(result)
    value = objective_value(ctx.objective, result)
    if state == "COMPLETE" and not math.isfinite(value):
        return _fail(ctx, flight, FloatingPointError(f"objective_value is {value}"))
    try:
        if flight.taken:
            raise flight.taken
        if reason:
            _steady(ctx, partial(telling.set_attr, trial, REASON, reason))
        _link_run(ctx, flight)
    except telling.Taken as taken:
        return _fail(ctx, flight, taken)
    details = {"reason": reason, "params": flight.params, "result": result, "data": ctx.data}
    ctx.recorder.submit(record_of(ctx, trial.number, state, start=flight.started, **details))
    try:
        if state == "COMPLETE":
            return _tell(ctx, trial, value)
        return _tell(ctx, trial, state=optuna.trial.TrialState.PRUNED)
    except telling.Taken as taken:  # failed elsewhere after its last report: its run too
        return _fail(ctx, flight, taken)


def _fail(ctx: TrialContext, flight: _Flight, error: BaseException):
    """Spool a trial that ended by an error or interrupt and tell Optuna FAIL, the reason named."""
    killed = isinstance(error, KeyboardInterrupt | GeneratorExit)
    reason = "interrupted" if killed else f"{type(error).__name__}: {error}"
    details = {"reason": reason, "killed": killed, "params": flight.params, "start": flight.started}
    try:  # neither may replace the trial's own error (an interrupt must stay one)
        ctx.recorder.submit(record_of(ctx, flight.trial.number, "FAIL", **details))
    except Exception as lost:
        print(f"warning: trial {flight.trial.number} not recorded: {lost!r}", file=sys.stderr)
    with contextlib.suppress(Exception):  # the storage may be what failed
        flight.trial.set_user_attr(REASON, reason)
        _link_run(ctx, flight, wait=not killed)
    told = _tell(ctx, flight.trial, state=optuna.trial.TrialState.FAIL)
    if isinstance(error, Terminated):  # a scheduler's stop: its params retried, as if it died
        with contextlib.suppress(Exception):
            retry_stopped(ctx.handle.study, told)
    return told
