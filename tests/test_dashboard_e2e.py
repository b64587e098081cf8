"""optuna-dashboard as a person sees it, in headless Chromium, on a real short sweep's storage.

A sweep of both objectives runs in a temporary folder; `python -m pipeline.ui --optuna` serves
its default study storage (the journal under `mlruns/`) on a free loopback port; Playwright
follows the printed link and finds both studies, each objective's metric name on its history
chart (not "Objective 0") and a trial's params and MLflow run id. Reuses the MLflow UI test's
browser helpers; skipped without Chromium except under CI=true.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import test_ui_e2e as shared
from servers import free_port

from pipeline.tracking.dashboard import open_storage
from pipeline.ui import CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# The MLflow UI test's fixtures: skip without Chromium (fail under CI=true), and a fresh page
# per test (its screenshot under test-artifacts/ on failure) in this module's `browser`.
_browser_available = shared._browser_available
page = shared.page

STUDIES = {"log-value": "val_value_mse", "log-derivative": "val_deriv_mse"}
ONE_GRAPH = ["search.activation=[tanh]", "search.optimizer=[adam]", "search.n_layers.high=1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short sweep of both objectives (one compiled graph per objective)."""
    folder = tmp_path_factory.mktemp("dashboard-e2e")
    command = [sys.executable, "-m", "pipeline.sweep", "study.n_trials=2", "train.epochs=200"]
    command += ["study.report_every=100", *ONE_GRAPH]
    done = subprocess.run(
        command, cwd=folder, env=shared._env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def dashboard_url(folder: Path) -> Iterator[str]:
    """`python -m pipeline.ui --optuna` in the sweep's folder; yields the link it prints."""
    log = folder / "dashboard.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ui", "--optuna", "--port", str(free_port())],
            cwd=folder,
            env=shared._env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found, deadline = None, time.monotonic() + 120
        while found is None and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            found = re.search(r"optuna-dashboard on \S+: (http://\S+)", log.read_text())
            time.sleep(0.2)
        assert found is not None, "no link printed:\n" + log.read_text()[-3000:]
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(dashboard_url: str) -> Iterator:
    """Headless Chromium (the shared `page` fixture opens pages in it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(shared.CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _card(page, name: str):
    """The study list's card title, e.g. `0. log-value`."""
    return page.get_by_text(re.compile(rf"^\d+\. {re.escape(name)}$")).first


def _trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(str(folder / "mlruns" / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=storage).trials


def test_printed_link_lists_both_studies(page, dashboard_url: str) -> None:
    assert dashboard_url.endswith("/dashboard/")
    page.goto(dashboard_url)
    for name in STUDIES:
        _card(page, name).wait_for()


@pytest.mark.parametrize("name", list(STUDIES))
def test_study_page_names_its_metric_and_shows_a_trials_params(
    page, dashboard_url: str, folder: Path, name: str
) -> None:
    page.goto(dashboard_url)
    _card(page, name).click()
    page.wait_for_url(re.compile(r"/dashboard/studies/\d+$"))
    # The history chart's value axis carries the study's metric name.
    page.locator(".js-plotly-plot .ytitle", has_text=STUDIES[name]).first.wait_for()
    page.goto(page.url + "/trials")
    trial = _trials(folder, name)[0]
    page.get_by_text(f"Trial {trial.number} (trial_id=", exact=False).wait_for()
    shown = page.locator("body").inner_text()
    for key, value in trial.params.items():
        assert re.search(rf"\b{key} {re.escape(str(value))}\b", shown), (key, value, shown)
    assert f"worker {trial.user_attrs['worker']}" in shown  # the trial's user attributes too
