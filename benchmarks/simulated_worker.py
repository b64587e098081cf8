"""The simulated worker of `benchmarks/coordination.py`: the storage calls of the project's worker
loop around **a stand-in trainer** (a sleep and a made-up loss curve; no TensorFlow, no MLflow),
timing what the storage takes; and the finished trials a study's history is made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

EPOCHS = 10_000


def study_cfg(storage: str):
    from pipeline.defaults import load

    return replace(load("sweep").study, storage=storage, heartbeat_interval=10)


class StorageClock:
    """Time spent inside the storage's own methods (outermost calls only), per process."""

    def __init__(self, *storages) -> None:
        self.seconds, self.depth = 0.0, 0
        for storage in storages:
            self.wrap(storage)

    def wrap(self, storage) -> None:
        for name in dir(type(storage)):
            method = getattr(storage, name)
            if not name.startswith("_") and callable(method):
                setattr(storage, name, self._timed(method))

    def _timed(self, method):
        def call(*args, **kwargs):
            self.depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - start

        return call


def history_trials(count: int, seed: int = 0) -> list:
    """`count` finished trials of the default space: params from a seeded random sampler, a
    decaying report every `report_every` and a final value; a quarter pruned half-way."""
    import optuna

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
    coordination: list[float] = field(default_factory=list)
    storage: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def worker(index: int, url: str, n_trials: int, trial_s: float, start, queue) -> None:
    """One simulated worker: the project's storage calls around a sleeping stand-in trainer."""
    import optuna

    from pipeline.defaults import load
    from pipeline.names import RUN_ATTR, WORKER_ATTR
    from pipeline.sweeping import telling
    from pipeline.sweeping.space import suggest
    from pipeline.sweeping.study import make_pruner, make_sampler, make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg, space, out = study_cfg(url), load("sweep").search, Outcome(index)
    try:
        storage = make_storage(cfg)
        sampler, pruner = make_sampler(cfg, index), make_pruner(cfg)
        study = optuna.load_study(
            study_name="bench", storage=storage, sampler=sampler, pruner=pruner
        )
        # What the study calls (for an RDB, Optuna's cache of finished trials in front of it)
        # and the storage itself, which the worker's heartbeats go to.
        clock = StorageClock(storage, *([study._storage] if study._storage is not storage else []))
        rdb = cfg.is_rdb
    except Exception as error:
        out.errors.append(f"open: {type(error).__name__}: {str(error)[:200]}")
        queue.put(out)
        return
    start.wait()
    steps = list(range(cfg.report_every, EPOCHS + 1, cfg.report_every))
    while True:
        try:
            live = study.get_trials(deepcopy=False, states=telling.LIVE)
            if len(live) >= n_trials:
                break
            began, stored = time.perf_counter(), clock.seconds
            trial = telling.ask_within(study, n_trials)
            if trial is None:
                continue
            trial.set_user_attr(WORKER_ATTR, f"bench:{index}")
            suggest(trial, space)
            coordination = time.perf_counter() - began
            first, beaten, state = 10 ** -(1 + 3 * (trial.number * 7919 % 1000) / 1000), 0.0, None
            for step in steps:
                time.sleep(trial_s / len(steps))  # the stand-in trainer's chunk of epochs
                t0 = time.perf_counter()
                trial.report(first * (step / steps[0]) ** -0.8, step)
                if rdb and time.monotonic() - beaten >= cfg.heartbeat_interval:
                    storage.record_heartbeat(trial._trial_id)
                    beaten = time.monotonic()
                pruned = trial.should_prune()
                coordination += time.perf_counter() - t0
                if pruned:
                    state = optuna.trial.TrialState.PRUNED
                    break
            t0 = time.perf_counter()
            trial.set_user_attr(RUN_ATTR, f"run-{trial.number}")
            if state is None:
                telling.tell(study, trial, first * (steps[-1] / steps[0]) ** -0.8)
            else:
                telling.tell(study, trial, state=state)
            coordination += time.perf_counter() - t0
            out.told.append(trial.number)
            out.coordination.append(coordination)
            out.storage.append(clock.seconds - stored)
        except Exception as error:
            out.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
            if len(out.errors) > 20:
                break
    queue.put(out)
