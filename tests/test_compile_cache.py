"""XLA's persistent compilation cache: shared only through complete entries, reused by a later
process with the same results, quiet, and never left half-written for another process to read."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import compile_cache

REPO_ROOT = Path(__file__).resolve().parents[1]

# Trains the post's network for a few epochs in a fresh process with the cache at argv[1] and
# prints its validation errors exactly (repr), so two processes' results compare bit for bit.
TRAIN = """
import sys
from pipeline.entry import import_tensorflow_quietly
import_tensorflow_quietly(sys.argv[1])
from pipeline.core.data import make_dataset
from pipeline.core.model import seeded_weights
from pipeline.core.problem_config import shipped
from pipeline.core.trainer import TrainSpec, train
from pipeline.defaults import load
from pipeline.settings import CONSTANT_RATE
data = make_dataset(load("train").data, shipped("log"), 1.0)
spec = TrainSpec("sigmoid", "sgd", 0.1, 200, CONSTANT_RATE, "derivative", 1.0, 1.0, 50, 100)
result = train(spec, seeded_weights([10, 10], 0), data)
print(repr(result.val_value_mse), repr(result.val_deriv_mse))
"""


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """`enable` as a new process would run it, its environment restored afterwards."""
    monkeypatch.setattr(compile_cache, "_state", {})
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0 --tf_xla_persistent_cache_directory=/x")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.usefixtures("fresh_state")
def test_enable_gives_this_process_a_private_view_of_the_published_entries(tmp_path: Path):
    shared = tmp_path / compile_cache.machine_key()
    shared.mkdir()
    (shared / "a.pb").write_bytes(b"published")
    (shared / "b.pb.123.tmp").write_bytes(b"a copy not yet renamed into place")
    dead = shared / f".proc-{os.uname().nodename}-{_dead_pid()}"
    dead.mkdir()
    (dead / "c.pb").write_bytes(b"left by a killed process")

    assert compile_cache.enable(tmp_path) == shared
    private = shared / f".proc-{os.uname().nodename}-{os.getpid()}"
    flags = os.environ["TF_XLA_FLAGS"].split()
    # Other flags kept; an inherited cache flag (a parent's private view) replaced by ours.
    assert flags == ["--tf_xla_auto_jit=0", f"--tf_xla_persistent_cache_directory={private}"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert sorted(p.name for p in private.iterdir()) == ["a.pb"]
    assert (private / "a.pb").read_bytes() == b"published"
    assert not dead.exists()  # its process has ended


@pytest.mark.usefixtures("fresh_state")
def test_publish_shares_new_entries_and_leaves_existing_ones(tmp_path: Path) -> None:
    shared = compile_cache.enable(tmp_path)
    private = Path(os.environ["TF_XLA_FLAGS"].split("=")[-1])
    (private / "new.pb").write_bytes(b"compiled here")
    (private / "both.pb").write_bytes(b"compiled here too")
    (shared / "both.pb").write_bytes(b"published first by another process")

    assert compile_cache.publish() == ["new.pb"]
    assert (shared / "new.pb").read_bytes() == b"compiled here"
    assert (shared / "both.pb").read_bytes() == b"published first by another process"
    assert compile_cache.publish() == []


@pytest.mark.parametrize(("given", "level"), [(None, "3"), ("2", "3"), ("3", "3"), ("0", "0")])
@pytest.mark.usefixtures("fresh_state")
def test_tf_logs_are_quiet_unless_someone_debugs_tf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, level: str
) -> None:
    # The usual quiet setting (2) still shows ERROR lines, and TF writes one for every load.
    if given is not None:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", given)
    compile_cache.enable(tmp_path)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level


def test_publish_without_a_cache_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_cache, "_state", {})
    assert compile_cache.publish() == []


def _train(cache: Path, **env: str) -> subprocess.CompletedProcess:
    # As the tests' own subprocesses run: TF_CPP_MIN_LOG_LEVEL=2, the usual quiet setting.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run(
        [sys.executable, "-c", TRAIN, str(cache)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )


def test_a_later_process_loads_the_graph_and_trains_the_same(tmp_path: Path) -> None:
    cold = _train(tmp_path)
    shared = tmp_path / compile_cache.machine_key()
    entries = sorted(shared.glob("*.pb"))
    assert len(entries) == 1  # one graph (the derivative objective's), published whole
    assert not list(shared.glob(".proc-*"))  # each process removes its private view

    # TF logs each load at ERROR level although it succeeds; users see none of it.
    warm = _train(tmp_path)
    assert warm.stdout == cold.stdout
    assert not re.search(r"^[EW]\d{4}", warm.stderr, re.MULTILINE), warm.stderr

    # TF's own log says whether it loaded the entry instead of compiling.
    logged = _train(
        tmp_path, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=1"
    )
    assert "Loading cached entry" in logged.stderr
    assert logged.stdout == cold.stdout
    assert sorted(shared.glob("*.pb")) == entries


@pytest.mark.usefixtures("fresh_state")
def test_a_cache_that_cannot_be_written_warns_and_training_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache's directory would go")
    assert compile_cache.enable(blocked) is None
    assert "persistent_cache_directory=/x" in os.environ["TF_XLA_FLAGS"]  # left as it was
    assert capsys.readouterr().err.startswith(f"warning: train.compile_cache={blocked}: ")
    assert compile_cache.publish() == []


@pytest.mark.usefixtures("fresh_state")
def test_publish_on_a_full_disk_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = compile_cache.enable(tmp_path)
    private = Path(os.environ["TF_XLA_FLAGS"].split("=")[-1])
    (private / "new.pb").write_bytes(b"compiled here")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", full)
    monkeypatch.setattr(shutil, "copyfile", full)
    assert compile_cache.publish() == []
    assert not (shared / "new.pb").exists()
