"""The benchmark scripts still run: each at a tiny size, in a fresh process, printing its figures.

They build trainer specs and sweeps through the package's APIs, so an API change that forgets
them would otherwise surface only when someone next measures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "trainer.py": (
        ["--epochs", "200", "--fit-epochs", "3", "--population", "2", "--repeats", "1",
         "--report-every", "100"],
        "order 2 / order 1 per epoch",
    ),
    "tracking.py": (["--epochs", "200", "--repeats", "1"], "train + record, background"),
    "workers.py": (["--trials", "2", "--epochs", "200", "--workers", "1"], "2-trial study"),
    "quality.py": (
        ["--problems", "log", "gauss", "--objectives", "value", "residual", "--seeds", "0",
         "--trials", "2", "--epochs", "200"],
        "gauss/residual seed 0",
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    args, expected = SMALL[script]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
