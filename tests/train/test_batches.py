"""Streamed batches (train/batches.py): same weights as in memory, also for a row subset of a
store; objectives draw their own negatives from the sampler they are given or configured with,
split across processes like the batch."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from csp.checkpoint import load_checkpoint
from csp.features import write_store
from csp.samplers import sample_sphere
from tests.synthetic import pairs, small_pretrain_config
from train.batches import BatchRows, negative_locations
from train.data import HELD_OUT_RADIUS_KM, far_from, pairs_away_from_held_out
from train.pretrain import PretrainTask, run_pretrain
from train.runtime import Distributed
from train.where import land_mask


def _config(out, extra=()):
    return small_pretrain_config(out, "cpu", extra)


def test_streaming_from_the_store_gives_the_same_weights_as_in_memory(tmp_path):
    lonlat, features = pairs(640)
    config = _config(tmp_path / "streamed")
    store = write_store(tmp_path / "store", lonlat.numpy(), features.numpy(), config.image_encoder)
    assert store.features.dtype == np.float16 and isinstance(store.features, np.memmap)
    streamed = run_pretrain(_config(tmp_path / "streamed", [f"features={store.directory}"]))
    # In memory: the same pairs as float32 tensors (the store's float16 values, widened).
    in_memory = run_pretrain(
        _config(tmp_path / "memory"),
        pairs=(torch.from_numpy(store.lonlat), torch.from_numpy(np.asarray(store.features, np.float32))),
    )
    a, _ = load_checkpoint(streamed.last_dir)
    b, _ = load_checkpoint(in_memory.last_dir)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)
    assert streamed.history[-1]["loss"] == in_memory.history[-1]["loss"]


def test_streamed_rows_stay_on_the_host_and_match_in_memory_rows():
    features = torch.randn(50, 6).half()
    columns = {"features": features, "labels": torch.arange(50)}
    rows = torch.tensor([3, 7, 11, 40])
    streamed = BatchRows(columns, torch.device("cpu"), stream=True, rows=rows)
    held = BatchRows(columns, torch.device("cpu"), stream=False, rows=rows)
    assert streamed.columns["features"] is features  # nothing copied up front
    indices = torch.tensor([2, 0, 3])
    for out in (streamed.take(indices), held.take(indices)):
        torch.testing.assert_close(out["features"], features[rows[indices]].float())
        assert out["features"].dtype == torch.float32
        assert out["labels"].tolist() == [11, 3, 40]


def test_each_process_keeps_its_share_of_the_global_negatives():
    def draw(rank, world):
        generator = torch.Generator().manual_seed(5)
        session = Distributed(rank, world)
        return negative_locations(sample_sphere, 4, 3, generator, session, torch.device("cpu"))

    whole = negative_locations(
        sample_sphere, 8, 3, torch.Generator().manual_seed(5), Distributed(), torch.device("cpu")
    )
    assert draw(0, 2).shape == (4, 3, 2)
    torch.testing.assert_close(torch.cat([draw(0, 2), draw(1, 2)]), whole)


def test_the_objective_draws_its_negatives_from_the_sampler_it_is_given():
    calls = []

    def northern_box(n, generator=None, device=None):
        calls.append(n)
        u = torch.rand((n, 2), generator=generator, device=device)
        return torch.stack([u[:, 0] * 20 - 10, u[:, 1] * 10 + 40], dim=1)

    config = _config("unused", ["loss.num_random_locations=3"])
    lonlat, features = pairs(256)
    task = PretrainTask(config, lonlat, features, torch.device("cpu"), Distributed(), sampler=northern_box)
    loss, terms = task.objective(torch.arange(128), torch.Generator().manual_seed(0))
    assert calls == [128 * 3]
    assert torch.isfinite(loss) and "random_location" in terms


def test_a_row_file_reads_the_rows_asked_for(tmp_path):
    features = np.arange(40, dtype=np.float16).reshape(10, 4)
    store = write_store(tmp_path / "store", np.zeros((10, 2)), features, "synthetic")
    rows, _ = store.tensors(random_access=True)
    assert rows.shape == (10, 4) and rows[torch.tensor([], dtype=torch.long)].shape == (0, 4)
    np.testing.assert_array_equal(rows[torch.tensor([7, 2, 7])].numpy(), features[[7, 2, 7]])
    with pytest.raises(IndexError):
        rows[torch.tensor([10])]


def _same_weights(a_dir, b_dir):
    a, _ = load_checkpoint(a_dir)
    b, _ = load_checkpoint(b_dir)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)


def test_a_row_subset_of_the_store_trains_as_the_selected_pairs_in_memory(tmp_path):
    lonlat, features = pairs(640)
    store = write_store(tmp_path / "store", lonlat.numpy(), features.numpy(), "tf_efficientnet_lite0")
    rows = torch.from_numpy(np.flatnonzero(store.lonlat[:, 1] > -20))  # a selection, as held-out
    subset = run_pretrain(_config(tmp_path / "rows", [f"features={store.directory}"]), rows=rows)
    selected = (
        torch.from_numpy(store.lonlat[rows.numpy()]),
        torch.from_numpy(np.asarray(store.features[rows.numpy()], np.float32)),
    )
    in_memory = run_pretrain(_config(tmp_path / "memory"), pairs=selected)
    _same_weights(subset.last_dir, in_memory.last_dir)
    assert subset.history[-1]["loss"] == in_memory.history[-1]["loss"]


def test_pairs_away_from_held_out_are_rows_of_the_store(tmp_path):
    lonlat, features = pairs(200)
    store = write_store(tmp_path / "store", lonlat.numpy(), features.numpy(), "tf_efficientnet_lite0")
    held = lonlat[:5].double().numpy()
    splits = SimpleNamespace(records=SimpleNamespace(lonlat=held), val=np.arange(2), test=np.arange(2, 5))
    rows, left_out = pairs_away_from_held_out(_config(tmp_path, [f"features={store.directory}"]), splits)
    expected = np.flatnonzero(far_from(store.lonlat, held, HELD_OUT_RADIUS_KM))
    assert rows.dtype == torch.int64 and rows.tolist() == expected.tolist()
    assert left_out == 200 - len(expected) >= 5


def test_the_negative_locations_come_from_the_configured_sampler():
    lonlat, features = pairs(256)
    rows = torch.arange(256)
    for spec, inside in [
        ("land", lambda p: land_mask().contains(p)),
        ("extent", lambda p: (p[:, 1] >= lonlat[:, 1].min() - 1.0) & (p[:, 1] <= lonlat[:, 1].max() + 1.0)),
    ]:
        config = _config("unused", ["loss.num_random_locations=3", f"negative_locations={spec}"])
        task = PretrainTask(config, lonlat, features, torch.device("cpu"), Distributed(), rows=rows)
        points = task.objective.sampler(500, generator=torch.Generator().manual_seed(0))
        assert points.shape == (500, 2) and bool(inside(points).all()), spec
        loss, _ = task.objective(torch.arange(128), torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
    globe = PretrainTask(_config("unused"), lonlat, features, torch.device("cpu"), Distributed())
    assert globe.objective.sampler is sample_sphere
    moon = _config("unused", ["negative_locations=moon"])
    with pytest.raises(ValueError, match="background 'moon'"):
        PretrainTask(moon, lonlat, features, torch.device("cpu"), Distributed())
