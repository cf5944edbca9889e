"""Training tab: the subprocess manager (with a tiny stand-in script), presets, CSV checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.model import ModelSlot
from app.presets import TrainRequest, check_observations_csv
from app.train_handlers import TrainingHandlers, request_record, view_of
from app.training import RunStatus, TrainingManager
from csp.checkpoint import point_link, save_checkpoint
from csp.run_dir import RunDir, read_metrics
from train.cli import build_parser, finetune_config
from train.config import DataConfig, FinetuneConfig, load_config

# A stand-in for the trainer: its run directory as csp.run_dir lays it out, one metrics line
# per epoch, then the best checkpoint; exits with the given code (no status: as a crash would).
SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, @REPO@)
    from csp.run_dir import RunDir
    run, epochs, pause, code = RunDir(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    for epoch in range(1, epochs + 1):
        time.sleep(pause)
        run.append_metrics({"epoch": epoch, "step": epoch * 10, "loss": 1.0 / epoch})
        print(f"epoch {epoch} done", flush=True)
    if code:
        print("boom: out of patience", file=sys.stderr, flush=True)
        sys.exit(code)
    run.best.mkdir(parents=True)
    """
).replace("@REPO@", repr(str(Path(__file__).resolve().parents[2])))


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "fake_trainer.py"
    path.write_text(SCRIPT)
    return path


def _command(script: Path, run: Path, epochs: int, pause: float, code: int = 0) -> list[str]:
    return [sys.executable, str(script), str(run), str(epochs), str(pause), str(code)]


def _wait(manager: TrainingManager, timeout: float = 20.0) -> RunStatus:
    deadline = time.monotonic() + timeout
    while (status := manager.status()).state == "running":
        assert time.monotonic() < deadline, "run did not end"
        time.sleep(0.05)
    return status


def test_read_metrics_skips_a_partial_last_line_and_names_bad_lines(tmp_path):
    path = RunDir(tmp_path).metrics
    assert read_metrics(path) == []
    path.write_text('{"epoch": 1, "loss": 2.0}\n\n{"epoch": 2, "lo')
    assert read_metrics(path) == [{"epoch": 1, "loss": 2.0}]
    path.write_text('{"epoch": 1, "loss": 2.0}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_metrics(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        read_metrics(path)


def test_run_to_completion(tmp_path, script):
    manager = TrainingManager(tmp_path)
    assert manager.status().state == "idle" and manager.status().run_dir is None
    run = tmp_path / "run1"
    started = manager.start(_command(script, run, 3, 0.05), run, epochs=3)
    assert started.state in ("running", "completed")
    status = _wait(manager)
    assert status.state == "completed" and status.returncode == 0
    assert [r["epoch"] for r in status.history] == [1, 2, 3]
    assert status.epoch == 3 and status.progress == 1.0
    assert status.best_checkpoint == RunDir(run).best
    assert "epoch 3 done" in status.log_tail
    view = view_of(status)
    assert view.can_load and list(view.curve["loss"]) == pytest.approx([1.0, 0.5, 1 / 3])
    assert 'value="100"' in view.progress_html and "epoch 3 / 3" in view.progress_html


def test_one_run_at_a_time_and_cancel(tmp_path, script):
    manager = TrainingManager(tmp_path)
    run = tmp_path / "slow"
    manager.start(_command(script, run, 100, 0.2), run, epochs=100)
    with pytest.raises(RuntimeError, match="already in progress"):
        manager.start(_command(script, tmp_path / "other", 1, 0.0), tmp_path / "other", epochs=1)
    started = time.monotonic()
    status = manager.cancel(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert status.state == "cancelled" and status.best_checkpoint is None
    assert view_of(status).message.startswith("Cancelled.")
    # The slot is free again, and a run directory is never reused.
    with pytest.raises(FileExistsError):
        RunDir(run).metrics.touch()
        manager.start(_command(script, run, 1, 0.0), run, epochs=1)
    manager.start(_command(script, tmp_path / "next", 1, 0.0), tmp_path / "next", epochs=1)
    assert _wait(manager).state == "completed"


def test_failed_run_reports_exit_code_and_output(tmp_path, script):
    manager = TrainingManager(tmp_path)
    run = tmp_path / "bad"
    manager.start(_command(script, run, 1, 0.0, code=3), run, epochs=2)
    status = _wait(manager)
    assert status.state == "failed" and status.returncode == 3
    assert "boom: out of patience" in status.log_tail
    assert status.progress == 0.5 and status.best_checkpoint is None
    view = view_of(status)
    assert "exited with code 3" in view.message and not view.can_load


def test_unreadable_metrics_are_reported_not_raised(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    manager = TrainingManager(tmp_path)
    manager.start([sys.executable, "-c", "print('hi')"], run, epochs=1)
    RunDir(run).metrics.write_text("garbage\n")
    status = _wait(manager)
    assert status.history == [] and "line 1 is not JSON" in status.problem
    assert "Progress unreadable" in view_of(status).message


# --- presets and CSV checks ----------------------------------------------------------------


def _trainer_config(argv: list[str], python: str) -> FinetuneConfig:
    """The config the real trainer would run ``argv`` with, parsed by its own parser."""
    assert argv[:3] == [python, "-m", "train"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "finetune" and args.no_progress and not args.resume
    return finetune_config(args)


def test_sup_only_command_parses_to_the_requested_config(tmp_path):
    request = TrainRequest("sup-only", "sphereC+", 0.1, 7, csv=tmp_path / "obs.csv")
    config = _trainer_config(request.command("python3", tmp_path / "run"), "python3")
    assert config.runtime.out_dir == str(tmp_path / "run") and not config.runtime.progress
    assert config.optim.epochs == 7 and config.data.label_fraction == 0.1
    assert config.data.csv == str(tmp_path / "obs.csv")
    assert config.model.encoding == "sphereC+" and config.init_from is None
    assert (
        config.model.encoding_kwargs
        == load_config(FinetuneConfig, "sup-only", encoding="sphereC+").model.encoding_kwargs
    )
    assert not config.freeze_encoder


def test_csp_commands_need_and_use_the_pretrained_encoder(tmp_path):
    with pytest.raises(ValueError, match="needs a CSP pre-trained encoder"):
        TrainRequest("csp-finetune", "grid", 1.0, 5)
    probe = _trainer_config(
        TrainRequest("csp-linear-probe", "grid", 1.0, 5, init_from=tmp_path / "csp").command(
            "py", tmp_path / "r"
        ),
        "py",
    )
    assert probe.init_from == str(tmp_path / "csp") and probe.freeze_encoder
    assert probe.data.label_fraction == 1.0 and probe.data.csv == DataConfig().csv
    tune = _trainer_config(
        TrainRequest("csp-finetune", "grid", 0.05, 2, init_from=tmp_path / "csp").command(
            "py", tmp_path / "r"
        ),
        "py",
    )
    assert tune.init_from == str(tmp_path / "csp") and not tune.freeze_encoder
    assert tune.data.label_fraction == 0.05 and tune.optim.epochs == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objective": "magic"}, "unknown objective"),
        ({"encoding": "hexagons"}, "unknown encoding"),
        ({"label_fraction": 0.0}, "label fraction"),
        ({"label_fraction": float("nan")}, "label fraction"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
    ],
)
def test_bad_requests(kwargs, message):
    base = {"objective": "sup-only", "encoding": "grid", "label_fraction": 1.0, "epochs": 3}
    with pytest.raises(ValueError, match=message):
        TrainRequest(**(base | kwargs))


def test_check_observations_csv(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("lat,lon,label\n48.85,2.35,a\n35.68,139.65,b\n-1.29,36.82,a\n")
    assert check_observations_csv(good) == "3 observations of 2 classes"
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("lat,lon\n48.85,2.35\n")
    with pytest.raises(ValueError, match="needs a label column"):
        check_observations_csv(unlabelled)
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lon,label\n48.85,2.35,a\n95.0,2.35,b\n")
    with pytest.raises(ValueError, match="line 3"):
        check_observations_csv(bad)
    one = tmp_path / "one.csv"
    one.write_text("lat,lon,label\n48.85,2.35,a\n")
    with pytest.raises(ValueError, match="at least two classes"):
        check_observations_csv(one)


def test_training_handlers_refuse_a_bad_csv_before_starting(tmp_path, app_predictor, app_model_dir):
    manager = TrainingManager(tmp_path)
    handlers = TrainingHandlers(
        manager, ModelSlot(app_predictor, app_model_dir), tmp_path / "runs", sys.executable
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lon,label\n48.85,200,a\n")
    with pytest.raises(ValueError, match="line 2"):
        handlers.start("sup-only", "grid", 1.0, 1, str(bad))
    assert manager.status().state == "idle" and not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="no finished training run"):
        handlers.load_trained()
    assert handlers.status().message == "No training run yet."


@pytest.mark.slow
def test_real_trainer_run_and_load(tmp_path, app_predictor, app_model_dir):
    """The preset's command line against the real ``python -m train finetune``, then the
    checkpoint it wrote served through the slot."""
    import pandas as pd

    data = pd.read_csv(Path(__file__).resolve().parents[2] / "assets/data/yfcc_inat2017_species.csv")
    counts = data["label"].value_counts()
    species = sorted(counts[counts >= 10].index)[:150]  # real observations, 10 per species
    csv = tmp_path / "obs.csv"
    data[data["label"].isin(species)].to_csv(csv, index=False)
    manager = TrainingManager(Path(__file__).resolve().parents[2], env={"OMP_NUM_THREADS": "1"})
    slot = ModelSlot(app_predictor, app_model_dir)
    handlers = TrainingHandlers(manager, slot, tmp_path / "runs", sys.executable)
    try:
        view = handlers.start("sup-only", "grid", 1.0, 1, str(csv))
        assert view.running and "1500 observations of 150 classes. Training" in view.message
        status = _wait(manager, timeout=120.0)
    finally:
        manager.close()
    assert status.state == "completed", status.log_tail
    assert [r["epoch"] for r in status.history] == [1]
    message = handlers.load_trained()
    assert "Now serving" in message
    assert slot.predictor is not app_predictor
    assert 100 < len(slot.predictor.class_names) <= 150  # cleaning may drop a few species
    assert slot.predictor.csp_model is app_predictor.csp_model


# --- a run left by an earlier app ------------------------------------------------------------

# A trainer stand-in that records its status like the real one and is cancelled by SIGTERM.
LIVE_TRAINER = textwrap.dedent(
    """
    import sys, time
    from csp.run_dir import RunDir
    from train.lifecycle import RunCancelled, cancel_on_signals
    run = RunDir(sys.argv[1])
    run.root.mkdir(parents=True)
    with cancel_on_signals():
        try:
            run.write_status("running", 0, 100)
            time.sleep(600)
        except RunCancelled as err:
            run.write_status("cancelled", 0, 100, error=str(err))
    """
)


def test_a_restarted_app_attaches_to_a_live_run_and_refuses_a_second(tmp_path, script):
    runs = tmp_path / "runs"
    old = runs / "20260101-000000-sup-only"
    (runs / "older").mkdir(parents=True)
    RunDir(runs / "older").write_status("completed", 1, 1)  # a run that ended before
    repo = Path(__file__).resolve().parents[2]
    orphan = subprocess.Popen(
        [sys.executable, "-c", LIVE_TRAINER, str(old)], cwd=repo, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while RunDir(old).read_status() is None:
            assert time.monotonic() < deadline and orphan.poll() is None
            time.sleep(0.05)
        manager = TrainingManager(tmp_path)
        status = manager.attach(runs)
        assert status.state == "running" and status.run_dir == old and status.epochs == 100
        with pytest.raises(RuntimeError, match="already in progress"):
            manager.start(_command(script, runs / "second", 1, 0.0), runs / "second", epochs=1)
        assert not (runs / "second").exists()
        status = manager.cancel(timeout=10.0)
        assert status.state == "cancelled" and status.error == "stopped by SIGTERM"
        assert orphan.wait(timeout=10) == 0
    finally:
        orphan.kill()
        orphan.wait()


def test_an_attached_run_whose_trainer_was_killed_reads_failed(tmp_path):
    run = RunDir(tmp_path / "runs" / "r")
    run.root.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = run.write_status("running", 3, 10)
    run.status_file.write_text(run.status_file.read_text().replace(str(record.pid), str(dead.pid)))
    status = TrainingManager(tmp_path).attach(tmp_path / "runs")
    assert status.state == "failed" and "without recording its end" in status.error
    assert "Reason: the trainer process ended" in view_of(status).message


def test_the_request_is_kept_with_the_run_and_shown_after_a_reload(
    tmp_path, script, app_predictor, app_model_dir
):
    runs = tmp_path / "runs"
    first = TrainingHandlers(
        TrainingManager(tmp_path), ModelSlot(app_predictor, app_model_dir), runs, sys.executable
    )
    request = TrainRequest("sup-only", "sphereC+", 0.2, 3)
    run = runs / "r1"
    first.manager.start(_command(script, run, 3, 0.0), run, epochs=3, request=request_record(request))
    _wait(first.manager)
    RunDir(run).write_status("completed", 3, 3)  # as the real trainer records its end
    # A new app (a restart): the same runs folder, a fresh manager.
    again = TrainingHandlers(
        TrainingManager(tmp_path), ModelSlot(app_predictor, app_model_dir), runs, sys.executable
    )
    view = again.status()
    assert view.request == request
    assert view.message.startswith("Sup. only: train from scratch, 3 epoch(s), label fraction 0.2.")
    assert "Finished." in view.message


def test_a_cancelled_runs_best_checkpoint_can_be_loaded(tmp_path, app_predictor, app_model_dir):
    run = RunDir(tmp_path / "runs" / "r")
    save_checkpoint(run.epoch_dir(2), app_predictor.prior_model, app_predictor.prior_meta)
    point_link(run.best, run.epoch_dir(2))
    run.append_metrics({"epoch": 1, "loss": 1.0})
    run.append_metrics({"epoch": 2, "loss": 0.5})
    run.write_status("cancelled", 2, 10, error="stopped by SIGTERM")
    slot = ModelSlot(app_predictor, app_model_dir)
    handlers = TrainingHandlers(TrainingManager(tmp_path), slot, tmp_path / "runs", sys.executable)
    view = handlers.status()
    assert view.state == "cancelled" and view.can_load
    assert "best checkpoint so far (after epoch 2 or earlier) can be loaded" in view.message
    assert "Now serving" in handlers.load_trained() and slot.predictor is not app_predictor
