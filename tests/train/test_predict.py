"""python -m train predict (scores CSV, embeddings, GeoTIFF) and evaluate --presence-absence."""

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from tests.train.test_own_data import REGION_CENTRES, TINY, write_region_csv, write_sites_csv
from train.cli import main


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """A small model trained on the four-species regional file, with presence-absence test sites."""
    root = tmp_path_factory.mktemp("region")
    data = write_region_csv(root / "records.csv", per_species=60)
    sites = write_sites_csv(root / "sites.csv", n=120)
    argv = ["finetune", "--data", str(data), "--test", str(sites), "--out", str(root / "run"), *TINY]
    assert main([*argv, "--epochs", "12", "--set", "optim.lr=0.01", "--set", "optim.batch_size=64"]) == 0
    return root


def test_scores_keep_every_input_row_and_column(region_run, tmp_path):
    points = tmp_path / "points.csv"
    points.write_text("site,x,y,note\na,-120.0,37.0,centre of sp1\nb,,,no location\nc,-117.0,33.5,sp4\n")
    out = tmp_path / "scores.csv"
    assert (
        main(["predict", "--checkpoint", str(region_run / "run"), "--points", str(points), "--out", str(out)])
        == 0
    )
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["site", "x", "y", "note", *sorted(REGION_CENTRES)]
    assert table["note"].tolist() == ["centre of sp1", "no location", "sp4"]
    assert table.loc[1, "sp1"] == ""  # no location, no score
    scores = pd.read_csv(out)
    assert scores.loc[0, "sp1"] > scores.loc[2, "sp1"] and scores.loc[2, "sp4"] > scores.loc[0, "sp4"]
    assert (
        ((scores[sorted(REGION_CENTRES)].dropna() >= 0) & (scores[sorted(REGION_CENTRES)].dropna() <= 1))
        .all()
        .all()
    )
    only = tmp_path / "only.csv"
    checkpoint = region_run / "run" / "checkpoints" / "best"  # a checkpoint directory works too
    argv = ["predict", "--checkpoint", str(checkpoint), "--points", str(points), "--out", str(only)]
    assert main([*argv, "--classes", "sp2"]) == 0
    assert list(pd.read_csv(only).columns) == ["site", "x", "y", "note", "sp2"]


def test_embeddings_and_clear_errors(region_run, tmp_path, capsys):
    points = tmp_path / "points.tsv"
    points.write_text("east\tnorth\n-120\t37\n-118\t35\n")
    vectors = tmp_path / "emb.npy"
    argv = ["predict", "--checkpoint", str(region_run / "run"), "--points", str(points)]
    assert main([*argv, "--lon-col", "east", "--lat-col", "north", "--embeddings", str(vectors)]) == 0
    assert np.load(vectors).shape == (2, 16)
    assert main([*argv, "--out", str(tmp_path / "x.csv")]) == 2
    assert "no latitude column found" in capsys.readouterr().err
    assert (
        main(["predict", "--checkpoint", str(region_run / "run"), "--raster", str(tmp_path / "m.tif")]) == 2
    )
    assert "--raster needs --bbox" in capsys.readouterr().err
    assert main([*argv, "--lon-col", "east", "--lat-col", "north", "--out", "o.csv", "--classes", "sp9"]) == 2
    assert "not classes of" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(tmp_path),
                "--raster",
                "m.tif",
                "--bbox",
                "0,0,1,1",
                "--resolution",
                "1",
            ]
        )
        == 2
    )
    assert "neither a model directory" in capsys.readouterr().err


def test_geotiff_range_map(region_run, tmp_path):
    out = tmp_path / "map.tif"
    argv = ["predict", "--checkpoint", str(region_run / "run"), "--raster", str(out)]
    assert main([*argv, "--bbox", "-125,32,-114,42", "--resolution", "0.25", "--classes", "sp1", "sp4"]) == 0
    with rasterio.open(out) as tif:
        assert tif.crs.to_epsg() == 4326 and (tif.width, tif.height, tif.count) == (44, 40, 2)
        assert tif.descriptions == ("sp1", "sp4")
        assert tif.transform.c == -125 and tif.transform.f == 42 and tif.transform.a == 0.25
        sp1 = tif.read(1)
        row, col = tif.index(-120.0, 37.0)
        far_row, far_col = tif.index(-116.0, 41.0)
        assert sp1[row, col] > sp1[far_row, far_col] and 0 <= sp1.min() and sp1.max() <= 1


def test_evaluate_presence_absence_reports_model_and_kde_per_species(region_run, capsys):
    assert main(["evaluate", "--checkpoint", str(region_run / "run"), "--presence-absence"]) == 0
    out = capsys.readouterr().out
    assert "model" in out and "KDE" in out and "KDE bandwidth" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["means"]["species"] == 4
    assert summary["means"]["model_auc"] > 0.8 and summary["means"]["kde_auc"] > 0.8
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(region_run / "run"),
                "--presence-absence",
                str(region_run / "sites.csv"),
            ]
        )
        == 0
    )
