"""The Optuna storage on PostgreSQL: a password in its URL never reaches any output, and
workers opening a fresh database at once all get the storage."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pg
import pytest
import sweeps

from pipeline.names import ROLE_TAG

TRACKING = "sqlite:///mlruns/mlflow.db"


@pytest.fixture
def storage_db():
    with pg.database() as name:
        yield name


PASSWORD = "s3cr3t-XYZ"


@pytest.mark.slow
@pytest.mark.postgres
def test_storage_password_never_leaks(tmp_path, storage_db):
    role = f"pipeline_pw_{secrets.token_hex(3)}"
    pg.execute("postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    try:
        pg.execute("postgres", f"ALTER DATABASE {storage_db} OWNER TO {role}")
        pg.execute(storage_db, f"GRANT ALL ON SCHEMA public TO {role}")
        outputs = []
        for i, storage in enumerate(
            [
                pg.url(storage_db, role, PASSWORD),
                f"postgresql://{role}:${{oc.env:PIPELINE_TEST_PW}}@127.0.0.1:5432/{storage_db}",
            ]
        ):
            result = sweeps.run_sweep(
                tmp_path,
                *sweeps.SMALL,
                "study.n_trials=1",
                f"study.storage={storage}",
                f"study.name=secret-{i}",
                PIPELINE_TEST_PW=PASSWORD,
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
            sweeps.assert_books(pg.url(storage_db), TRACKING, f"secret-{i}", 1, cwd=tmp_path)
        # An error naming the storage (unreachable port) must not print it either.
        bad = sweeps.run_sweep(
            tmp_path, "objective=value", f"study.storage=postgresql://u:{PASSWORD}@127.0.0.1:1/x"
        )
        assert bad.returncode == 2
        outputs.append(bad.stdout + bad.stderr)
    finally:
        pg.execute("postgres", f"ALTER DATABASE {storage_db} OWNER TO postgres")
        pg.execute(storage_db, f"REASSIGN OWNED BY {role} TO postgres")
        pg.execute(storage_db, f"DROP OWNED BY {role}")
        pg.execute("postgres", f"DROP ROLE {role}")
    for text in outputs:
        assert PASSWORD not in text
    client = sweeps.tracking_client(TRACKING, tmp_path)
    experiment = client.get_experiment_by_name("pipeline")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "study"]
    assert len(parents) == 2
    assert {r.data.params["storage"] for r in parents} == {
        f"postgresql://{role}:***@127.0.0.1:5432/{storage_db}"
    }
    for r in runs:
        everything = repr(r.data.params) + repr(r.data.tags) + repr(r.info)
        assert PASSWORD not in everything
    for path in Path(tmp_path, "mlruns").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.postgres
def test_workers_opening_a_fresh_database_together_all_get_the_storage(storage_db):
    # Workers started at once on an empty database race to create Optuna's schema.
    from dataclasses import replace

    from pipeline.defaults import load
    from pipeline.sweeping.study import make_storage

    cfg = replace(load("sweep").study, storage=pg.url(storage_db))
    start = threading.Barrier(4)
    opened, errors = [], []

    def open_storage() -> None:
        start.wait()
        try:
            opened.append(make_storage(cfg))
        except Exception as error:  # collected: the assertion below names it
            errors.append(error)

    threads = [threading.Thread(target=open_storage) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(opened) == 4
    assert opened[0].get_all_studies() == []
