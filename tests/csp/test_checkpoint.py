"""Checkpoint round trip and every way a checkpoint can be wrong."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from csp.checkpoint import (
    META_FILE,
    SCHEMA_VERSION,
    CheckpointError,
    describe_model,
    load_checkpoint,
    point_link,
    read_meta,
    save_checkpoint,
    upgrade_checkpoint,
)
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder


def _encoder() -> LocationImageEncoder:
    torch.manual_seed(0)
    config = LocationEncoderConfig(
        encoding="rbf",
        encoding_kwargs={"num_anchors": 16, "seed": 3},
        embed_dim=8,
        hidden_dim=16,
        num_classes=4,
    )
    return LocationImageEncoder(config, image_dim=10, objective="mc")


def test_round_trip_restores_weights_buffers_and_meta(tmp_path):
    model = _encoder()
    meta = describe_model(model, class_names=list("abcd"), image_encoder="tf_efficientnet_lite0")
    save_checkpoint(tmp_path / "ckpt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "ckpt")
    assert loaded_meta.class_names == list("abcd")
    assert loaded_meta.image_encoder == "tf_efficientnet_lite0"
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.tensor([[10.0, 20.0], [-170.0, -45.0]])
    model.eval()
    assert torch.equal(model.location_encoder(x), loaded.location_encoder(x))


def test_bare_location_encoder_round_trip(tmp_path):
    model = LocationEncoder(LocationEncoderConfig(encoding="wrap", embed_dim=4, num_classes=2))
    save_checkpoint(tmp_path / "c", model, describe_model(model, class_names=["x", "y"]))
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert isinstance(loaded, LocationEncoder)


def test_overwrite_is_atomic_and_link_points(tmp_path):
    model = _encoder()
    meta = describe_model(model)
    target = save_checkpoint(tmp_path / "step-1", model, meta)
    save_checkpoint(tmp_path / "step-1", model, meta)  # replace in place
    point_link(tmp_path / "last", target)
    assert (tmp_path / "last").is_symlink()
    load_checkpoint(tmp_path / "last")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_missing_truncated_tampered_and_pickled_weights_are_refused(tmp_path):
    model = _encoder()
    directory = save_checkpoint(tmp_path / "c", model, describe_model(model))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    weights = directory / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(directory)
    # Without the recorded hash, the truncated file is still refused by the reader.
    meta = json.loads((directory / "model.json").read_text())
    del meta["weights_sha256"]
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(directory)
    weights.write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(directory)
    weights.unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(directory)


def test_schema_version_and_config_mismatch_are_refused(tmp_path):
    model = _encoder()
    directory = save_checkpoint(tmp_path / "c", model, describe_model(model))
    meta_path = directory / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"schema_version": 99}))
    with pytest.raises(CheckpointError, match="schema version 99"):
        load_checkpoint(directory)
    meta["location_encoder"]["embed_dim"] = 16
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_checkpoint(directory)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(directory)


def _as_schema_1(meta_path: Path) -> dict:
    """Rewrite a checkpoint's model.json as schema 1 wrote it: the similarity and the
    expert-range classes only inside the free-form ``train`` record."""
    record = json.loads(meta_path.read_text())
    v1 = {
        k: v
        for k, v in record.items()
        if k not in ("cosine_similarity", "temperature", "expert_range_species")
    }
    v1["schema_version"] = 1
    v1["train"] = {
        "config": {"loss": {"normalize": record["cosine_similarity"], "temperature": record["temperature"]}},
        "expert_range_species": record["expert_range_species"],
        "stage": "finetune",
    }
    meta_path.write_text(json.dumps(v1))
    return v1


def test_schema_1_files_are_migrated_on_read_and_upgraded_in_place(tmp_path):
    model = LocationImageEncoder(
        LocationEncoderConfig(hidden_dim=32, embed_dim=16), image_dim=8, objective="mc"
    )
    meta = describe_model(
        model, cosine_similarity=True, temperature=0.25, expert_range_species=["Panthera leo"]
    )
    directory = save_checkpoint(tmp_path / "c", model, meta)
    _as_schema_1(directory / META_FILE)
    migrated = read_meta(directory)
    assert migrated.schema_version == SCHEMA_VERSION
    assert (migrated.cosine_similarity, migrated.temperature) == (True, 0.25)
    assert migrated.expert_range_species == ["Panthera leo"]
    assert "expert_range_species" not in migrated.train and migrated.train["stage"] == "finetune"
    assert json.loads((directory / META_FILE).read_text())["schema_version"] == 1  # read only
    assert upgrade_checkpoint(directory) and not upgrade_checkpoint(directory)
    upgraded, upgraded_meta = load_checkpoint(directory)  # the weights hash still matches
    assert upgraded_meta == migrated
    for (key, a), (_, b) in zip(model.state_dict().items(), upgraded.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_a_schema_1_file_without_loss_settings_gets_the_defaults(tmp_path):
    model = _encoder()
    directory = save_checkpoint(tmp_path / "c", model, describe_model(model))
    record = json.loads((directory / META_FILE).read_text())
    for key in ("cosine_similarity", "temperature", "expert_range_species"):
        record.pop(key)
    (directory / META_FILE).write_text(json.dumps(record | {"schema_version": 1, "train": {}}))
    meta = read_meta(directory)
    assert (meta.cosine_similarity, meta.temperature, meta.expert_range_species) == (False, 1.0, [])


def test_the_shipped_default_is_in_the_current_schema():
    root = Path(__file__).resolve().parents[2] / "assets" / "default"
    for part in ("prior", "csp"):
        assert json.loads((root / part / META_FILE).read_text())["schema_version"] == SCHEMA_VERSION
    assert read_meta(root / "prior").expert_range_species  # the pseudo-presence species are flagged
