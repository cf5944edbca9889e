"""Feature store: sharding, resume, corrupt images, ranks, merge, reading back.

The store is tested with a tiny randomly initialised timm model (``test_efficientnet``) at
32 px for speed: these tests are about the store, the real weights are tested in
test_image_encoder.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from csp.chips import ChipLoader, EquirectangularImage
from csp.features import (
    FeatureStore,
    ImageRecord,
    extract_features,
    load_image_file,
    merge_shards,
)
from csp.image_encoder import ImageEncoder

BLUE_MARBLE = Path(__file__).resolve().parents[2] / "assets/basemap/blue_marble_5400x2700.jpg"
N_IMAGES = 18
SHARD = 4  # -> 5 shards, the last one with 2 records


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    return ImageEncoder(model, "test_efficientnet", image_size=32)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[ImageRecord]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_IMAGES):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        lon, lat = float(rng.uniform(-180, 180)), float(rng.uniform(-90, 90))
        out.append(ImageRecord(f"id{i}", str(path), lon, lat, label=f"class{i % 3}"))
    # Record 6 is not an image at all, record 13 is a truncated JPEG.
    Path(out[6].path).write_bytes(b"this is not a PNG")
    jpeg = folder / "truncated.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    out[13] = ImageRecord("id13", str(jpeg), out[13].lon, out[13].lat, label="class1")
    return out


BAD = {"id6", "id13"}


def _extract(records, encoder, out_dir, **kwargs):
    options = {"batch_size": 3, "num_workers": 0, "shard_size": SHARD, "progress": False}
    return extract_features(records, encoder, out_dir, **{**options, **kwargs})


@pytest.fixture(scope="module")
def reference(records, encoder, tmp_path_factory) -> FeatureStore:
    """An uninterrupted single-rank run, merged."""
    out = tmp_path_factory.mktemp("reference")
    _extract(records, encoder, out, num_workers=2)
    return merge_shards(out)


def _shard_mtimes(out_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out_dir.glob("shard-*"))}


def test_store_contents_match_the_records(reference, records, encoder) -> None:
    good = [r for r in records if r.id not in BAD]
    assert len(reference) == len(good) == N_IMAGES - 2
    assert reference.ids == [r.id for r in good]
    assert reference.features.dtype == np.float16
    assert isinstance(reference.features, np.memmap)
    assert reference.features.shape == (len(good), encoder.feature_dim)
    np.testing.assert_array_equal(
        reference.lonlat, np.array([[r.lon, r.lat] for r in good], dtype=np.float32)
    )
    assert reference.labels == [r.label for r in good]
    assert reference.paths == [r.path for r in good]
    expected = encoder.features(encoder.preprocess([load_image_file(good[4])]))[0]
    np.testing.assert_allclose(reference.features[4].astype(np.float32), expected.numpy(),
                               rtol=2e-3, atol=2e-3)
    manifest = reference.manifest
    assert manifest["encoder"] == "test_efficientnet"
    assert manifest["num_records"] == N_IMAGES and manifest["num_shards"] == 5
    assert manifest["finished_shards"] == [0, 1, 2, 3, 4]
    assert manifest["num_features"] == len(good) and manifest["num_failed"] == 2


def test_corrupt_images_are_skipped_and_reported(reference, records) -> None:
    report_path = reference.directory / "report-rank-0000.json"
    report = json.loads(report_path.read_text())
    assert report["num_failed"] == 2
    failed = {row["id"]: row for row in report["failed"]}
    assert set(failed) == BAD
    assert failed["id6"]["path"] == records[6].path
    assert failed["id13"]["path"].endswith("truncated.jpg")
    assert all(row["reason"] for row in failed.values())


def test_to_tensors(reference) -> None:
    features, lonlat = reference.to_tensors("cpu")
    assert features.dtype == torch.float32 and features.shape == reference.features.shape
    assert lonlat.dtype == torch.float32 and lonlat.shape == (len(reference), 2)
    np.testing.assert_array_equal(features.numpy(), reference.features.astype(np.float32))


def test_resume_after_interruption_does_not_redo_finished_shards(
    records, encoder, reference, tmp_path
) -> None:
    def crash_in_shard_3(record: ImageRecord) -> Image.Image:
        if record.id == f"id{3 * SHARD}":
            raise RuntimeError("simulated crash")
        return load_image_file(record)

    with pytest.raises(RuntimeError, match="simulated crash"):
        _extract(records, encoder, tmp_path, image_loader=crash_in_shard_3)
    before = _shard_mtimes(tmp_path)
    assert sorted(before) == [f"shard-0000-0000{s}.{ext}" for s in range(3)
                              for ext in ("json", "npy")]
    with pytest.raises(RuntimeError, match=r"2 of 5 shards are not finished: \[3, 4\]"):
        merge_shards(tmp_path)

    report = _extract(records, encoder, tmp_path)
    assert report.shards_skipped == [0, 1, 2] and report.shards_written == [3, 4]
    assert {r["id"] for r in report.failed} == BAD  # failures of skipped shards still reported
    after = _shard_mtimes(tmp_path)
    assert all(after[name] == mtime for name, mtime in before.items())
    resumed = merge_shards(tmp_path)
    assert resumed.ids == reference.ids
    np.testing.assert_array_equal(resumed.features, reference.features)


def test_shard_without_its_index_json_is_redone(records, encoder, reference, tmp_path) -> None:
    _extract(records, encoder, tmp_path)
    (tmp_path / "shard-0000-00004.json").unlink()  # as if killed between .npy and .json
    report = _extract(records, encoder, tmp_path)
    assert report.shards_written == [4] and report.shards_skipped == [0, 1, 2, 3]
    np.testing.assert_array_equal(merge_shards(tmp_path).features, reference.features)


def test_two_ranks_write_disjoint_shards_and_merge_like_one(
    records, encoder, reference, tmp_path
) -> None:
    for rank in (0, 1):
        report = _extract(records, encoder, tmp_path, rank=rank, world_size=2)
        assert report.shards_written == [s for s in range(5) if s % 2 == rank]
    names = sorted(p.name for p in tmp_path.glob("shard-*.npy"))
    assert names == ["shard-0000-00000.npy", "shard-0000-00002.npy", "shard-0000-00004.npy",
                     "shard-0001-00001.npy", "shard-0001-00003.npy"]
    merged = merge_shards(tmp_path)
    assert merged.ids == reference.ids
    assert merged.labels == reference.labels
    np.testing.assert_array_equal(merged.lonlat, reference.lonlat)
    np.testing.assert_array_equal(merged.features, reference.features)


def test_merge_is_idempotent(reference) -> None:
    path = reference.directory / "features.f16"
    mtime = path.stat().st_mtime_ns
    again = merge_shards(reference.directory)
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.features, reference.features)


def test_generated_chips_go_through_the_same_extraction(encoder, tmp_path) -> None:
    earth = EquirectangularImage.open(BLUE_MARBLE)
    places = [(10.0, 23.0), (-150.0, 0.0), (180.0, 60.0), (0.0, 90.0), (-62.0, -4.0)]
    chip_records = [ImageRecord(f"chip{i}", None, lon, lat) for i, (lon, lat) in
                    enumerate(places)]
    loader = ChipLoader(earth, 2.0, 32)
    _extract(chip_records, encoder, tmp_path, image_loader=loader, shard_size=2)
    store = merge_shards(tmp_path)
    assert len(store) == 5 and store.labels is None and store.paths == [None] * 5
    np.testing.assert_array_equal(store.lonlat, np.array(places, dtype=np.float32))
    expected = encoder.features(encoder.preprocess([earth.chip(180.0, 60.0, 2.0, 32)]))[0]
    np.testing.assert_allclose(store.features[2].astype(np.float32), expected.numpy(),
                               rtol=2e-3, atol=2e-3)


def test_out_dir_of_a_different_run_is_refused(records, encoder, reference) -> None:
    with pytest.raises(ValueError, match="different extraction"):
        _extract(records[:10], encoder, reference.directory)


def test_bad_arguments(records, encoder, tmp_path) -> None:
    with pytest.raises(ValueError, match="rank"):
        _extract(records, encoder, tmp_path, rank=2, world_size=2)
    with pytest.raises(ValueError, match="duplicate record id 'id0'"):
        _extract([records[0], records[0]], encoder, tmp_path)
    with pytest.raises(ValueError, match="no records"):
        _extract([], encoder, tmp_path)
    with pytest.raises(ValueError, match="outside"):
        ImageRecord("x", None, 200.0, 0.0)


def test_unmerged_store_cannot_be_opened(records, encoder, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        FeatureStore.open(tmp_path)
    _extract(records[:2], encoder, tmp_path)
    with pytest.raises(FileNotFoundError, match="not merged"):
        FeatureStore.open(tmp_path)


def test_store_with_only_unreadable_images_is_empty(records, encoder, tmp_path) -> None:
    report = _extract([records[6], records[13]], encoder, tmp_path)
    assert report.items_encoded == 0 and report.num_failed == 2
    store = merge_shards(tmp_path)
    assert len(store) == 0 and store.features.shape == (0, encoder.feature_dim)
    features, lonlat = store.to_tensors()
    assert features.shape == (0, encoder.feature_dim) and lonlat.shape == (0, 2)
