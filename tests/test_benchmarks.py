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
    "startup.py": (["--repeats", "1", "train.epochs=200"], "beyond TensorFlow's import"),
    "memory.py": (["--trials", "2", "--epochs", "200", "objective=value"], "USS at its peak"),
    "tracking.py": (["--epochs", "200", "--repeats", "1"], "train + record, background"),
    "workers.py": (
        ["--trials", "2", "--epochs", "200", "--workers", "1", "--n-jobs", "1", "2"],
        "1 worker(s) x 2 thread(s) vs 1 worker(s) x 1 thread(s)",
    ),
    "coordination.py": (
        ["--storages", "journal", "--workers", "2", "--history", "20", "--trials-per-worker", "2",
         "--min-trials", "4", "--trial-seconds", "0.1"],
        "journal       20   2      4",
    ),
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


@pytest.mark.slow
def test_quality_times_both_checkouts_against_the_same_levels(tmp_path: Path) -> None:
    """`--baseline-ref` runs each cell with that checkout too and prints the times' ratios."""
    args = ["--problems", "log", "--objectives", "value", "--seeds", "0", "--trials", "2",
            "--epochs", "200", "--baseline-ref", "HEAD"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "quality.py"), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("log/value seed 0")]
    assert len(rows) == 2 and "[ref]" in rows[0] and "[ref]" not in rows[1], done.stdout
    times = [line for line in done.stdout.splitlines() if line.startswith("  time to ")]
    assert len(times) == 2, done.stdout  # the seed's, then the medians'
    assert "base/100" in times[0] and "best" in times[0] and "ref/this" in times[0]
