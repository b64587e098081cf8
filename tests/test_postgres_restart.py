"""PostgreSQL restarted while 8 local workers run one study on it: nothing lost or doubled.

The server is a private one (`pg_cluster`), really restarted (`pg_ctl restart -m fast`) while
workers are mid-trial; the sweep is a real `python -m pipeline.sweep study.n_workers=8`
subprocess. The connections-cut case on the shared server, one worker: test_outage_e2e.py.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import servers
import sweeps
from optuna.trial import TrialState
from pg_cluster import private_cluster
from sweeping import NARROW_SPACE

from pipeline.names import TRIAL_TAG, WORKER_ATTR

N_TRIALS, N_WORKERS, NAME = 10, 8, "restarted"
TRACKING = "sqlite:///mlruns/mlflow.db"


def alive(process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the sweep ended early: {process.communicate()[1][-3000:]}")
    return True


def states(storage: str) -> dict[TrialState, int]:
    """How many trials are in each state; {} while the study or the server is not there."""
    try:
        study = sweeps.load_study(storage, NAME)
        trials = study.get_trials(deepcopy=False)
    except Exception:  # not created yet, or the server is restarting
        return {}
    counts: dict[TrialState, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restarted_while_8_workers_run_loses_nothing(tmp_path):
    with private_cluster() as cluster:
        storage = cluster.create_database("sweeps")
        args = [*sweeps.SMALL, *NARROW_SPACE, "train.epochs=2000", "study.report_every=500"]
        args += [f"study.n_trials={N_TRIALS}", f"study.n_workers={N_WORKERS}"]
        args += [f"study.storage={storage}", f"study.name={NAME}", "study.pruner.name=none"]
        # Eight workers compiling at once on two busy cores go long between heartbeats: give
        # them the grace the README advises on crowded nodes (the scenario is the restart).
        args += ["study.grace_period=180"]
        sweep = sweeps.start_sweep(tmp_path, *args)
        try:

            def mid_sweep() -> dict[TrialState, int] | None:
                alive(sweep)
                counts = states(storage)
                started = counts.get(TrialState.COMPLETE, 0) >= 1
                return counts if started and counts.get(TrialState.RUNNING, 0) >= 3 else None

            at_restart = servers.wait_until(mid_sweep, 480, "a trial done, 3 running", 0.5)
            cluster.restart()
            out, err = sweep.communicate(timeout=600)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.communicate()
        (tmp_path / "sweep.out").write_text(out), (tmp_path / "sweep.err").write_text(err)
        assert sweep.returncode == 0, f"{err[-3000:]}\n(output in {tmp_path})"
        assert "Traceback" not in out + err
        study, runs = sweeps.assert_books(storage, TRACKING, NAME, N_TRIALS, N_WORKERS, tmp_path)
        trials = study.get_trials()  # read while the server is still there
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == N_TRIALS
    assert at_restart[TrialState.RUNNING] >= 3  # workers were mid-trial when it went down
    # Who trained the finished trials (a trial given back as surplus when two workers asked the
    # last one at once, or failed before its first attribute, names no worker).
    workers = {t.user_attrs.get(WORKER_ATTR) for t in finished}
    assert None not in workers and len(workers) >= 4, workers  # shared among the workers
    by_number = {int(r.data.tags[TRIAL_TAG]): r for r in runs}
    assert set(by_number) <= {t.number for t in trials}  # no run for a trial not there
    assert not list((tmp_path / "mlruns" / "spool").glob("*.rec"))  # every record was sent
