"""Shared fixtures. App fixtures: a small model directory, its predictor, a running app.

The app fixtures build a real model directory with the csp API (a small grid-encoded location
prior trained for a few seconds on species boxes, a CSP location-image model, the species link
to ImageNet classes) so the app tests do not depend on the shipped default being present.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# Species of the small prior, with a box (lon_min, lon_max, lat_min, lat_max) where the fixture
# places its presence points, and the ImageNet class (first WordNet lemma) linked to it.
APP_SPECIES = {
    "Loxodonta africana": ((-10.0, 40.0, -25.0, 10.0), "African elephant"),
    "Elephas maximus": ((72.0, 105.0, 5.0, 28.0), "Indian elephant"),
    "Ursus americanus": ((-125.0, -65.0, 30.0, 60.0), "American black bear"),
    "Ursus arctos": ((20.0, 150.0, 48.0, 70.0), "brown bear"),
    "Canis latrans": ((-120.0, -80.0, 20.0, 50.0), "coyote"),
    "Phascolarctos cinereus": ((140.0, 153.0, -38.0, -17.0), "koala"),
}
APP_EXPERT_RANGE = ["Loxodonta africana"]


def _imagenet_index(lemma: str) -> int:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for index in range(info.num_classes()):
        if info.index_to_description(index).split(",")[0].strip() == lemma:
            return index
    raise LookupError(lemma)


def build_app_model_dir(directory: Path) -> Path:
    """Write ``prior/``, ``csp/`` and ``imagenet_species_link.csv`` into ``directory``."""
    import torch

    from csp.checkpoint import describe_model, save_checkpoint
    from csp.losses import presence_only_loss
    from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder
    from csp.species_link import LinkRow, write_species_link

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    names = list(APP_SPECIES)
    points, labels = [], []
    for label, ((lon0, lon1, lat0, lat1), _) in enumerate(APP_SPECIES.values()):
        points.append(np.column_stack([rng.uniform(lon0, lon1, 400), rng.uniform(lat0, lat1, 400)]))
        labels.append(np.full(400, label))
    lonlat = torch.tensor(np.concatenate(points), dtype=torch.float32)
    label_t = torch.tensor(np.concatenate(labels), dtype=torch.int64)

    config = LocationEncoderConfig(
        encoding="grid",
        encoding_kwargs={"frequency_num": 8},
        hidden_dim=64,
        embed_dim=32,
        dropout=0.0,
        num_classes=len(names),
    )
    prior = LocationEncoder(config)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(300):
        batch = torch.randint(0, len(lonlat), (256,))
        background = torch.column_stack(
            [torch.rand(256) * 360 - 180, torch.rad2deg(torch.asin(torch.rand(256) * 2 - 1))]
        )
        loss = presence_only_loss(
            prior.class_logits(lonlat[batch]), label_t[batch], prior.class_logits(background)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    save_checkpoint(
        directory / "prior",
        prior,
        describe_model(
            prior,
            class_names=names,
            image_encoder="tf_efficientnet_lite0",
            expert_range_species=APP_EXPERT_RANGE,
        ),
    )
    csp_model = LocationImageEncoder(
        LocationEncoderConfig(
            encoding="grid", encoding_kwargs={"frequency_num": 8}, hidden_dim=64, embed_dim=32
        ),
        image_dim=1280,
        objective="mc",
    )
    save_checkpoint(
        directory / "csp", csp_model, describe_model(csp_model, image_encoder="tf_efficientnet_lite0")
    )
    rows = [
        LinkRow(_imagenet_index(lemma), lemma, species, "exact")
        for species, (_, lemma) in APP_SPECIES.items()
    ]
    write_species_link(rows, directory / "imagenet_species_link.csv")
    return directory


@pytest.fixture(scope="session")
def app_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_app_model_dir(tmp_path_factory.mktemp("app-model"))


@pytest.fixture(scope="session")
def app_predictor(app_model_dir: Path):
    from csp.predictor import Predictor

    return Predictor.from_directory(app_model_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(app_predictor, app_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app launched in this process on a free port; yields its base URL."""
    from app.cli import launch
    from app.training import TrainingManager
    from app.ui import build_app

    root = tmp_path_factory.mktemp("app-server")
    training = TrainingManager(Path(__file__).resolve().parent.parent, env={"OMP_NUM_THREADS": "1"})
    demo = build_app(
        app_predictor,
        model_dir=app_model_dir,
        work_dir=root,
        runs_dir=root / "runs",
        training=training,
    )
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    urllib.request.urlopen(url, timeout=30).read()
    yield url
    training.close()
    demo.close()


def write_gps_photo(path: Path, lon: float, lat: float, size: tuple[int, int] = (640, 427)) -> Path:
    """Save scikit-image's 'chelsea' cat photo as a JPEG carrying EXIF GPS at (lon, lat)."""
    from PIL import Image
    from skimage import data

    from app.photos import save_with_gps

    return save_with_gps(Image.fromarray(data.chelsea()).resize(size), path, lon, lat)
