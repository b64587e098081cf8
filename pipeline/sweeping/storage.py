"""Where a study lives: a journal file, an RDB (PostgreSQL) or Optuna's gRPC proxy in front of one.

Many workers on one PostgreSQL must not exhaust its `max_connections` (100 by default): a worker
makes one storage call at a time, so its engine keeps one pooled connection and may open one
more. For hundreds of workers `study.storage=grpc://host:port` sends every call through Optuna's
`GrpcStorageProxy` to one proxy process (`python -m pipeline.sweeping.storage <rdb-url> --port
N`), which alone holds database connections. Optuna's proxy does not carry heartbeats: a trial
of a worker that dies behind it is failed and retried only when a worker on the same host sees
its process gone, or by `check=true` later, not after `study.grace_period`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna

from pipeline.config_values import ConfigError
from pipeline.settings import redact
from pipeline.sweeping.experimental import experimental_quietly

RDB_SCHEMES = ("postgresql", "mysql", "sqlite")  # backend names, any driver
GRPC = "grpc://"
SCHEMA_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 5
POOL = {"pool_size": 1, "max_overflow": 1}  # a worker: one storage call at a time
PROXY_POOL = {"pool_size": 8, "max_overflow": 4}  # the proxy: its threads share these
PROXY_THREADS = 16
ALLOWED = (
    "must be postgresql://user@host:port/db, mysql://…, sqlite:///file, grpc://host:port "
    "(Optuna's storage proxy) or a file path"
)


def read_storage(value: Any, key: str = "study.storage") -> str:
    """A journal file path, an RDB URL or grpc://host:port (raises ConfigError naming `key`)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "must be a journal file path or a database URL")
    if value.startswith(GRPC):
        grpc_address(value, key)
        return value
    if "://" not in value:
        if os.path.isdir(value):
            raise ConfigError(key, value, "is a directory; give a journal file path")
        return value
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ConfigError(key, redact(value), ALLOWED) from None
    if url.get_backend_name() not in RDB_SCHEMES:
        raise ConfigError(key, redact(value), ALLOWED)
    if url.get_backend_name() != "sqlite" and (not url.host or not url.database):
        raise ConfigError(key, redact(value), f"needs a host and a database; {ALLOWED}")
    return value


def grpc_address(value: str, key: str = "study.storage") -> tuple[str, int]:
    """(host, port) of grpc://host:port."""
    host, _, port = value.removeprefix(GRPC).rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, value, "must be grpc://host:port (Optuna's storage proxy)")
    return host, int(port)


def proxy_client(url: str, key: str = "study.storage") -> optuna.storages.GrpcStorageProxy:
    """Optuna's client of the storage proxy at grpc://host:port ("experimental" in Optuna 5)."""
    host, port = grpc_address(url, key)
    with experimental_quietly():
        return optuna.storages.GrpcStorageProxy(host=host, port=port)


def engine_kwargs(url: str, pool: dict[str, int] | None = None) -> dict[str, Any]:
    """SQLAlchemy engine options: PostgreSQL gets a connect timeout, a small pool (`pool`,
    default a worker's `POOL`) and a ping that replaces connections a restart dropped."""
    if not url.startswith("postgresql"):
        return {}
    return {
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
        "pool_pre_ping": True,
        **(POOL if pool is None else pool),
    }


def open_storage(
    url: str,
    heartbeat_interval: int,
    grace_period: int,
    stale_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
    pool: dict[str, int] | None = None,
) -> optuna.storages.BaseStorage:
    """The storage at `url`: a journal file (local processes), the gRPC proxy, or an RDB with
    heartbeats (a trial silent for `grace_period` seconds goes to `stale_callback`)."""
    if url.startswith(GRPC):
        return proxy_client(url)
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        lock = JournalFileOpenLock(url)
        return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=lock))
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    heartbeats: dict[str, Any] = {}
    if stale_callback is not None:
        heartbeats = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": stale_callback,
        }
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with experimental_quietly():  # heartbeats are "experimental" in Optuna
                kwargs = engine_kwargs(url, pool)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **heartbeats)
        except (IntegrityError, ProgrammingError):
            # Workers starting together on an empty database race to create Optuna's tables;
            # the loser retries and finds them made.
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def reachable(url: str, key: str) -> None:
    """Fail within seconds (ConfigError naming `key`) when nothing answers at `url`: a
    database (SQLAlchemy URL) or the gRPC storage proxy."""
    try:
        if url.startswith(GRPC):
            proxy_client(url, key).wait_server_ready(CONNECT_TIMEOUT_S)
            return
        from sqlalchemy import create_engine, text

        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgres") else {}
        engine = create_engine(url, connect_args=connect_args)
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except ConfigError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(key, redact(url), f"cannot connect ({redact(first)})") from None


def serve(url: str, host: str, port: int) -> None:
    """Optuna's gRPC proxy in front of the RDB at `url`, until interrupted (it caches the
    storage as Optuna advises: `get_storage` over an `RDBStorage` with the proxy's pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from optuna.storages import get_storage, run_grpc_proxy_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(url, 0, 0, None, pool=PROXY_POOL)
    pool = ThreadPoolExecutor(max_workers=PROXY_THREADS)
    print(f"Optuna storage proxy on grpc://{host}:{port} for {redact(url)}", flush=True)
    run_grpc_proxy_server(get_storage(rdb), host=host, port=port, thread_pool=pool)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.sweeping.storage <rdb-url> --port N [--host H]`; bad input is one
    line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.sweeping.storage",
        description="Optuna's gRPC storage proxy in front of a PostgreSQL (or other RDB) study "
        "storage; workers then use study.storage=grpc://host:port.",
    )
    parser.add_argument("url", help="the RDB URL, e.g. postgresql://user@db-host/sweeps")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--port", type=int, default=13000, help="port (default 13000)")
    args = parser.parse_args(argv)
    try:
        url = read_storage(args.url, "url")
        if "://" not in url or url.startswith(GRPC):
            raise ConfigError("url", url, "must be a database URL, e.g. postgresql://host/db")
        if not 0 < args.port < 65536:
            raise ConfigError("--port", args.port, "must be a port number, 1-65535")
        reachable(url, "url")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        serve(url, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:  # grpc: "Failed to bind to address"
        if "bind" not in str(error).lower():
            raise
        print(f"error: port {args.port} is in use (--port {args.port})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
