"""Regenerate the images under docs/ from a real short sweep and the MLflow UI itself.

    .venv/bin/python scripts/make_docs.py            # sweep in a temporary folder, then shoot
    .venv/bin/python scripts/make_docs.py --workdir /tmp/docs-sweep --reuse   # reuse a sweep

Writes docs/fit.png, docs/derivative.png, docs/loss.png (the derivative study's best trial, as
logged by the pipeline), docs/optimization_history.png (that study's plot) and two screenshots
of the MLflow UI served by `python -m pipeline.ui`: docs/runs.png (the runs table, studies
expanded to their trials) and docs/compare.png (the compare view of the study's trials).
Needs Debian's /usr/bin/chromium and the `playwright` package (the `dev` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.names import PARENT_TAG, ROLE_TAG
from pipeline.ui import CHROMIUM_ARGS

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
RUN_NAME_CELL = '[role=gridcell][col-id="attributes.`Run Name`"]'
# Base-10 logs on the chart: learning rates and errors span decades and MLflow's axes are linear
# (with plain values every good trial sits on the zero line and one bad trial sets the colours).
CHART_PARAMS = ("n_layers", "n_params", "activation", "optimizer", "log10_learning_rate")
CHART_METRIC = "log10_objective_value"
MAX_PNG_BYTES = 300_000


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def sweep(workdir: Path, n_trials: int, epochs: int) -> None:
    """Both objectives' studies, as a user would run them, in `workdir`."""
    command = [
        sys.executable,
        "-m",
        "pipeline.sweep",
        f"study.n_trials={n_trials}",
        f"train.epochs={epochs}",
    ]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=workdir, env=_env(), check=True)


def study_runs(workdir: Path, objective: str):
    """(experiment id, the study's parent run, its trial runs by run name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("pipeline").experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    parent = next(
        r
        for r in runs
        if r.data.tags.get(ROLE_TAG) == "study"
        and r.data.tags.get("pipeline.objective") == objective
    )
    trials = {r.info.run_name: r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    return client, experiment_id, parent, trials


def copy_plots(client, parent, docs: Path) -> None:
    """The best trial's plots and the study's optimisation history, as the pipeline logged them."""
    best = parent.data.tags["best_run_id"]
    with tempfile.TemporaryDirectory() as scratch:
        for run_id, name in [
            (best, "plots/fit.png"),
            (best, "plots/derivative.png"),
            (best, "plots/loss.png"),
            (parent.info.run_id, "plots/optimization_history.png"),
        ]:
            local = client.download_artifacts(run_id, name, scratch)
            shutil.copyfile(local, docs / Path(name).name)
            print("wrote", docs / Path(name).name)


@contextlib.contextmanager
def serve_ui(workdir: Path):
    """`python -m pipeline.ui` on a free port; yields the runs URL it prints."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = workdir / "ui.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ui", "--port", str(port)],
            cwd=workdir,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("pipeline.ui exited:\n" + log.read_text()[-3000:])
            found = re.search(r"MLflow UI on \S+: (http://\S+)", log.read_text())
            if found:
                yield found.group(1)
                return
            time.sleep(0.5)
        raise TimeoutError("pipeline.ui printed no URL:\n" + log.read_text()[-3000:])
    finally:
        process.terminate()
        process.wait(timeout=30)


def close_assistant(page) -> None:
    """MLflow 3.17 opens its "MLflow Assistant" side panel on first load; close it."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Close", exact=True).first.click(timeout=3_000)


def expand(page, study_name: str, first_trial: str) -> None:
    link = page.get_by_role("link", name=first_trial, exact=True)
    if link.count() == 0:
        page.locator(
            RUN_NAME_CELL, has=page.get_by_role("link", name=study_name, exact=True)
        ).locator("button").first.click()
    link.wait_for()


def choose(page, label: str, values: tuple[str, ...]) -> None:
    """Replace the selection of the compare view's "Parameters:" or "Metrics:" picker."""
    picker = page.locator(
        f"xpath=//*[normalize-space(text())='{label}']/following::*[contains(@class,'select')][1]"
    ).first
    for remove in picker.locator(
        ".du-bois-light-select-selection-item-remove, [aria-label='close']"
    ).all()[::-1]:
        remove.click()
    for value in values:
        picker.click()
        page.keyboard.type(value)
        page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def screenshots(url: str, studies, docs: Path) -> None:
    """runs.png with every study expanded; compare.png of the first study's trials."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_text("matching runs").wait_for()
        close_assistant(page)
        for parent, trials in studies:
            expand(page, parent.info.run_name, sorted(trials)[0])
        page.mouse.click(5, 700)  # off the table: no focus outline in the shot
        page.wait_for_timeout(1000)
        page.screenshot(path=str(docs / "runs.png"))
        print("wrote", docs / "runs.png")

        parent, trials = studies[0]
        for run in trials.values():
            page.locator(
                f'[role=row][row-id="{run.info.run_id}"] input.ag-checkbox-input'
            ).first.check()
        page.get_by_role("button", name="Compare", exact=True).click()
        page.get_by_text("Parallel Coordinates Plot", exact=True).wait_for()
        close_assistant(page)
        page.get_by_role("button", name="Toggle sidebar").click()
        choose(page, "Parameters:", CHART_PARAMS)
        choose(page, "Metrics:", (CHART_METRIC,))
        page.wait_for_timeout(1500)
        page.screenshot(path=str(docs / "compare.png"))
        print("wrote", docs / "compare.png")
        browser.close()


def shrink(path: Path) -> None:
    """Palette-quantise a PNG over MAX_PNG_BYTES (screenshots compress well that way)."""
    if path.stat().st_size <= MAX_PNG_BYTES:
        return
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="sweep here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the sweep in --workdir")
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--objective", default="derivative", choices=["value", "derivative"])
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipeline-docs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        sweep(workdir, args.n_trials, args.epochs)
    DOCS.mkdir(exist_ok=True)
    other = "value" if args.objective == "derivative" else "derivative"
    client, _, parent, trials = study_runs(workdir, args.objective)
    _, _, other_parent, other_trials = study_runs(workdir, other)
    copy_plots(client, parent, DOCS)
    with serve_ui(workdir) as url:
        print("UI:", url, flush=True)
        screenshots(url, [(parent, trials), (other_parent, other_trials)], DOCS)
    for png in DOCS.glob("*.png"):
        shrink(png)
        print(f"{png.relative_to(REPO_ROOT)}: {png.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
