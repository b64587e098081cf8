"""The study storage for many workers: a worker's small PostgreSQL pool, `study.storage=grpc://`
through Optuna's storage proxy, and `python -m pipeline.sweeping.storage` that runs the proxy."""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace

import pg
import pytest
import servers
import sweeps

from pipeline.config_values import ConfigError
from pipeline.sweeping import storage

PROXY = [sys.executable, "-m", "pipeline.sweeping.storage"]
TRACKING = "sqlite:///mlruns/mlflow.db"


def test_storage_urls_are_read_or_refused_in_one_line():
    assert storage.read_storage("grpc://proxy-host:13000") == "grpc://proxy-host:13000"
    assert storage.grpc_address("grpc://10.0.0.5:13000/") == ("10.0.0.5", 13000)
    for bad in ("grpc://proxy-host", "grpc://:13000", "grpc://h:99999", "redis://h/0"):
        with pytest.raises(ConfigError, match=r"^study\.storage="):
            storage.read_storage(bad)


def test_a_worker_engine_holds_one_connection_and_may_open_one_more():
    options = storage.engine_kwargs("postgresql://u@h/db")
    assert (options["pool_size"], options["max_overflow"], options["pool_pre_ping"]) == (1, 1, True)
    assert storage.engine_kwargs("sqlite:///x.db") == {}


def test_the_proxy_command_refuses_bad_input_in_one_line(tmp_path):
    for args, expected in [
        (["not-a-url"], "error: url=not-a-url: must be a database URL, e.g. postgresql://host/db"),
        (["grpc://h:1"], "error: url=grpc://h:1: must be a database URL"),
        (["postgresql://u:pw@127.0.0.1:1/x", "--port", "13001"], "cannot connect ("),
        (["sqlite:///x.db", "--port", "0"], "error: --port=0: must be a port number, 1-65535"),
    ]:
        done = subprocess.run(
            [*PROXY, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert expected in done.stderr and "pw" not in done.stderr
    assert not list(tmp_path.iterdir())


def test_a_sweep_on_an_unreachable_proxy_is_one_line(tmp_path):
    port = servers.free_port()
    done = sweeps.run_sweep(tmp_path, "objective=value", f"study.storage=grpc://127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: study.storage=grpc://127.0.0.1:{port}: cannot connect")


def connections(database: str) -> int:
    """Client connections PostgreSQL holds open to `database`."""
    import psycopg

    with psycopg.connect(host=pg.PG_HOST, user=pg.PG_USER, dbname="postgres") as admin:
        row = admin.execute(
            "select count(*) from pg_stat_activity where datname = %s", (database,)
        ).fetchone()
    return int(row[0])


@pytest.mark.postgres
def test_a_worker_storage_uses_at_most_two_connections_under_load():
    import optuna

    from pipeline.defaults import load
    from pipeline.sweeping.study import make_storage

    with pg.database() as name:
        cfg = replace(load("sweep").study, storage=pg.url(name))
        rdb = make_storage(cfg)
        study = optuna.create_study(storage=rdb, study_name="pool")
        start, peak = threading.Barrier(6), []

        def calls() -> None:  # a worker's threads would never do this; the pool must hold
            start.wait()
            for _ in range(20):
                study.tell(study.ask(), 1.0)
                peak.append((rdb.engine.pool.checkedout(), connections(name)))

        threads = [threading.Thread(target=calls) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(study.trials) == 120
        # Two at once at most, as SQLAlchemy counts them (its default pool let all six in);
        # PostgreSQL may still list an overflow connection closed a moment ago.
        assert max(out for out, _ in peak) <= 2, peak
        assert max(held for _, held in peak) <= 3, peak
        rdb.engine.dispose()


@contextmanager
def proxy(database: str):
    """`python -m pipeline.sweeping.storage` in front of `database`; yields its grpc:// URL."""
    port = servers.free_port()
    process = subprocess.Popen(
        [*PROXY, pg.url(database), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "Optuna storage proxy on grpc://" in process.stdout.readline()
        url = f"grpc://127.0.0.1:{port}"
        storage.reachable(url, "study.storage")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_sweep_through_the_grpc_proxy_keeps_the_books(tmp_path):
    with pg.database() as name, proxy(name) as url:
        done = sweeps.run_sweep(
            tmp_path, *sweeps.SMALL, "study.n_trials=3", f"study.storage={url}", "study.name=px"
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        # The books read straight from PostgreSQL: the proxy wrote through.
        sweeps.assert_books(pg.url(name), TRACKING, "px", 3, cwd=tmp_path)
        assert connections(name) <= storage.PROXY_POOL["pool_size"] + 1
