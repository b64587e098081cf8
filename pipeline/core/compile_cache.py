"""XLA's persistent compilation cache, shared safely by every process that trains.

TensorFlow saves each compiled graph to `--tf_xla_persistent_cache_directory` and loads it in
later processes instead of compiling again (a repeated or resumed sweep, every `pipeline.train`).
Used as is, that directory is unsafe to share: TF writes entries in place, and a process that
reads one half-written fails its training (OutOfRangeError). So each process gets a private
directory of hard links to the complete, published entries; what it compiles is published into
the shared directory by an atomic link once written. Entries are kept per TensorFlow version and
CPU (an executable built for another CPU's features may not run here). Standard library only:
this runs before TensorFlow is imported.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

FLAG = "--tf_xla_persistent_cache_directory"
_PRIVATE_PREFIX = ".proc-"
_state: dict[str, Path] = {}


def machine_key() -> str:
    """`tf-<version>-<hash of the CPU's model and feature flags>`: entries are only reused where
    they were built for the same TensorFlow and the same instruction set."""
    cpu = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu += "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:  # not Linux: the architecture and processor name are what Python knows
        pass
    digest = hashlib.sha256(cpu.encode()).hexdigest()[:12]
    return f"tf-{_tensorflow_version()}-{digest}"


def _tensorflow_version() -> str:
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def enable(directory: str | os.PathLike) -> Path | None:
    """Point this process's XLA at a private view of the shared cache under `directory`.

    Must run before TensorFlow is imported (XLA reads TF_XLA_FLAGS once). TF logs every
    cache load at ERROR level ("Error parsing text-format", a CPU-feature note) although the
    load succeeds, so TF_CPP_MIN_LOG_LEVEL becomes 3 unless it asks for more than the common
    quiet 2 (0 or 1: someone debugging TF sees everything).
    Returns the shared directory for this TensorFlow and CPU, or None (with a warning) where
    it cannot be written: the cache saves time, and its absence must not stop training.
    """
    shared = Path(directory).resolve() / machine_key()
    private = shared / f"{_PRIVATE_PREFIX}{socket.gethostname()}-{os.getpid()}"
    try:
        shared.mkdir(parents=True, exist_ok=True)
        _remove_dead_views(shared)
        shutil.rmtree(private, ignore_errors=True)
        private.mkdir()
        for entry in shared.glob("*.pb"):
            _place(entry, private / entry.name)
    except OSError as error:
        shutil.rmtree(private, ignore_errors=True)
        print(f"warning: train.compile_cache={directory}: {error}; compiling in this process "
              "without the cache", file=sys.stderr)  # fmt: skip
        return None
    flags = [f for f in os.environ.get("TF_XLA_FLAGS", "").split() if not f.startswith(FLAG)]
    os.environ["TF_XLA_FLAGS"] = " ".join([*flags, f"{FLAG}={private}"])
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") not in ("0", "1"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _state.update(shared=shared, private=private)
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return shared


def publish() -> list[str]:
    """Share the entries this process compiled since the last call (names of those added).

    Call after a graph's first run: TF has written its entry by then. A link appears whole or
    not at all, and an entry another process published first is left as it is.
    """
    if "private" not in _state:
        return []
    shared, private = _state["shared"], _state["private"]
    added = []
    try:
        for entry in private.glob("*.pb"):
            target = shared / entry.name
            if not target.exists() and _place(entry, target):
                added.append(entry.name)
    except OSError:  # the cache was removed or filled its disk: training goes on without it
        pass
    return added


def _place(source: Path, target: Path) -> bool:
    """Link `source` at `target` (a copy renamed into place where links are not supported);
    False if `target` exists already."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        return True


def _remove_dead_views(shared: Path) -> None:
    """Delete private views left by processes of this host that have ended (killed ones)."""
    host = f"{_PRIVATE_PREFIX}{socket.gethostname()}-"
    for view in shared.glob(f"{host}*"):
        pid = view.name.removeprefix(host)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(view, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
