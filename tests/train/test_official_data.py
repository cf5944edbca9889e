"""The CSP reference code's data files feed pretrain and finetune directly.

Written here in its iNaturalist layout (``main/datasets.py``): ``train2018.json`` (COCO-style),
``train2018_locations.json`` beside it (some locations null, as in the released files) and a
feature ``.npy`` with one row per image of the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csp.checkpoint import load_checkpoint
from csp.datasets import read_precomputed
from train.cli import main

SPECIES = {
    "Vireo griseus": (-85.0, 35.0),
    "Phascolarctos cinereus": (147.0, -30.0),
    "Ursus arctos": (20.0, 60.0),
}


def write_reference_split(folder: Path, per_class: int = 30, dim: int = 6) -> tuple[Path, Path]:
    """``train2018.json``, its locations and ``(N, dim)`` features; every 7th image unlocated."""
    rng = np.random.default_rng(0)
    images, annotations, locations = [], [], []
    for category, (lon, lat) in enumerate(SPECIES.values()):
        for _ in range(per_class):
            image_id = len(images) + 100
            images.append({"id": image_id, "file_name": f"train_val2018/{image_id}.jpg"})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": category})
            located = len(locations) % 7 != 3
            point = (lon + rng.normal(0, 3), lat + rng.normal(0, 3)) if located else (None, None)
            locations.append({"id": image_id, "lon": point[0], "lat": point[1], "user_id": 1, "date_c": 0.5})
    categories = [{"id": i, "name": name} for i, name in enumerate(SPECIES)]
    split = folder / "train2018.json"
    split.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    (folder / "train2018_locations.json").write_text(json.dumps(locations))
    features = folder / "features_inception_pretrain" / "inat2018_train_pretrain_net_feats.npy"
    features.parent.mkdir()
    np.save(features, rng.normal(size=(len(images), dim)).astype(np.float32))
    return split, features


def test_feature_rows_follow_the_located_images(tmp_path: Path) -> None:
    split, features = write_reference_split(tmp_path)
    records = read_precomputed(features, split)
    everything = np.load(features)
    kept = [i for i in range(len(everything)) if i % 7 != 3]
    np.testing.assert_array_equal(records.features, everything[kept])
    assert len(records) == len(kept) and records.dropped == {"missing lat/lon": len(everything) - len(kept)}
    assert records.class_names == sorted(SPECIES, key=list(SPECIES).index)
    lonely = tmp_path / "features_inception_pretrain" / "val2018.json"
    lonely.write_text(split.read_text())
    with pytest.raises(FileNotFoundError, match="no locations file beside it"):
        read_precomputed(features, lonely)


@pytest.mark.slow
def test_pretrain_then_finetune_on_reference_files(tmp_path: Path) -> None:
    split, features = write_reference_split(tmp_path)
    common = ["--epochs", "1", "--device", "cpu", "--no-progress"]
    pretrain = [
        "pretrain",
        "--preset",
        "official-inat",
        "--features",
        str(features),
        "--locations",
        str(split),
    ]
    assert main([*pretrain, "--out", str(tmp_path / "pre"), *common, "--set", "optim.batch_size=32"]) == 0
    model, meta = load_checkpoint(tmp_path / "pre" / "checkpoints" / "best")
    assert (
        model.image_dim == 6
        and meta.image_encoder == ""
        and meta.cosine_similarity
        and meta.temperature == 20.0
    )
    finetune = ["finetune", "--preset", "official-inat-finetune", "--csv", str(split)]
    finetune += ["--init-from", str(tmp_path / "pre" / "checkpoints" / "best"), "--out", str(tmp_path / "ft")]
    options = [
        "--set",
        "data.clean=false",
        "--set",
        "data.label_fraction=1.0",
        "--set",
        "optim.batch_size=16",
    ]
    assert main([*finetune, *common, *options]) == 0
    prior, meta = load_checkpoint(tmp_path / "ft" / "checkpoints" / "best")
    assert meta.class_names == list(SPECIES) and prior.config.layer_norm
