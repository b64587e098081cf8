"""The MLflow UI as a person sees it, in headless Chromium, after a real short sweep.

A sweep of both objectives runs in a temporary folder; `python -m pipeline.ui` serves that store
on a free loopback port; Playwright follows the URL it prints and checks the runs table (studies
with their trials nested under them), the compare view of one study's trials (uniform params and a
parallel-coordinates chart holding every run), and the plots of a trial and of a study.

Screenshots of a failing test land in `test-artifacts/`. Without /usr/bin/chromium the module is
skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from contract import UNIFORM_PARAMS
from servers import free_port

from pipeline.names import PARENT_TAG, ROLE_TAG
from pipeline.ui import CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "test-artifacts"
N_TRIALS = 3
TRIAL_PLOTS = ("fit.png", "derivative.png", "loss.png")
STUDY_PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")
RUN_NAME_CELL = '[role=gridcell][col-id="attributes.`Run Name`"]'
UI_TIMEOUT_MS = 30_000


def _missing_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    reason = _missing_browser()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the UI test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Study:
    name: str
    run_id: str
    trials: dict[str, str]  # run name -> run id


@dataclass(frozen=True)
class Store:
    folder: Path
    experiment_id: str
    studies: dict[str, Study]  # objective -> study


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A short sweep of both objectives in a temporary folder, and what MLflow holds of it."""
    folder = tmp_path_factory.mktemp("ui-e2e")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.sweep",
            f"study.n_trials={N_TRIALS}",
            "train.epochs=300",
            "study.report_every=100",
        ],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "python -m pipeline.ui" in done.stdout  # the summary says how to look

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("pipeline").experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    studies = {}
    for parent in (r for r in runs if r.data.tags.get(ROLE_TAG) == "study"):
        trials = {
            r.info.run_name: r.info.run_id
            for r in runs
            if r.data.tags.get(PARENT_TAG) == parent.info.run_id
        }
        studies[parent.data.tags["pipeline.objective"]] = Study(
            parent.info.run_name, parent.info.run_id, trials
        )
    assert set(studies) == {"value", "derivative"}
    assert all(len(s.trials) == N_TRIALS for s in studies.values())
    return Store(folder, experiment_id, studies)


@pytest.fixture(scope="module")
def ui_url(store: Store) -> Iterator[str]:
    """`python -m pipeline.ui` on the sweep's store; yields the URL it prints."""
    log = store.folder / "ui.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ui", "--port", str(free_port())],
            cwd=store.folder,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            found = re.search(r"MLflow UI on \S+: (http://\S+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.5)
        assert url is not None, "no URL printed:\n" + log.read_text()[-3000:]
        yield url
    finally:
        process.terminate()  # pipeline.ui stops its mlflow server on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(ui_url: str) -> Iterator:
    """Headless Chromium, closed before the server it talks to (so the server stops at once)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator:
    """A fresh browser page; on failure its screenshot is saved under test-artifacts/."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _close_assistant(page) -> None:
    """MLflow 3.17 opens its "MLflow Assistant" side panel on first load; close it."""
    close = page.get_by_role("button", name="Close", exact=True)
    with contextlib.suppress(Exception):  # not opened this time
        close.first.click(timeout=3_000)


def _open_runs(page, url: str, total: int) -> None:
    page.goto(url)
    page.get_by_text(f"{total} matching runs").wait_for()
    _close_assistant(page)


def _run_link(page, name: str):
    return page.get_by_role("link", name=name, exact=True)


def _expand(page, study: Study) -> None:
    """Click the expander of a study's row if its trial rows are hidden."""
    first_trial = _run_link(page, sorted(study.trials)[0])
    if first_trial.count() == 0:
        cell = page.locator(RUN_NAME_CELL, has=_run_link(page, study.name))
        cell.locator("button").first.click()
    first_trial.wait_for()


def _row_index(page, run_id: str) -> int:
    return int(page.locator(f'[role=row][row-id="{run_id}"]').first.get_attribute("row-index"))


def _image_loads(page, name: str) -> None:
    """Click `name` in the artifact tree; its preview must load as a real image."""
    before = page.evaluate("() => Array.from(document.images).map(i => i.src)")
    page.get_by_text(name, exact=True).click()
    page.get_by_text(re.compile(rf"plots/{re.escape(name)}$")).first.wait_for()
    page.wait_for_function(
        """before => Array.from(document.images).some(i => i.src.startsWith('blob:')
            && !before.includes(i.src) && i.complete && i.naturalWidth > 0)""",
        arg=before,
    )


def test_printed_url_lists_studies_with_their_trials_nested(page, ui_url, store: Store) -> None:
    assert ui_url.endswith(
        f"#/experiments/{store.experiment_id}/runs?workflowType=machine_learning"
    )
    total = sum(1 + len(s.trials) for s in store.studies.values())
    _open_runs(page, ui_url, total)
    page.get_by_role("heading", name="Runs", exact=True).wait_for()
    for study in store.studies.values():
        _run_link(page, study.name).wait_for()
    for study in store.studies.values():
        _expand(page, study)
    # Each study's trials sit directly below it, before the next study.
    order = sorted(
        (_row_index(page, run_id), study.name)
        for study in store.studies.values()
        for run_id in (study.run_id, *study.trials.values())
    )
    for study in store.studies.values():
        rows = [i for i, name in order if name == study.name]
        assert rows == list(range(rows[0], rows[0] + 1 + N_TRIALS)), order
        assert _row_index(page, study.run_id) == rows[0]
        for trial in study.trials:
            _run_link(page, trial).wait_for()


def test_compare_view_of_a_study_shows_uniform_params_and_every_run(
    page, ui_url, store: Store
) -> None:
    study = store.studies["value"]
    total = sum(1 + len(s.trials) for s in store.studies.values())
    _open_runs(page, ui_url, total)
    _expand(page, study)
    for run_id in study.trials.values():
        page.locator(f'[role=row][row-id="{run_id}"] input.ag-checkbox-input').first.check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text(f"Comparing {N_TRIALS} Runs from 1 Experiment").wait_for()
    assert "#/compare-runs?runs=" in page.url

    params = page.locator("table", has=page.get_by_text("learning_rate", exact=True)).last
    for name in UNIFORM_PARAMS:
        assert params.get_by_text(name, exact=True).count() >= 1, name

    page.get_by_text("Parallel Coordinates Plot", exact=True).wait_for()
    page.locator(".js-plotly-plot .parcoords").first.wait_for()
    dimensions = page.evaluate(
        """() => document.querySelector('.js-plotly-plot').data[0].dimensions
                 .map(d => [d.label, d.values.length])"""
    )
    assert dimensions, "the parallel-coordinates chart has no axes"
    assert all(n == N_TRIALS for _, n in dimensions), dimensions


def _artifact_plots_load(page, names: tuple[str, ...]) -> None:
    """On an open run page: the Artifacts tab, the plots/ folder, and every named image loads."""
    page.get_by_role("tab", name="Artifacts").click()
    _close_assistant(page)
    page.get_by_text("plots", exact=True).first.wait_for()
    if page.get_by_text(names[0], exact=True).count() == 0:
        page.get_by_text("plots", exact=True).first.click()
    for name in names:
        _image_loads(page, name)


def test_trial_run_artifacts_show_its_three_plots(page, ui_url, store: Store) -> None:
    study = store.studies["derivative"]
    trial = sorted(study.trials)[0]
    total = sum(1 + len(s.trials) for s in store.studies.values())
    _open_runs(page, ui_url, total)
    _expand(page, study)
    _run_link(page, trial).click()
    _artifact_plots_load(page, TRIAL_PLOTS)


def test_study_run_artifacts_show_the_study_plots(page, ui_url, store: Store) -> None:
    study = store.studies["value"]
    total = sum(1 + len(s.trials) for s in store.studies.values())
    _open_runs(page, ui_url, total)
    _run_link(page, study.name).click()
    _artifact_plots_load(page, STUDY_PLOTS)
