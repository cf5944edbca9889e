"""The command line end to end: extract chip features, pre-train on them, and --help."""

import csv

import pytest

from csp.checkpoint import load_checkpoint
from csp.features import FeatureStore
from train.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("extract", "pretrain", "finetune", "evaluate", "build-default", "experiment"):
        assert command in text


@pytest.mark.slow
def test_extract_chips_then_pretrain(tmp_path):
    points = tmp_path / "points.csv"
    with open(points, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "lat", "lon"])
        for i in range(48):
            writer.writerow([f"p{i}", -60 + 2.5 * i, -170 + 7 * i])
    store = tmp_path / "features"
    args = ["extract", "--csv", str(points), "--out", str(store), "--chips-from",
            "assets/basemap/blue_marble_5400x2700.jpg", "--chip-px", "32", "--workers", "0",
            "--device", "cpu"]
    assert main(args) == 0
    opened = FeatureStore.open(store)
    assert len(opened) == 48 and opened.feature_dim == 1280
    assert main(args) == 0  # a finished extraction is not redone
    out = tmp_path / "pre"
    assert main(["pretrain", "--features", str(store), "--out", str(out), "--epochs", "2",
                 "--encoding", "sphereC", "--set", "optim.batch_size=16", "--set", "val_fraction=0.2",
                 "--no-progress", "--device", "cpu"]) == 0
    model, meta = load_checkpoint(out / "checkpoints" / "best")
    assert meta.image_encoder == "tf_efficientnet_lite0" and meta.image_dim == 1280
    assert model.location_encoder.config.encoding == "sphereC"
    assert main(["pretrain", "--features", str(store), "--out", str(out), "--no-progress"]) == 2
