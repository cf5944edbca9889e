"""The Train tab in a real browser after a reload: the form shows the run's settings (not the
defaults) and the output box the last lines of the trainer's log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import free_port

from app.presets import TrainRequest
from app.screenshots import CHROMIUM, CHROMIUM_ARGS
from app.train_handlers import request_record
from csp.run_dir import RunDir

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromium") is None, reason="needs /usr/bin/chromium"
    ),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def app_with_a_run(app_predictor, app_model_dir, tmp_path_factory):
    """An app (its own runs folder) started after a run that an earlier app left: the run
    recorded its settings, 7 of 12 epochs and its output, then was cancelled."""
    from app.cli import launch
    from app.training import TrainingManager
    from app.ui import build_app

    root = tmp_path_factory.mktemp("app-train-reload")
    run = RunDir(root / "runs" / "20260101-000000-sup-only")
    run.root.mkdir(parents=True)
    run.write_request(request_record(TrainRequest("sup-only", "sphereM", 0.2, 12)))
    for epoch in range(1, 8):
        run.append_metrics({"epoch": epoch, "loss": 2.0 / epoch})
    run.log_file.write_text("".join(f"epoch {e}/12: loss {2.0 / e:.4f}\n" for e in range(1, 8)))
    run.write_status("cancelled", 7, 12, error="stopped by SIGTERM")
    manager = TrainingManager(root)
    demo = build_app(
        app_predictor, model_dir=app_model_dir, work_dir=root, runs_dir=root / "runs", training=manager
    )
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_a_reloaded_page_shows_the_runs_settings_and_output(app_with_a_run):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for _ in range(2):  # the first load, then a reload
            page.goto(app_with_a_run, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Train").click()
            page.wait_for_function(
                "document.querySelector('#train-message').innerText.includes('Cancelled.')", timeout=60_000
            )
            page.wait_for_function(
                "document.querySelector('#train-epochs input[type=number]').value === '12'", timeout=30_000
            )
            checked = page.locator("#train-objective input:checked").get_attribute("value")
            assert checked == "sup-only"
            assert page.locator("#train-fraction input:checked").get_attribute("value") == "0.2"
            assert page.locator("#train-encoding input").first.input_value() == "sphereM"
            log = page.locator("#train-log textarea").input_value()
            assert log.splitlines()[-1] == "epoch 7/12: loss 0.2857", log
            message = page.locator("#train-message").inner_text()
            assert "label fraction 0.2" in message and "stopped by SIGTERM" in message
        browser.close()
