"""Test helpers: a throwaway PostgreSQL database.

PostgreSQL runs on 127.0.0.1:5432 with trust auth. When it is unreachable the tests that need
it skip with the reason, except under CI (env CI=true), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`; under CI=true fail instead, so a missing service is never hidden."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _connect(database: str = "postgres"):
    import psycopg

    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=database,
        connect_timeout=3,
        autocommit=True,
    )


def require_postgres() -> None:
    """Skip (or fail under CI) unless PostgreSQL answers on 127.0.0.1:5432."""
    try:
        _connect().close()
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        skip_or_fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} ({first})")


def url(database: str, user: str = PG_USER, password: str | None = None) -> str:
    secret = f":{password}" if password else ""
    return f"postgresql://{user}{secret}@{PG_HOST}:{PG_PORT}/{database}"


@contextmanager
def database() -> Iterator[str]:
    """A fresh database `pipeline_test_<random>`; yields its name, drops it afterwards."""
    require_postgres()
    name = f"pipeline_test_{secrets.token_hex(6)}"
    admin = _connect()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def execute(database_name: str, sql: str) -> None:
    """Run one statement on `database_name` (autocommit)."""
    connection = _connect(database_name)
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()
