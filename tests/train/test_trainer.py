"""End-to-end trainer runs on small generated data: learning, resume, checkpoints, CLI."""

import json

import numpy as np
import pytest
import torch

from csp.checkpoint import load_checkpoint
from csp.models import LocationEncoder, LocationImageEncoder
from tests.synthetic import SPECIES_CENTRES, pairs, write_species_csv
from train.config import FinetuneConfig, PretrainConfig, load_config
from train.data import label_fraction_subset, split_by_class
from train.evaluate import evaluate_checkpoint
from train.finetune import run_finetune
from train.pretrain import run_pretrain

SMALL_MODEL = [
    "model.encoding_kwargs={frequency_num: 8}",
    "model.hidden_dim=64",
    "model.embed_dim=32",
    "runtime.progress=false",
]


def _pretrain_config(out, epochs=6, extra=()):
    return load_config(
        PretrainConfig,
        "csp-mc-bld",
        [
            *SMALL_MODEL,
            f"runtime.out_dir={out}",
            f"optim.epochs={epochs}",
            "optim.batch_size=256",
            "optim.lr=0.003",
            *extra,
        ],
    )


def _sup_only_config(tmp_path, per_species=60, extra=()):
    """Sup.-only fine-tuning of the small model on generated species observations."""
    csv_path = write_species_csv(tmp_path / "species.csv", per_species=per_species)
    return load_config(
        FinetuneConfig,
        "sup-only",
        [
            *SMALL_MODEL,
            f"runtime.out_dir={tmp_path / 'ft'}",
            f"data.csv={csv_path}",
            "data.clean=false",
            *extra,
        ],
    )


def test_pretraining_lowers_the_contrastive_loss_and_learns_retrieval(tmp_path):
    config = _pretrain_config(tmp_path / "pre")
    result = run_pretrain(config, pairs=pairs())
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.9 * losses[0]
    retrieval = [r["val_retrieval_top5"] for r in result.history]
    # 102 held-out pairs: chance top-5 is about 5%.
    assert retrieval[-1] > 20
    model, meta = load_checkpoint(result.best_dir)
    assert isinstance(model, LocationImageEncoder) and meta.class_names == []
    log = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7))
    status = json.loads((tmp_path / "pre" / "status.json").read_text())
    assert status["state"] == "completed"


def test_finetuning_beats_chance_and_evaluate_uses_the_same_split(tmp_path):
    config = _sup_only_config(tmp_path, extra=["optim.epochs=15", "optim.batch_size=64", "optim.lr=0.01"])
    result = run_finetune(config)
    model, meta = load_checkpoint(result.best_dir)
    assert isinstance(model, LocationEncoder)
    assert sorted(meta.class_names) == sorted(SPECIES_CENTRES)
    report = evaluate_checkpoint(result.best_dir, split="test")
    assert report["points"] == 6 * 6  # 10% of 60 per species
    assert report["location"]["top1"] > 60  # chance: 16.7%
    # Uninformative image predictions: geo-aware equals the prior alone, image-only is chance.
    uniform = np.full((36, 6), 1 / 6, dtype=np.float32)
    np.save(tmp_path / "probs.npy", uniform)
    geo = evaluate_checkpoint(result.best_dir, split="test", image_probs=tmp_path / "probs.npy")
    assert geo["geo_aware"] == geo["location"]
    assert geo["image"]["top1"] == 0.0  # all tied: ties count against the true class
    np.save(tmp_path / "bad.npy", uniform[:5])
    with pytest.raises(ValueError, match="expected \\(36, 6\\)"):
        evaluate_checkpoint(result.best_dir, split="test", image_probs=tmp_path / "bad.npy")


def test_finetune_from_pretrained_reuses_the_body(tmp_path):
    pre = run_pretrain(_pretrain_config(tmp_path / "pre", epochs=1), pairs=pairs(512))
    csv_path = write_species_csv(tmp_path / "species.csv")
    config = load_config(
        FinetuneConfig,
        "finetune",
        [
            f"runtime.out_dir={tmp_path / 'ft'}",
            f"data.csv={csv_path}",
            "data.clean=false",
            f"init_from={pre.best_dir}",
            "optim.epochs=1",
            "optim.batch_size=64",
            "runtime.progress=false",
            "freeze_encoder=true",
        ],
    )
    result = run_finetune(config)
    pretrained, _ = load_checkpoint(pre.best_dir)
    tuned, _ = load_checkpoint(result.last_dir)
    body = pretrained.location_encoder.net.state_dict()
    for key, value in tuned.net.state_dict().items():
        assert torch.equal(value, body[key])  # frozen body, trained head only


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    data = pairs(1024)
    straight = run_pretrain(_pretrain_config(tmp_path / "a", epochs=4), pairs=data)
    run_pretrain(_pretrain_config(tmp_path / "b", epochs=2), pairs=data)
    with pytest.raises(FileExistsError):
        run_pretrain(_pretrain_config(tmp_path / "b", epochs=4), pairs=data)
    resumed = run_pretrain(_pretrain_config(tmp_path / "b", epochs=4), resume=True, pairs=data)
    a, _ = load_checkpoint(straight.last_dir)
    b, _ = load_checkpoint(resumed.last_dir)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_split_is_stratified_and_label_fraction_is_deterministic():
    labels = torch.arange(50).repeat_interleave(10).numpy()
    train, val, test = split_by_class(labels, 0.1, 0.1, seed=0)
    assert len(set(train) | set(val) | set(test)) == 500 and len(test) == 50 and len(val) == 50
    again = split_by_class(labels, 0.1, 0.1, seed=0)
    assert all((x == y).all() for x, y in zip((train, val, test), again, strict=True))
    few = label_fraction_subset(train, labels, 0.05, seed=1)
    assert len(few) == 20 and (few == label_fraction_subset(train, labels, 0.05, seed=1)).all()
    assert not (few == label_fraction_subset(train, labels, 0.05, seed=2)).all()
    half = label_fraction_subset(train, labels, 0.5, seed=0)
    assert set(torch.bincount(torch.from_numpy(labels[half])).tolist()) == {4}


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path):
    overrides = ["optim.epochs=40", "optim.batch_size=64", "optim.lr=0.0", "optim.patience=2"]
    config = _sup_only_config(tmp_path, extra=overrides)
    first = run_finetune(config)
    assert len(first.history) == 3  # lr 0: no improvement after the first epoch
    again = run_finetune(config, resume=True)
    assert again.history == []
    lines = (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_far_from_uses_great_circle_kilometres():
    from train.data import far_from

    points = np.array([[0.0, 0.0], [10.0, 10.0], [179.999, 0.0], [0.0, 89.9]])
    others = np.array([[0.005, 0.0], [-179.999, 0.0], [120.0, 89.9]])
    # 0.005 deg of longitude at the equator is 0.56 km; across the antimeridian 0.22 km; near the
    # pole 120 deg of longitude at 89.9 deg N is about 19 km.
    assert far_from(points, others, 1.0).tolist() == [False, True, False, True]


def test_finetune_on_classes_too_small_for_a_validation_split(tmp_path):
    # Two observations per species: none is held out, so there is no validation split.
    config = _sup_only_config(tmp_path, per_species=2, extra=["optim.epochs=3", "optim.batch_size=4"])
    result = run_finetune(config)
    assert [r["val_score"] for r in result.history] == [1.0, 2.0, 3.0]
    assert result.best_dir.resolve() == result.last_dir.resolve()  # the last epoch is kept
    with pytest.raises(ValueError, match="no points"):
        evaluate_checkpoint(result.best_dir, split="test")
