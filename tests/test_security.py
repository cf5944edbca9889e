"""Security of the app: where it listens, what it accepts, what it serves, what it unpickles.

* The app listens on 127.0.0.1 unless ``--host``/``--share`` say otherwise; uploads are limited
  in size and, with the exports, live in one temporary folder removed when the app exits.
* No user-supplied path reaches outside the allowed folders: Gradio's file routes, file inputs
  of the API (the Train tab's CSV included), upload file names, run directories, export names.
* Weights are read only from safetensors or with ``torch.load(weights_only=True)`` (checked over
  the source), and no shell runs user text.

The in-process app is ``conftest.app_server`` (launched by ``app.cli.launch``, the CLI's own
settings); one test starts ``python app.py`` itself to check the real defaults end to end.
"""

from __future__ import annotations

import ast
import atexit
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import free_port, write_gps_photo
from gradio_client import Client, handle_file

import app.cli
import app.ui
from app.cli import MAX_FILE_SIZE
from app.presets import TrainRequest
from app.static import BASEMAP_DIR, DEFAULT_MODEL_DIR, REPO_ROOT, StaticAssets, file_url
from csp.checkpoint import describe_model, save_checkpoint
from csp.models import LocationEncoder, LocationEncoderConfig
from csp.predictor import Predictor
from tests.app import test_app_handlers, test_bad_input

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

# Fixtures shared with the other app tests, not copied: the handlers on the small model, the
# Train-tab handlers, and app.cli.main isolated from this process.
assets, countries, handlers = (
    test_app_handlers.assets,
    test_app_handlers.countries,
    test_app_handlers.handlers,
)
trainer, cli_main = test_bad_input.trainer, test_bad_input.cli_main

SOURCE_DIRS = ("app", "csp", "train", "bench")
SECRET = Path("/etc/passwd")  # readable here, and must never be served or echoed


# --- where the app listens, upload limit, temporary files ----------------------------------


class _Demo:
    """Stands in for ``gr.Blocks``: records what ``launch`` was asked."""

    def __init__(self) -> None:
        self.launched: dict = {}

    def launch(self, **kwargs) -> None:
        self.launched = kwargs


def test_launch_settings_are_local_limited_and_quiet():
    demo = _Demo()
    app.cli.launch(demo, "127.0.0.1", 7860)
    settings = demo.launched
    assert (settings["server_name"], settings["server_port"], settings["share"]) == ("127.0.0.1", 7860, False)
    assert settings["max_file_size"] == MAX_FILE_SIZE == "25mb"
    assert settings["show_error"] is False  # unexpected exceptions are not sent to the browser
    assert "allowed_paths" not in settings  # nothing served beyond the registered static folders


@pytest.fixture
def launched(cli_main, app_predictor, monkeypatch) -> dict:
    """Run ``app.cli.main`` up to ``launch`` (served model and UI stubbed); records the launch
    arguments, the keyword arguments the UI was built with, and the exit hooks registered."""
    record: dict = {"exit_hooks": [], "main": cli_main}

    def build_app(predictor: Predictor, **kwargs) -> _Demo:
        record["build"] = kwargs
        return _Demo()

    def launch(demo: _Demo, host: str, port: int, **kwargs) -> None:
        record["launch"] = (host, port, kwargs)

    monkeypatch.setattr(Predictor, "from_directory", staticmethod(lambda *args, **kwargs: app_predictor))
    monkeypatch.setattr(app.ui, "build_app", build_app)
    monkeypatch.setattr(app.cli, "launch", launch)
    monkeypatch.setattr(
        atexit, "register", lambda *hook, **kwargs: record["exit_hooks"].append((hook, kwargs))
    )
    return record


def test_the_app_listens_on_localhost_unless_told_otherwise(launched, app_model_dir):
    main = launched["main"]
    assert main(["--checkpoint", str(app_model_dir)]) == 0
    assert launched["launch"] == ("127.0.0.1", 7860, {"share": False, "max_file_size": "25mb"})
    argv = ["--checkpoint", str(app_model_dir), "--host", "0.0.0.0", "--share", "--max-file-size", "5mb"]
    assert main(argv) == 0
    assert launched["launch"] == ("0.0.0.0", 7860, {"share": True, "max_file_size": "5mb"})


def test_uploads_and_exports_share_one_temporary_folder_removed_at_exit(launched, app_model_dir):
    assert launched["main"](["--checkpoint", str(app_model_dir)]) == 0
    uploads, work = Path(os.environ["GRADIO_TEMP_DIR"]), launched["build"]["work_dir"]
    scratch = uploads.parent
    assert scratch.name.startswith("csp-app-") and work.parent == scratch and work.is_dir()
    (work / "export.png").write_bytes(b"exported")
    for (hook, *args), kwargs in launched["exit_hooks"]:
        hook(*args, **kwargs)
    assert not scratch.exists()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.slow
def test_python_app_py_listens_on_localhost_and_cleans_up_on_sigterm(app_model_dir, tmp_path):
    """The real command with its defaults: 127.0.0.1 only; uploads and exports under one
    temporary folder (TMPDIR), gone after SIGTERM."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    command = [sys.executable, "app.py", "--checkpoint", str(app_model_dir), "--port", str(port)]
    log = tmp_path / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "TMPDIR": str(temp)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "app not up after 120 s"
                time.sleep(0.2)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::
        client = Client(url, verbose=False)
        photo = write_gps_photo(tmp_path / "upload-marker.jpg", lon=36.82, lat=-1.29)
        assert client.predict(handle_file(str(photo)), api_name="/photo_location")[0] == "-1.29000, 36.82000"
        png, _ = client.predict("Ursus arctos", 0.3, api_name="/range_export")
        (scratch,) = temp.glob("csp-app-*")
        written = {p.name for p in scratch.rglob("*") if p.is_file()}
        assert {"upload-marker.jpg", Path(png).name} <= written
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not scratch.exists(), log.read_text()
    left = {p.name for p in temp.rglob("*")}
    assert not left & written, f"left after exit: {sorted(left & written)}"


def test_uploads_over_the_size_limit_are_refused(app_server):
    url = app_server + "gradio_api/upload"
    small = httpx.post(url, files={"files": ("ok.csv", b"lat,lon,label\n1,2,a\n")}, timeout=60)
    assert small.status_code == 200
    limit = 25 * 1024 * 1024
    big = httpx.post(url, files={"files": ("big.jpg", b"\xff" * (limit + 1))}, timeout=120)
    assert big.status_code == 413 and "exceeded maximum allowed size" in big.text


# --- path traversal ------------------------------------------------------------------------


def _get(base_url: str, raw_path: str) -> tuple[int, bytes]:
    """GET ``raw_path`` exactly as written (no client-side normalisation of ``..``)."""
    parts = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


TRAVERSALS = [
    "/gradio_api/file={secret}",
    "/gradio_api/file=../../../../../../..{secret}",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file/{secret}",
    "/gradio_api/file={basemap}/../../../../../../..{secret}",
    "/gradio_api/file={basemap}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}",
    "/gradio_api/file={basemap}/../../app/cli.py",
    "/gradio_api/file={repo}/app/cli.py",
    "/gradio_api/file={default_model}/prior/model.safetensors",
    "/gradio_api/file={model}/prior/model.safetensors",
    "/gradio_api/file=http://127.0.0.1:{port}/config",
    "/gradio_api/proxy=http://127.0.0.1:{port}/config",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}",
    "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}",
    "/svelte/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{secret}",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_file_routes_refuse_paths_outside_the_served_folders(app_server, app_model_dir, template):
    path = template.format(
        secret=SECRET,
        basemap=BASEMAP_DIR,
        repo=REPO_ROOT,
        default_model=DEFAULT_MODEL_DIR,
        model=app_model_dir,
        port=urllib.parse.urlsplit(app_server).port,
    )
    status, body = _get(app_server, path)
    assert status in (400, 403, 404), (status, body[:200])
    assert b"root:" not in body and b"import" not in body and b"__metadata__" not in body


def test_served_folders_hold_only_the_map_assets(app_server):
    for directory in StaticAssets.locate().directories:
        assert directory.resolve() not in {REPO_ROOT, DEFAULT_MODEL_DIR, Path("/")}
        assert not any(directory.rglob("*.safetensors")) and not any(directory.rglob("*.py"))
    countries_url = file_url(StaticAssets.locate().countries)
    status, body = _get(app_server, countries_url)
    assert status == 200 and body.startswith(b"{")  # the route works: refusals above are real


def _upload(base_url: str, name: str, content: bytes) -> Path:
    response = httpx.post(base_url + "gradio_api/upload", files={"files": (name, content)}, timeout=60)
    assert response.status_code == 200, response.text
    (path,) = response.json()
    return Path(path)


def test_symlinks_in_the_upload_folder_do_not_lead_outside(app_server):
    upload_dir = _upload(app_server, "probe.txt", b"probe").parent.parent
    folder = upload_dir / f"security-test-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        (folder / "plain.txt").write_text("served")
        (folder / "passwd.txt").symlink_to(SECRET)
        (folder / "etc").symlink_to(SECRET.parent, target_is_directory=True)
        assert _get(app_server, f"/gradio_api/file={folder}/plain.txt") == (200, b"served")
        for link in ("passwd.txt", "etc/passwd"):
            status, body = _get(app_server, f"/gradio_api/file={folder}/{link}")
            assert status == 403 and b"root:" not in body
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("name", ["../../../../../../tmp/{tag}.csv", "/tmp/{tag}.csv", "..\\..\\{tag}.csv"])
def test_upload_file_names_cannot_escape_the_upload_folder(app_server, name):
    tag = f"security-test-{uuid.uuid4().hex}"
    upload_dir = _upload(app_server, "probe.txt", b"probe").parent.parent
    stored = _upload(app_server, name.format(tag=tag), b"lat,lon,label\n").resolve()
    assert stored.is_relative_to(upload_dir.resolve()) and tag in stored.name
    assert not Path(f"/tmp/{tag}.csv").exists()


def _call(base_url: str, api_name: str, data: list) -> str:
    """Call a named endpoint over the raw HTTP API (no client-side upload of local paths);
    returns the event stream's text."""
    started = httpx.post(f"{base_url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    return httpx.get(f"{base_url}gradio_api/call/{api_name}/{event_id}", timeout=60).text


def _server_file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize(
    "target",
    [str(SECRET), "../../../../../../../etc/passwd", "{model}/prior/model.json", "{repo}/app/cli.py"],
)
def test_file_inputs_of_the_api_accept_only_uploaded_files(app_server, app_model_dir, target):
    """A FileData pointing at a server path (not uploaded) is refused before any handler runs,
    for the Train tab's CSV and for the photo inputs."""
    path = target.format(model=app_model_dir, repo=REPO_ROOT)
    status_before = Client(app_server, verbose=False).predict(api_name="/train_status")[0]
    calls = {
        "train_start": ["sup-only", "grid", 0.1, 1, "uploaded CSV", _server_file(path)],
        "photo_location": [_server_file(path)],
        "classify": [_server_file(path), "0, 20"],
        "where": [_server_file(path), 3],
    }
    for api_name, data in calls.items():
        stream = _call(app_server, api_name, data)
        assert "event: error" in stream and "event: complete" not in stream, (api_name, stream)
        assert "root:" not in stream and "columns:" not in stream and "import " not in stream
    assert Client(app_server, verbose=False).predict(api_name="/train_status")[0] == status_before


@pytest.mark.parametrize(
    ("objective", "encoding"),
    [
        ("../../../../tmp/escape", "grid"),
        ("sup-only/../../escape", "grid"),
        ("sup-only", "grid --out /tmp/escape"),
        ("sup-only", "../escape"),
    ],
)
def test_run_directories_stay_under_the_runs_folder(trainer, tmp_path, objective, encoding):
    with pytest.raises(ValueError, match="unknown (objective|encoding)"):
        trainer.start(objective, encoding, 1.0, 1)
    assert not trainer.runs_dir.exists() and not Path("/tmp/escape").exists()
    assert trainer.manager.status().state == "idle"


def test_an_uploaded_csv_path_is_one_argument_of_the_trainer_not_shell_text(tmp_path):
    csv = tmp_path / "obs; touch pwned; $(id) `id` --set runtime.out_dir=x.csv"
    command = TrainRequest("sup-only", "grid", 1.0, 1, csv=csv).command(sys.executable, tmp_path / "run")
    assert command[command.index("--csv") + 1] == str(csv)
    assert command.count("--set") == 0 and command[:4] == [sys.executable, "-m", "train", "finetune"]


def test_exports_stay_in_the_work_folder_whatever_the_class_names(handlers, tmp_path):
    """Class names come from the labels of an uploaded CSV: they must not steer file names."""
    names = ["../../../../tmp/escape", "/etc/cron.d/escape", "..", "a\\b/c:d"]
    model = LocationEncoder(LocationEncoderConfig(encoding="wrap", hidden_dim=16, embed_dim=8, num_classes=4))
    checkpoint = save_checkpoint(tmp_path / "prior", model, describe_model(model, class_names=names))
    handlers.slot.load_prior(checkpoint)
    work = handlers.work_dir.resolve()
    for name in names:
        for written in handlers.export_range(name, threshold=0.5):
            assert written.resolve().is_relative_to(work) and written.parent.parent.resolve() == work
    assert not Path("/tmp/escape").exists() and not Path("/etc/cron.d/escape").exists()
    before = sorted(handlers.work_dir.rglob("*"))
    with pytest.raises(ValueError, match="unknown class"):
        handlers.export_range("../../../etc/passwd")
    assert sorted(handlers.work_dir.rglob("*")) == before


# --- what is unpickled, what runs in a shell ---------------------------------------------------


def _python_files() -> list[Path]:
    files = [REPO_ROOT / "app.py"]
    for directory in SOURCE_DIRS:
        files += sorted((REPO_ROOT / directory).rglob("*.py"))
    return files


def _dotted(node: ast.AST) -> str:
    """``torch.serialization.load`` for the function of a call, '' if it is not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        prefix = _dotted(node.value)
        return f"{prefix}.{node.attr}" if prefix else ""
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _unsafe_loading(source: str, where: str) -> list[str]:
    """Every place in ``source`` (a module, named ``where``) that could unpickle a data file."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            imported = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if any(m.split(".")[0] in UNPICKLERS for m in modules):
                problems.append(f"{where}:{node.lineno}: imports {modules}")
            if modules[0].startswith("torch") and "load" in imported:
                problems.append(f"{where}:{node.lineno}: imports torch's load (call torch.load instead)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("torch.load", "torch.serialization.load") and _keyword(node, "weights_only") is not True:
            problems.append(f"{where}:{node.lineno}: {name} without weights_only=True")
        if name.endswith(
            ("read_pickle", "torch.jit.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load")
        ):
            problems.append(f"{where}:{node.lineno}: {name}")
        if _keyword(node, "allow_pickle") not in (None, False):
            problems.append(f"{where}:{node.lineno}: {name} with allow_pickle")
    return problems


def test_weights_are_never_unpickled():
    files = _python_files()
    assert len(files) > 30  # the scan sees the source tree
    problems = [
        p for path in files for p in _unsafe_loading(path.read_text(), str(path.relative_to(REPO_ROOT)))
    ]
    assert problems == []
    assert any("torch.load(" in path.read_text() for path in files)  # the ImageNet / optimizer-state loads


def test_the_scan_catches_unsafe_loading():
    """The checker itself: each unsafe form is reported, the safe forms are not."""
    unsafe = (
        "import pickle\nimport torch, numpy as np, yaml, pandas as pd\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\nnp.load('a.npy', allow_pickle=True)\n"
        "yaml.load(open('c.yaml'))\npd.read_pickle('f')\nfrom torch import load\n"
    )
    assert len(_unsafe_loading(unsafe, "unsafe.py")) == 7
    safe = (
        "import torch, numpy as np, yaml\ntorch.load('w.pt', map_location='cpu', weights_only=True)\n"
        "np.load('a.npy', allow_pickle=False)\nyaml.safe_load('a: 1')\n"
    )
    assert _unsafe_loading(safe, "safe.py") == []


def test_no_shell_runs_user_text():
    problems = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
            if _keyword(node, "shell") not in (None, False):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name} with shell=")
    assert problems == []
