"""The storages of `benchmarks/coordination.py`: PostgreSQL's administration (the histories'
template databases, connections and backends watched while workers run) and the gRPC proxy's
port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from simulated_worker import history_trials, study_cfg

PG = dict(host="127.0.0.1", port=5432, user="postgres")


def admin(sql: str, database: str = "postgres") -> list:
    """`sql` on its own autocommit connection to `database`; its rows, if any."""
    import psycopg

    with psycopg.connect(dbname=database, autocommit=True, **PG) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process of this machine has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_database(database: str, stop, started, seen: dict) -> None:
    """Every 0.1 s: client connections to `database` (autovacuum's are not clients), at peak in
    all, per process (the workers name themselves with PGAPPNAME) and once all had opened the
    storage (`started`); and the CPU its backends used since `started`."""
    sql = ("select pid, application_name from pg_stat_activity where datname = "
           f"'{database}' and backend_type = 'client backend'")  # fmt: skip
    cpu, base = {}, None
    while not stop.is_set():
        rows = admin(sql)
        per = [sum(1 for _, a in rows if a == app) for app in {a for _, a in rows}]
        seen["peak"] = max(seen.get("peak", 0), len(rows))
        seen["per_process"] = max([seen.get("per_process", 0), *per])
        cpu.update({pid: cpu_seconds(pid) for pid, _ in rows})
        if started.is_set():
            base = dict(cpu) if base is None else base
            seen["run_peak"] = max(seen.get("run_peak", 0), len(rows))
            seen["cpu"] = sum(c - base.get(pid, 0.0) for pid, c in cpu.items())
        stop.wait(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited: {process.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)  # polling a server that is starting
    raise RuntimeError("the proxy did not start")


def prepare(kind: str, history: int, scratch: Path) -> str:
    """A storage holding the study `bench` with `history` finished trials: made once per kind
    and size (a journal file, a template database), copied for every run."""
    import optuna

    from pipeline.sweeping.study import make_pruner, make_sampler, make_storage

    key = f"coordination_history_{history}"
    if kind == "journal":
        source = scratch / f"{key}.journal"
        if not source.exists():
            study = optuna.create_study(storage=make_storage(study_cfg(str(source))),
                                        study_name="bench")  # fmt: skip
            study.add_trials(history_trials(history))
        return str(source)
    if admin(f"select 1 from pg_database where datname = '{key}'"):
        return key
    admin(f"drop database if exists {key}_tmp with (force)")
    if history > BASE and history % BASE == 0:  # copies of the first BASE, in SQL
        admin(f"create database {key}_tmp template {prepare(kind, BASE, scratch)}")
        copy_history(f"{key}_tmp", history // BASE)
    else:
        admin(f"create database {key}_tmp")
        url = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{key}_tmp"
        cfg = study_cfg(url)
        storage = make_storage(cfg)
        study = optuna.create_study(storage=storage, study_name="bench",
                                    sampler=make_sampler(cfg), pruner=make_pruner(cfg))  # fmt: skip
        study.add_trials(history_trials(history))
        storage.engine.dispose()
    admin(f"alter database {key}_tmp rename to {key}")
    return key


BASE = 1000  # PostgreSQL histories past this are copies of it (Optuna writes ~10 trials/s here)
CHILDREN = {  # Optuna's tables of a trial's data: their id, their other columns
    "trial_params": ("param_id", "param_name, param_value, distribution_json"),
    "trial_values": ("trial_value_id", "objective, value, value_type"),
    "trial_intermediate_values": (
        "trial_intermediate_value_id", "step, intermediate_value, intermediate_value_type"),
    "trial_user_attributes": ("trial_user_attribute_id", "key, value_json"),
    "trial_system_attributes": ("trial_system_attribute_id", "key, value_json"),
}  # fmt: skip


def copy_history(database: str, copies: int) -> None:
    """The study's BASE trials `copies` times over in SQL, renumbered (same params and values):
    writing 10,000 trials through Optuna took 16 minutes on this machine."""
    (last, count), = admin("select max(trial_id), count(*) from trials", database)  # fmt: skip
    assert count == last == BASE, (count, last)
    k = f"generate_series(1, {copies - 1}) k"
    sqls = [f"insert into trials select trial_id + k * {BASE}, number + k * {BASE}, study_id, "
            f"state, datetime_start, datetime_complete from trials, {k}"]  # fmt: skip
    for table, (key, columns) in [("trials", ("trial_id", "")), *CHILDREN.items()]:
        if columns:
            sqls.append(f"insert into {table} ({key}, trial_id, {columns}) select {key} + k * "
                        f"(select max({key}) from {table}), trial_id + k * {BASE}, {columns} "
                        f"from {table}, {k}")  # fmt: skip
        sqls.append(f"select setval(pg_get_serial_sequence('{table}', '{key}'), "
                    f"(select max({key}) from {table}))")  # fmt: skip
    for sql in sqls:
        admin(sql, database)
