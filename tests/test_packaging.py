"""The wheel, built from a clean copy of the repository, works installed outside the checkout.

A copy holding only the files git knows (tracked, plus untracked ones not ignored: no build
outputs, no runs/) is built with ``pip wheel`` offline, installed with
``pip install --no-deps --target`` into a fresh folder, and used from another folder with
``PYTHONPATH`` set to that target only: every module imports, ``csp.from_pretrained("default")``
scores a point from the shipped files inside the wheel, and the console scripts answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("csp", "train", "app")

pytestmark = pytest.mark.slow

INSTALLED_CHECK = r"""
import importlib, pkgutil, sys
from pathlib import Path
target = Path(sys.argv[1]).resolve()
import csp
assert Path(csp.__file__).resolve().is_relative_to(target), csp.__file__
names = []
for package in ("csp", "train", "app"):
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().is_relative_to(target), module.__file__
    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    if name != "train.__main__":
        importlib.import_module(name)
model = csp.from_pretrained("default")
assert Path(model.link_file).resolve().is_relative_to(target), model.link_file
prior = model.prior([[36.82, -1.29]])
embedding = model.embed([[36.82, -1.29]])
assert prior.shape == (1, len(model.class_names)) and embedding.ndim == 2
best = model.class_names[int(prior[0].argmax())]
print(f"modules={len(names)} classes={len(model.class_names)} best_at_nairobi={best}")
"""


def _clean_copy(destination: Path) -> Path:
    """The files git knows (tracked and untracked-not-ignored) copied to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if not (source.exists() or source.is_symlink()):
            continue  # deleted in the working tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A target folder with the wheel installed (no dependencies, no network)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to make a clean copy")
    root = tmp_path_factory.mktemp("packaging")
    source = _clean_copy(root / "source")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist")],
        check=True, env=env, cwd=root,
    )
    (wheel,) = (root / "dist").glob("csp_geo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "csp/_assets/default/prior/model.safetensors" in names
    assert "train/configs/csp-mc-bld.yaml" in names and "csp/datasets/__init__.py" in names
    target = root / "target"
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, env=env, cwd=root,
    )
    return target


def _run(command: list[str], target: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_imports_everything_and_scores_a_point(installed: Path, tmp_path: Path) -> None:
    result = _run([sys.executable, "-c", INSTALLED_CHECK, str(installed)], installed, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules=" in result.stdout and "classes=" in result.stdout


@pytest.mark.parametrize("script", ["csp-train", "csp-app"])
def test_console_scripts_answer(installed: Path, tmp_path: Path, script: str) -> None:
    executable = installed / "bin" / script
    assert executable.is_file(), sorted(p.name for p in (installed / "bin").iterdir())
    result = _run([str(executable), "--help"], installed, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout
