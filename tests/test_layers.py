"""The package's layers: `core` (numerics) knows nothing of tracking or sweeping, nor of MLflow
and Optuna, so the trainer can be reused, tested and timed on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
# `config_values` owns ConfigError, the one-line error every layer raises, and where the config
# lives; the typed settings sit above core, which owns the spec types it takes.
CORE_MAY_IMPORT = ("pipeline.core", "pipeline.config_values")
FOREIGN = ("mlflow", "optuna", "pipeline.tracking", "pipeline.sweeping")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_only_core_and_the_settings(path: Path) -> None:
    own = {m for m in _imports(path) if m.split(".")[0] == "pipeline"}
    stray = {m for m in own if m != "pipeline" and not m.startswith(CORE_MAY_IMPORT)}
    assert not stray, f"{path.name} imports {sorted(stray)}"
    assert not {m for m in _imports(path) if m.split(".")[0] in ("mlflow", "optuna")}


def test_core_modules_import_each_other_without_a_cycle() -> None:
    """Each core module builds on modules below it: no cycle, not even through an import
    inside a function (which would hide one from Python until that function runs)."""
    modules = {p.stem: p for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"}
    below = {
        name: {m.split(".")[2] for m in _imports(path) if m.startswith("pipeline.core.")}
        & set(modules)
        for name, path in modules.items()
    }
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(below[name]):
            assert state.get(other) != "open", " -> ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [])


def test_the_whole_core_loads_without_mlflow_optuna_or_the_other_layers() -> None:
    modules = sorted(p.stem for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import pipeline.core.{m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.startswith({FOREIGN!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_settings_import_no_entry_point_and_nothing_imports_the_defaults() -> None:
    """The arrows run one way: entry points -> settings -> core, not even through an import
    inside a function; `pipeline.defaults` (settings without a command line, which calls the
    entry points' readers) sits above them all, for benchmarks and tests only."""
    above = ("pipeline.train", "pipeline.sweep", "pipeline.sweeping", "pipeline.tracking")
    stray = {m for m in _imports(PACKAGE / "settings.py") if m.startswith(above)}
    assert not stray, sorted(stray)
    users = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "defaults.py" and "pipeline.defaults" in _imports(path)
    ]
    assert not users, users
