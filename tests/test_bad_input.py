"""Bad input: a wrong setting, an unknown objective, an unreachable server or an existing study
of the other objective stops the sweep with one error line, creating or changing nothing.

Sweeps run as real subprocesses (`python -m pipeline.sweep`, cwd = a temp dir).
"""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
from pathlib import Path

import pytest
import servers
import sweeps

JOURNAL = "mlruns/optuna.journal"


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `directory`: (mtime_ns, bytes)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def closed_port() -> int:
    port = servers.free_port()
    with socket.socket() as s:  # nothing listens there once the probe socket is closed
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


BAD_INPUT = [
    (["study.sampler.name=foo"], "study.sampler.name"),
    (["study.pruner.name=foo"], "study.pruner.name"),
    (["search.learning_rate.low=2", "search.learning_rate.high=1"], "search.learning_rate.low"),
    (["search.learning_rate.low=0"], "search.learning_rate.low"),
    (["search.units.low=0"], "search.units"),
    (["search.n_layers.low=0"], "search.n_layers"),
    (["train.epochs=0"], "train.epochs"),
    (["study.n_trials=0"], "study.n_trials"),
    (["study.n_workers=0"], "study.n_workers"),
    (["study.n_jobs=0"], "study.n_jobs"),
    (["study.n_jobs=many"], "study.n_jobs"),
    (["data.x_min=0"], "data.x_min"),
    (["data.x_min=2.0"], "data.x_max"),
    (["data.n_train=1"], "data.n_train"),
    (["study.storage=postgresql://"], "study.storage"),
    (["tracking.outage_timeout=0"], "tracking.outage_timeout"),
    # Bad only when the sampler or pruner is built: still before the journal or compile cache.
    (["+study.pruner.options.bogus=1"], "study.pruner.options"),
    (["+study.sampler.options.bogus=1"], "study.sampler.options"),
    pytest.param(
        ["study.sampler.name=gp"],
        "study.sampler.name",
        marks=pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="has torch"),
        id="study.sampler.name=gp without torch",
    ),
]


def assert_one_error_line(result: subprocess.CompletedProcess, key: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert re.match(rf"error: {re.escape(key)}[\w.]*=.*: .+", lines[0]), lines[0]


def _id(case: tuple | object) -> str:
    return case.id if hasattr(case, "marks") else " ".join(case[0])


@pytest.mark.parametrize(("overrides", "key"), BAD_INPUT, ids=[_id(c) for c in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, overrides, key):
    result = sweeps.run_sweep(tmp_path, "objective=value", *overrides, timeout=60)
    assert_one_error_line(result, key)
    assert not list(tmp_path.iterdir()), "nothing may be created"


def test_unknown_objective_is_hydras_error_without_traceback(tmp_path):
    result = sweeps.run_sweep(tmp_path, "objective=unknown", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "objective" in result.stderr and "unknown" in result.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    "override",
    [
        f"study.storage=postgresql://postgres@127.0.0.1:{closed_port()}/test",
        f"tracking.uri=http://127.0.0.1:{closed_port()}",
    ],
    ids=["postgres", "mlflow"],
)
def test_unreachable_server_fails_fast(tmp_path, override):
    # Waiting for the server (an outage: tracking.outage_timeout, 300 s by default) would run
    # into the 60 s timeout, and its "waiting" line would be a second line on stderr; no
    # wall-clock bound of our own, which a loaded machine broke.
    result = sweeps.run_sweep(tmp_path, "objective=value", override, timeout=60)
    assert_one_error_line(result, override.partition("=")[0])
    assert not (tmp_path / "mlruns").exists()


def test_existing_study_of_other_objective_is_refused_untouched(tmp_path):
    from dataclasses import replace

    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.study import (
        make_pruner,
        make_sampler,
        make_storage,
        open_study,
    )

    cfg = replace(load("sweep").study, storage=str(tmp_path / JOURNAL))
    study, _ = open_study(make_storage(cfg), "same", "value", make_sampler(cfg), make_pruner(cfg))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    before = snapshot(tmp_path)
    result = sweeps.run_sweep(tmp_path, "objective=derivative", "study.name=same", timeout=60)
    assert_one_error_line(result, "study.name")
    assert "objective=value" in result.stderr
    assert snapshot(tmp_path) == before
    assert len(sweeps.load_study(JOURNAL, "same", tmp_path).trials) == 1
