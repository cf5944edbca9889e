"""The trainer on a user's own regional occurrence file (issue 13): one test per stumble."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from csp.checkpoint import load_checkpoint
from tests.synthetic import write_species_csv
from train.cli import build_parser, main
from train.config import DataConfig, FinetuneConfig, load_config
from train.data import load_species
from train.finetune import region_min_radius, run_finetune

REGION_CENTRES = {"sp1": (-120.0, 37.0), "sp2": (-118.0, 35.0), "sp3": (-122.0, 39.0), "sp4": (-117.0, 33.5)}
TINY = ["--no-progress", "--set", "model.hidden_dim=32", "--set", "model.embed_dim=16"]


def write_region_csv(path: Path, per_species: int = 60, header=("spid", "x", "y"), seed: int = 0) -> Path:
    """Presences of four species around their own centres in California (``spid, x, y``)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if path.suffix == ".txt" else ",")
        writer.writerow(header)
        for name, (lon, lat) in REGION_CENTRES.items():
            for dx, dy in rng.normal(0, 0.6, (per_species, 2)):
                writer.writerow([name, round(lon + dx, 4), round(lat + dy, 4)])
    return path


def write_sites_csv(path: Path, n: int = 80, seed: int = 1) -> Path:
    """Presence-absence sites (long layout): a species is present within 1 degree of its centre."""
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.uniform(-124, -115, n), rng.uniform(32, 41, n)])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site", "x", "y", "spid", "pa"])
        for i, (lon, lat) in enumerate(points):
            for name, (cx, cy) in REGION_CENTRES.items():
                present = int(np.hypot(lon - cx, lat - cy) < 1.5)
                writer.writerow([i, round(lon, 4), round(lat, 4), name, present])
    return path


def _finetune(tmp_path, *args, out="run"):
    return main(["finetune", "--out", str(tmp_path / out), "--epochs", "2", *TINY, *args])


def _config(tmp_path, out="run"):
    return yaml.safe_load((tmp_path / out / "config.yaml").read_text())


def test_columns_by_flag_and_errors_name_file_line_and_column(tmp_path, capsys):
    data = write_region_csv(tmp_path / "records.csv", header=("species_code", "east", "north"))
    flags = ["--lon-col", "east", "--lat-col", "north", "--label-col", "species_code"]
    assert _finetune(tmp_path, "--data", str(data), *flags) == 0
    recorded = _config(tmp_path)["data"]
    assert (recorded["lon_col"], recorded["lat_col"], recorded["label_col"]) == (
        "east",
        "north",
        "species_code",
    )
    with open(data, "a") as handle:
        handle.write("sp1,-120.5,95\n")
    assert _finetune(tmp_path, "--data", str(data), *flags, "--clean", "none", out="bad") == 2
    err = capsys.readouterr().err
    assert f"{data}: line 242, columns 'east'/'north': latitude 95.0 is outside" in err
    assert main(["finetune", "--data", str(data), "--lon-col", "east", "--out", str(tmp_path / "x")]) == 2
    assert (
        "no latitude column found" in (err := capsys.readouterr().err)
        and "(--lat-col on the command line)" in err
    )
    assert (
        main(["finetune", "--data", str(data), *flags[2:], "--lon-col", "nope", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "column 'nope' (lon_col) is missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("xy.csv", ("spid", "x", "y")),
        ("darwin.csv", ("scientificName", "decimalLongitude", "decimalLatitude")),
        ("plain.csv", ("species", "longitude", "latitude")),
        (
            "occurrence.txt",
            ("gbifID\toccurrenceID\tscientificName\tspecies\tdecimalLatitude\tdecimalLongitude",),
        ),
    ],
)
def test_common_column_names_are_recognised(tmp_path, name, header):
    path = tmp_path / name
    if name == "occurrence.txt":  # GBIF: tab-separated, species wins over scientificName
        rng = np.random.default_rng(0)
        lines = [header[0]]
        for k, (sp, (lon, lat)) in enumerate(REGION_CENTRES.items()):
            for i in range(20):
                lines.append(
                    f"{k}{i}\turn:{k}{i}\t{sp} (L., 1758)\t{sp}\t"
                    f"{lat + rng.normal():.4f}\t{lon + rng.normal():.4f}"
                )
        path.write_text("\n".join(lines) + "\n")
    else:
        write_region_csv(path, per_species=20, header=header)
    splits = load_species(DataConfig(csv=str(path)))
    assert splits.class_names == sorted(REGION_CENTRES)
    assert -125 < splits.records.lonlat[:, 0].min() and splits.records.lonlat[:, 1].max() < 42


def test_nested_set_keys_convert_by_type_and_encodings_validate_at_load():
    config = load_config(FinetuneConfig, "sup-only", ["model.encoding_kwargs.min_radius=0.1"])
    assert config.model.encoding_kwargs == {"frequency_num": 32, "min_radius": 0.1, "max_radius": 360.0}
    assert config.scale == "fixed"  # a hand-set wavelength is not replaced by the region's
    assert (
        load_config(
            FinetuneConfig, "sup-only", ["model.encoding_kwargs.min_radius=1e-2"]
        ).model.encoding_kwargs["min_radius"]
        == 0.01
    )
    rbf = load_config(FinetuneConfig, "sup-only", ["model.encoding=rbf"])
    assert rbf.model.encoding_kwargs == {"num_anchors": 256, "kernel_size": 10.0, "seed": 0}
    with pytest.raises(ValueError, match="'rbf'.*unexpected keyword argument 'min_radius'"):
        load_config(FinetuneConfig, "sup-only", ["model.encoding=rbf", "model.encoding_kwargs.min_radius=1"])
    with pytest.raises(ValueError, match="min_radius.*must be a number, got 'abc'"):
        load_config(FinetuneConfig, "sup-only", ["model.encoding_kwargs.min_radius=abc"])


def test_init_from_another_encoding_is_an_error_unless_reencoding(tmp_path, capsys):
    data = write_region_csv(tmp_path / "records.csv")
    assert _finetune(tmp_path, "--data", str(data), out="grid") == 0
    pretrained = tmp_path / "grid" / "checkpoints" / "best"
    # No encoding asked for: the checkpoint's architecture, recorded as such.
    assert _finetune(tmp_path, "--data", str(data), "--init-from", str(pretrained), out="same") == 0
    recorded = _config(tmp_path, "same")["model"]
    assert recorded["hidden_dim"] == 32 and recorded["encoding"] == "grid"
    assert recorded["encoding_kwargs"] == _config(tmp_path, "grid")["model"]["encoding_kwargs"]
    tuned, _ = load_checkpoint(tmp_path / "same" / "checkpoints" / "best")
    assert tuned.config.encoding_kwargs == recorded["encoding_kwargs"]
    # Another encoding: a clear error, or a new first layer with --reencode.
    assert (
        _finetune(
            tmp_path, "--data", str(data), "--init-from", str(pretrained), "--encoding", "rbf", out="no"
        )
        == 2
    )
    assert "pre-trained with the encoding grid(" in capsys.readouterr().err
    args = ["--data", str(data), "--init-from", str(pretrained), "--encoding", "rbf", "--reencode"]
    assert _finetune(tmp_path, *args, out="rbf") == 0
    model, _ = load_checkpoint(tmp_path / "rbf" / "checkpoints" / "best")
    assert model.config.encoding == "rbf" and _config(tmp_path, "rbf")["model"]["encoding"] == "rbf"


def test_cleaning_is_a_choice_with_a_report(tmp_path, capsys):
    data = write_region_csv(tmp_path / "records.csv", per_species=30)
    with open(data, "a") as handle:
        handle.write("sp1,0.0,0.0\nsp1,-120.1,37.2\nsp1,-120.1,37.2\nsp2,abc,3\n")
    basic = load_species(DataConfig(csv=str(data)))  # auto = basic for a user's file
    assert basic.cleaning == {"invalid lat/lon": 1, "duplicate": 1, "zero_zero": 1, "country_centroid": 0}
    assert len(basic.records) == 4 * 30 + 1
    with pytest.raises(ValueError, match="line 125, column 'x': bad longitude"):
        load_species(DataConfig(csv=str(data), clean="none"))
    full = load_species(DataConfig(csv=str(data), clean="full"))
    assert "zoo" not in full.cleaning and "range_outlier" in full.cleaning  # region < 2000 km
    assert DataConfig().cleaning == "inat" and DataConfig(clean=True).clean == "inat"
    assert _finetune(tmp_path, "--data", str(data)) == 0
    assert "dropped: invalid lat/lon 1, duplicate 1, zero_zero 1" in capsys.readouterr().err


def test_own_validation_and_test_files(tmp_path):
    data = write_region_csv(tmp_path / "records.csv")
    test = write_region_csv(tmp_path / "test.csv", per_species=5, seed=3)
    sites = write_sites_csv(tmp_path / "sites.csv")
    splits = load_species(DataConfig(csv=str(data), test_csv=str(test), val_csv=str(sites)))
    assert len(splits.train) == 240 and len(splits.val) == 0 and len(splits.test) == 20
    assert splits.val_sites is not None and splits.val_sites[0].presence.shape == (80, 4)
    assert _finetune(tmp_path, "--data", str(data), "--val", str(sites), "--test", str(test)) == 0
    assert _config(tmp_path)["metric"] == "auc"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["val_score"] == record["val_auc"] and 0 <= record["val_auc"] <= 1


def test_early_stopping_metric_and_best_or_last(tmp_path, capsys):
    data = write_region_csv(tmp_path / "records.csv")
    args = ["--data", str(data), "--set", "optim.epochs=3", "--select", "last", "--metric", "top1"]
    assert _finetune(tmp_path, *args) == 0
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best")[1]
    assert best.metrics["epoch"] == 3 and "val_top1" in best.metrics
    assert _finetune(tmp_path, "--data", str(data), "--metric", "auc", out="auc") == 2
    assert "metric auc needs presence-absence validation sites" in capsys.readouterr().err


def test_background_is_restricted_to_the_region(tmp_path):
    data = write_region_csv(tmp_path / "records.csv")
    overrides = [f"data.csv={data}", f"runtime.out_dir={tmp_path / 'run'}", "optim.epochs=1"]
    overrides += ["runtime.progress=false", "model.hidden_dim=16", "model.embed_dim=8"]
    config = load_config(FinetuneConfig, "sup-only", overrides)
    run_finetune(config)
    recorded = _config(tmp_path)
    assert recorded["background"] == "extent"  # auto for a user's file
    assert recorded["model"]["encoding_kwargs"]["min_radius"] == region_min_radius(
        load_species(config.data).records.lonlat
    )
    bundled = load_config(FinetuneConfig, "sup-only")
    assert bundled.data.bundled and bundled.background == "auto"


def test_region_scale_follows_the_extent():
    box = np.array([[-120.0, 37.0], [-115.0, 37.0], [-117.0, 39.0]])
    assert region_min_radius(box) == pytest.approx(5 * np.cos(np.radians(38)) / 50, rel=1e-2)
    assert region_min_radius(np.array([[-170.0, -50.0], [170.0, 60.0]])) == 1.0  # clipped
    assert region_min_radius(np.array([[10.0, 45.0], [10.001, 45.0]])) == 0.01


def test_parser_has_one_function_per_subcommand():
    from train import cli

    names = {add.__name__ for add in cli.SUBCOMMANDS}
    assert {"_add_finetune", "_add_evaluate"} <= names
    args = build_parser().parse_args(["finetune", "--csv", "a.csv"])  # --csv stays an alias of --data
    assert args.data == "a.csv"


def test_bundled_species_file_keeps_its_defaults(tmp_path):
    path = write_species_csv(tmp_path / "species.csv")
    assert DataConfig(csv=str(path)).cleaning == "basic"
    assert DataConfig().bundled
