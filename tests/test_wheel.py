"""The built wheel on its own: installed into a fresh venv, away from the checkout, both entry
points run on the config it carries (pipeline/conf) and write their stores under mlruns/.

No download: the wheel is built from a copy of the package's files, and the fresh venv sees the
dependencies already installed for this interpreter through a `.pth` file naming their
site-packages directory (a plain path line: that directory's own `.pth` files, among them an
editable install's finder for the checkout, are not run). The checks that `pipeline` comes from
the fresh venv's site-packages keep the test honest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
# What setuptools needs to build the wheel: the package (its `conf` a symlink to ../conf),
# the config it links to, and the project metadata.
SOURCES = ("pyproject.toml", "README.md", "conf", "pipeline")
SMALL_SWEEP = [
    "objective=value",
    "study.n_trials=2",
    "train.epochs=100",
    "study.report_every=50",
    "study.population=2",
    # One depth, activation and optimizer: one compiled graph.
    "search.activation=[tanh]",
    "search.optimizer=[adam]",
    "search.n_layers.high=1",
]


def _env() -> dict[str, str]:
    """This process's environment without anything that would import the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}


def _run(args: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _copy_sources(target: Path) -> None:
    target.mkdir()
    for name in SOURCES:
        source = REPO_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, target / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding the wheel and seeing this interpreter's packages."""
    root = tmp_path_factory.mktemp("wheel")
    _copy_sources(root / "source")  # built from a copy: the checkout gets no build/ directory
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist",
          root / "source"], cwd=root)  # fmt: skip
    (wheel,) = (root / "dist").glob("pipeline-*.whl")
    _run([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=root)
    own = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root)
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(own.stdout.strip(), "dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def test_the_package_and_its_config_come_from_the_fresh_venv(installed: Path, tmp_path: Path):
    script = (
        "import pipeline, pipeline.config_values as c; print(pipeline.__file__); print(c.CONF_DIR)"
    )
    package, conf = _run([installed, "-c", script], cwd=tmp_path).stdout.split()
    venv = installed.parents[1]
    assert Path(package).is_relative_to(venv), package
    assert Path(conf).is_relative_to(venv) and not Path(conf).is_symlink(), conf
    assert {"sweep.yaml", "train.yaml"} <= {p.name for p in Path(conf).iterdir()}


def test_both_entry_points_run_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    swept = _run([installed, "-m", "pipeline.sweep", *SMALL_SWEEP], cwd=work, timeout=900)
    assert (work / "mlruns" / "mlflow.db").is_file(), swept.stdout
    assert (work / "mlruns" / "optuna.journal").is_file()
    trained = _run([installed, "-m", "pipeline.train", "train.epochs=100"], cwd=work)
    assert "open it: python -m pipeline.ui" in trained.stdout
    assert sorted(p.name for p in work.iterdir()) == ["mlruns"]  # Hydra wrote no outputs/
