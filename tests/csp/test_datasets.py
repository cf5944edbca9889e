"""Tests for csp.datasets: GeoRecords and the readers, on real-format fixtures and real assets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from csp.datasets import (
    GeoRecords,
    read_csv,
    read_fmow,
    read_inat,
    read_photo_folder,
    read_precomputed,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ASSETS = ROOT / "assets" / "data"


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLACES = [(lon, lat) for _, lat, lon in _fixture_script().PLACES]
SPECIES = ["Tiarella cordifolia", "Vireo griseus", "Strongylocentrotus purpuratus"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _copy_json(src: Path, dst: Path, edit=None) -> Path:
    data = json.loads(src.read_text(encoding="utf-8"))
    if edit is not None:
        edit(data)
    return _write(dst, json.dumps(data))


# --- GeoRecords ---------------------------------------------------------------------------


def _records(n: int = 4) -> GeoRecords:
    return GeoRecords(
        ids=[f"r{i}" for i in range(n)],
        paths=[f"/img/{i}.jpg" for i in range(n)],
        lonlat=np.array(PLACES[:n], dtype=np.float64),
        labels=[0, 1, -1, 1][:n],
        class_names=["a", "b"],
        dates=["2020-01-01", None, "2020-01-03", None][:n],
        features=np.arange(n * 3).reshape(n, 3),
        dropped={"missing lat/lon": 2},
    )


def test_georecords_normalises_dtypes():
    records = _records()
    assert len(records) == 4
    assert records.lonlat.dtype == np.float32 and records.lonlat.shape == (4, 2)
    assert records.labels.dtype == np.int64
    assert records.features.dtype == np.float32 and records.features.shape == (4, 3)
    empty = GeoRecords(ids=[], paths=[], lonlat=np.zeros(0))
    assert len(empty) == 0 and empty.lonlat.shape == (0, 2)


@pytest.mark.parametrize(
    ("index", "expected_ids"),
    [
        ([2, 0], ["r2", "r0"]),
        (np.array([True, False, False, True]), ["r0", "r3"]),
        (slice(1, 3), ["r1", "r2"]),
        (np.array([], dtype=np.int64), []),
    ],
)
def test_georecords_subset_keeps_columns_aligned(index, expected_ids):
    records = _records()
    sub = records.subset(index)
    rows = [int(i[1:]) for i in expected_ids]
    assert sub.ids == expected_ids
    assert sub.paths == [records.paths[i] for i in rows]
    np.testing.assert_array_equal(sub.lonlat, records.lonlat[rows])
    np.testing.assert_array_equal(sub.labels, records.labels[rows])
    np.testing.assert_array_equal(sub.features, records.features[rows])
    assert sub.dates == [records.dates[i] for i in rows]
    assert sub.class_names == ["a", "b"] and sub.dropped == {"missing lat/lon": 2}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ids": ["x"]}, "ids has 1 entries"),
        ({"dates": [None]}, "dates has 1 entries"),
        ({"labels": [0, 1, 2, 0]}, "index 2 but only 2 class names"),
        ({"labels": [0, -2, 0, 0]}, "use -1 for unlabeled"),
        ({"labels": [0.5, 1, 0, 0]}, "must be integers"),
        ({"features": np.zeros((3, 2))}, "features must have shape (4, D)"),
        ({"lonlat": np.zeros((4, 3))}, "shape (N, 2)"),
        ({"lonlat": np.array([[0, 0], [0, 0], [0, 91], [0, 0]])}, "row 2: latitude 91.0"),
    ],
)
def test_georecords_rejects_inconsistent_columns(changes, message):
    fields = vars(_records()) | changes
    with pytest.raises(ValueError) as info:
        GeoRecords(**fields)
    assert message in str(info.value)


# --- iNaturalist --------------------------------------------------------------------------


def test_read_inat2017_with_locations_file():
    records = read_inat(
        FIXTURES / "inat2017/train2017.json",
        FIXTURES / "inat2017/train2017_locations.json",
        image_root="/data/inat2017",
    )
    assert records.ids == ["100", "101", "102", "103", "105"]  # 104 has a null location
    assert records.dropped == {"missing lat/lon": 1}
    np.testing.assert_allclose(records.lonlat, [PLACES[k] for k in (0, 1, 2, 3, 5)], atol=1e-5)
    assert records.class_names == SPECIES
    assert records.labels.tolist() == [0, 1, 2, 0, 2]
    assert records.paths[0] == "/data/inat2017/train_val_images/Plantae/Tiarella cordifolia/00000064.jpg"
    assert records.dates[0] == "2016-01-15 10:30:00+00:00"


def test_read_inat2018_with_separate_categories():
    args = (FIXTURES / "inat2018/val2018.json", FIXTURES / "inat2018/val2018_locations.json")
    named = read_inat(*args, categories_json_path=FIXTURES / "inat2018/categories.json")
    assert named.class_names == SPECIES
    assert named.labels.tolist() == [2, 0, 1]
    np.testing.assert_allclose(named.lonlat, PLACES[3:6], atol=1e-5)
    assert read_inat(*args).class_names == ["0", "1", "2"]  # the split file only has ids
    assert named.paths[0].startswith("train_val2018/")


def test_read_inat2021_inline_locations():
    records = read_inat(FIXTURES / "inat2021/val.json")
    assert records.ids == ["30000", "30001", "30003"]
    assert records.dropped == {"missing lat/lon": 1}
    np.testing.assert_allclose(records.lonlat, [PLACES[k] for k in (0, 1, 3)], atol=1e-5)
    assert records.labels.tolist() == [1, 2, 1]
    assert records.dates[1] == "2019-06-21 17:45:00+00:00"


def test_read_inat_test_split_without_annotations_and_missing_entries(tmp_path):
    def drop_annotations(data):
        data.pop("annotations")

    split = _copy_json(FIXTURES / "inat2017/train2017.json", tmp_path / "test.json", drop_annotations)

    def drop_first(entries):
        del entries[0]

    locations = _copy_json(FIXTURES / "inat2017/train2017_locations.json", tmp_path / "loc.json", drop_first)
    records = read_inat(split, locations)
    assert records.labels.tolist() == [-1] * 4
    assert records.dropped == {"no entry in the locations file": 1, "missing lat/lon": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (95.0, "latitude 95.0 is outside [-90, 90]"),
        (float("nan"), "non-finite"),
        ("48.85", "'lat' is '48.85', not a number"),
    ],
)
def test_read_inat_bad_location_names_file_and_image(tmp_path, value, message):
    def corrupt(entries):
        entries[1]["lat"] = value

    locations = _copy_json(
        FIXTURES / "inat2017/train2017_locations.json", tmp_path / "train2017_locations.json", corrupt
    )
    with pytest.raises(ValueError) as info:
        read_inat(FIXTURES / "inat2017/train2017.json", locations)
    text = str(info.value)
    assert str(locations) in text and "image id 101" in text and message in text


def test_read_inat_inline_out_of_range_names_the_image(tmp_path):
    def corrupt(data):
        data["images"][3]["longitude"] = 200.0

    split = _copy_json(FIXTURES / "inat2021/val.json", tmp_path / "val.json", corrupt)
    with pytest.raises(ValueError, match=r"val\.json: images\[3\] \(id 30003\): longitude 200"):
        read_inat(split)


def test_read_inat_structural_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_inat(tmp_path / "nope.json", FIXTURES / "inat2017/train2017_locations.json")
    with pytest.raises(FileNotFoundError, match="locations file not found"):
        read_inat(FIXTURES / "inat2017/train2017.json", tmp_path / "missing_locations.json")
    with pytest.raises(ValueError, match="no 'latitude'/'longitude'"):
        read_inat(FIXTURES / "inat2017/train2017.json")
    broken = _write(tmp_path / "broken.json", '{"images": [\n{"id": 1,}]}')
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON \(line 2"):
        read_inat(broken)
    not_coco = _write(tmp_path / "list.json", "[]")
    with pytest.raises(ValueError, match="not a COCO-style annotation file"):
        read_inat(not_coco)

    def bad_category(data):
        data["annotations"][0]["category_id"] = 99

    split = _copy_json(FIXTURES / "inat2017/train2017.json", tmp_path / "t.json", bad_category)
    with pytest.raises(ValueError, match=r"annotations\[0\] has unknown category_id 99"):
        read_inat(split, FIXTURES / "inat2017/train2017_locations.json")


# --- fMoW ---------------------------------------------------------------------------------

FMOW = FIXTURES / "fmow"
FMOW_FEATURES = FMOW / "features_inception_pretrain/fmow_train_pretrain_net_feats.npy"


def test_read_fmow_reference_layout_with_features():
    records = read_fmow(FMOW / "train.json", features_npy=FMOW_FEATURES)
    assert records.class_names == ["airport", "crop_field", "lighthouse", "stadium"]
    assert records.ids == ["0", "2", "3", "4"]  # image 1 has a null location
    assert records.dropped == {"missing lat/lon": 1}
    assert [records.class_names[i] for i in records.labels] == [
        "lighthouse", "stadium", "crop_field", "lighthouse",
    ]  # fmt: skip
    np.testing.assert_allclose(records.lonlat, [PLACES[k] for k in (0, 2, 3, 4)], atol=1e-5)
    all_rows = np.load(FMOW_FEATURES)
    np.testing.assert_array_equal(records.features, all_rows[[0, 2, 3, 4]])  # rows stay aligned
    assert records.paths[0] == "train/lighthouse/lighthouse_0/lighthouse_0_0_rgb.jpg"


def test_read_fmow_explicit_paths_and_errors(tmp_path):
    explicit = read_fmow(
        FMOW / "train.json",
        FMOW / "train_location.json",
        category_json_path=FMOW / "category.json",
    )
    assert explicit.features is None and len(explicit) == 4
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(ValueError) as info:
        read_fmow(FMOW / "train.json", features_npy=short)
    assert "short.npy has 3 feature rows" in str(info.value) and "train.json" in str(info.value)
    lonely = _copy_json(FMOW / "train.json", tmp_path / "val.json")
    with pytest.raises(FileNotFoundError, match="val_location.json"):
        read_fmow(lonely)
    bad_categories = _write(tmp_path / "category.json", '{"airport": "zero"}')
    with pytest.raises(ValueError, match="class name -> integer id"):
        read_fmow(FMOW / "train.json", category_json_path=bad_categories)


# --- CSV ----------------------------------------------------------------------------------


def test_read_csv_real_yfcc_species_file():
    records = read_csv(ASSETS / "yfcc_inat2017_species.csv")
    assert len(records) == 36143
    assert len(records.class_names) == 4472 and (records.labels >= 0).all()
    assert len(set(records.ids)) == len(records)
    assert records.ids[0] == "da6fd9a9c5666e7b561b842a8c97774f"
    assert records.class_names[records.labels[0]] == "Tiarella cordifolia"
    np.testing.assert_allclose(records.lonlat[0], [-81.8292, 36.1205], atol=1e-4)
    assert records.dates is None and records.dropped == {}


def test_read_csv_real_mp16_coordinates_upper_case_columns():
    records = read_csv(ASSETS / "mp16_photo_coordinates_100k.csv")
    assert len(records) == 100_000
    assert records.labels is None and records.class_names is None
    np.testing.assert_allclose(records.lonlat[0], [-72.935664, -50.943392], atol=1e-4)
    assert records.ids[:2] == ["0", "1"]


def test_read_csv_gbif_tsv_drops_rows_without_coordinates():
    records = read_csv(FIXTURES / "csv/gbif_occurrences.tsv", delimiter="\t")
    assert records.ids == ["4011", "4012", "4013", "4015"]
    assert records.dropped == {"missing lat/lon": 1}
    without_ids = read_csv(FIXTURES / "csv/gbif_occurrences.tsv", delimiter="\t", id_col=None)
    assert without_ids.ids == ["0", "1", "2", "4"]  # data row numbers in the file
    assert records.class_names[records.labels[1]] == "Vireo griseus (Boddaert, 1783)"
    assert records.dates == ["2019-04-20T10:00:00", "2018-05-02", None, "2020-06-01"]
    np.testing.assert_allclose(records.lonlat[3], [-75.6972, 45.4215], atol=1e-4)


def test_read_csv_dms_cells_paths_and_unlabeled_rows():
    records = read_csv(FIXTURES / "csv/photo_list.csv")
    np.testing.assert_allclose(
        records.lonlat,
        [
            [2 + 17 / 60 + 40.2 / 3600, 48 + 51 / 60 + 29.6 / 3600],
            [151.215297, -33.856784],
            [-(43 + 12 / 60 + 37.8 / 3600), -(22 + 57 / 60 + 6.9 / 3600)],
        ],
        atol=1e-5,
    )
    assert records.labels.tolist() == [0, 1, -1]
    assert records.paths[0] == str(FIXTURES / "csv/photos/paris.jpg")
    assert read_csv(FIXTURES / "csv/photo_list.csv", label_col=None).labels is None


def test_read_csv_column_options(tmp_path):
    path = _write(tmp_path / "obs.csv", "Obs,Y,X,Kind\na,10,20,1\nb,-10,-20,10\nc,0,5,2\n")
    records = read_csv(path, lat_col="y", lon_col="X", label_col="Kind", id_col="obs")
    assert records.ids == ["a", "b", "c"]
    np.testing.assert_array_equal(records.lonlat, [[20, 10], [-20, -10], [5, 0]])
    assert records.class_names == ["1", "2", "10"]  # integer labels sort numerically
    assert records.labels.tolist() == [0, 2, 1]
    lng = _write(tmp_path / "lng.csv", "LAT,Lng,species\n1,2,x\n")
    assert read_csv(lng).lonlat.tolist() == [[2.0, 1.0]]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "the file is empty"),
        ("latitude,longitude\n", {}, "no data rows"),
        ("latitude,longitude\n\n\n", {}, "no data rows"),
        ("lat,latitude,lon\n1,1,1\n", {}, "all look like the latitude; choose one with lat_col="),
        ("north,east\n1,2\n", {}, "no latitude column found"),
        ("lat,lon\n1,2\n", {"label_col": "species"}, "column 'species' (label_col) is missing"),
        ("lat,lon\n1,2\n", {"lat_col": None}, "lat_col cannot be None"),
        ("lat,lon\n1,2\n3,4,5\n", {}, "line 3: expected 2 fields, got 3"),
        ("lat,lon\n1,2\n\n91,4\n", {}, "line 4, columns 'lon'/'lat': latitude 91.0 is outside [-90, 90]"),
        ("lat,lon\n1,2\n1,190\n", {}, "line 3, columns 'lon'/'lat': longitude 190.0 is outside"),
        ("lat,lon\n1,2\nnan,4\n", {}, "line 3, columns 'lon'/'lat': non-finite"),
        ("lat,lon\nabc,2\n", {}, "line 2, column 'lat': bad latitude"),
        ("lat,lon\n1,\n", {}, "line 2, column 'lon': bad longitude: empty coordinate"),
        ('lat,lon\n"48°51\'N",2 E\n10,2 N\n', {}, "line 3, column 'lon': bad longitude"),
    ],
)
def test_read_csv_errors_name_file_and_line(tmp_path, text, kwargs, message):
    path = _write(tmp_path / "points.csv", text)
    with pytest.raises(ValueError) as info:
        read_csv(path, **kwargs)
    assert str(path) in str(info.value) or "cannot be None" in message
    assert message in str(info.value)


def test_read_csv_missing_file_and_encoding(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        read_csv(tmp_path / "absent.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("lat,lon,label\n1,2,Bär\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_csv(latin1)


# --- photo folder -------------------------------------------------------------------------

PHOTOS = FIXTURES / "photos"


def test_read_photo_folder_with_subfolder_labels():
    records, skipped = read_photo_folder(PHOTOS, labels_from_subfolders=True)
    assert records.ids == [
        "cities/anchorage.jpg",
        "cities/ueno_park.png",
        "landmarks/christ_the_redeemer.jpg",
        "landmarks/eiffel_tower.jpg",
        "landmarks/sydney_opera_house.jpg",
    ]
    np.testing.assert_allclose(records.lonlat, [PLACES[k] for k in (3, 5, 2, 0, 1)], atol=1e-5)
    assert records.class_names == ["cities", "landmarks"]
    assert records.labels.tolist() == [0, 0, 1, 1, 1]
    assert records.dates[3] == "2021-07-14T12:00:00"
    assert records.paths[0] == str(PHOTOS / "cities/anchorage.jpg")
    reasons = {Path(p).name: reason for p, reason in skipped}
    assert set(reasons) == {
        "missing_latitude_ref.jpg",
        "zero_denominator.jpg",
        "not_a_photo.jpg",
        "no_gps.jpg",
    }
    assert "no GPSLatitudeRef" in reasons["missing_latitude_ref.jpg"]
    assert "zero denominator" in reasons["zero_denominator.jpg"]
    assert reasons["not_a_photo.jpg"].startswith("unreadable image")
    assert records.dropped == {"no usable GPS": 3, "unreadable image": 1}


def test_read_photo_folder_flat_and_errors(tmp_path):
    records, _ = read_photo_folder(PHOTOS / "landmarks")
    assert records.labels is None and len(records) == 3
    with pytest.raises(FileNotFoundError, match="photo folder not found"):
        read_photo_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="no photos found"):
        read_photo_folder(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    (tmp_path / "b.HEIC").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="no photo is in a subfolder"):
        read_photo_folder(tmp_path, labels_from_subfolders=True)
    records, skipped = read_photo_folder(tmp_path)
    assert len(records) == 0 and records.lonlat.shape == (0, 2)
    assert [Path(p).name for p, _ in skipped] == ["a.jpg", "b.HEIC"]
    assert ".HEIC is not supported" in skipped[1][1]


def test_read_photo_folder_root_level_photos_are_unlabeled(tmp_path):
    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({1: "S", 2: (10.0, 0.0, 0.0), 3: "W", 4: (20.0, 30.0, 0.0)})
    Image.new("RGB", (4, 4)).save(tmp_path / "root.jpg", exif=exif)
    (tmp_path / "birds").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "birds" / "x.jpg", exif=exif)
    records, skipped = read_photo_folder(tmp_path, labels_from_subfolders=True)
    assert skipped == [] and records.ids == ["birds/x.jpg", "root.jpg"]
    assert records.labels.tolist() == [0, -1] and records.class_names == ["birds"]
    np.testing.assert_allclose(records.lonlat[1], [-20.5, -10.0])


# --- precomputed --------------------------------------------------------------------------

PRE = FIXTURES / "precomputed"


def test_read_precomputed_npy_and_csv_locations():
    from_npy = read_precomputed(PRE / "features.npy", PRE / "locations.npy")
    from_csv = read_precomputed(PRE / "features.npy", PRE / "locations.csv")
    np.testing.assert_allclose(from_npy.lonlat, PLACES[:5], atol=1e-5)
    np.testing.assert_array_equal(from_npy.lonlat, from_csv.lonlat)
    np.testing.assert_array_equal(from_npy.features, np.load(PRE / "features.npy"))
    assert from_csv.ids[0] == "eiffel_tower" and from_csv.class_names[from_csv.labels[0]] == "eiffel"
    assert from_npy.labels is None and from_npy.ids == ["0", "1", "2", "3", "4"]
    no_labels = read_precomputed(PRE / "features.npy", PRE / "locations.csv", label_col=None)
    assert no_labels.labels is None


def test_read_precomputed_errors(tmp_path):
    lonlat = np.load(PRE / "locations.npy")
    np.save(tmp_path / "four.npy", lonlat[:4])
    with pytest.raises(ValueError) as info:
        read_precomputed(PRE / "features.npy", tmp_path / "four.npy")
    assert "features.npy has 5 feature rows but" in str(info.value)
    assert "four.npy has 4 records" in str(info.value)

    bad = lonlat.copy()
    bad[3, 0] = 181.0
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"bad\.npy: row 3: longitude 181"):
        read_precomputed(PRE / "features.npy", tmp_path / "bad.npy")
    np.save(tmp_path / "latlon3.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(N, 2\) array of \(lon, lat\)"):
        read_precomputed(PRE / "features.npy", tmp_path / "latlon3.npy")

    nan_features = np.ones((5, 2), dtype=np.float32)
    nan_features[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan_features)
    with pytest.raises(ValueError, match=r"nan\.npy: row 2: features contain NaN"):
        read_precomputed(tmp_path / "nan.npy", PRE / "locations.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 5), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read as a .npy array"):
        read_precomputed(tmp_path / "objects.npy", PRE / "locations.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        read_precomputed(tmp_path / "flat.npy", PRE / "locations.npy")

    with pytest.raises(FileNotFoundError, match="feature file not found"):
        read_precomputed(tmp_path / "absent.npy", PRE / "locations.npy")
    (tmp_path / "locations.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"must be a \.npy, \.csv or reference \.json"):
        read_precomputed(PRE / "features.npy", tmp_path / "locations.parquet")
    with pytest.raises(FileNotFoundError, match="no locations file beside it"):
        read_precomputed(PRE / "features.npy", PRE.parent / "inat2021/val.json")
    gappy = _write(tmp_path / "gappy.csv", "lat,lon\n1,2\n,\n3,4\n5,6\n7,8\n9,10\n")
    with pytest.raises(ValueError, match="1 rows have no coordinates"):
        read_precomputed(PRE / "features.npy", gappy)
    with pytest.raises(ValueError, match="do not apply"):
        read_precomputed(PRE / "features.npy", PRE / "locations.npy", lat_col="lat")


# --- the fixture script ---------------------------------------------------------------------


def test_fixture_script_reproduces_the_committed_fixtures(tmp_path):
    _fixture_script().write_fixtures(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    folders = {rel.parts[0] for rel in written}  # other suites may keep fixtures beside these
    committed = sorted(
        p.relative_to(FIXTURES)
        for folder in folders
        for p in (FIXTURES / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert written == committed
    for rel in written:
        if rel.suffix in (".jpg", ".png"):
            continue  # encoder output may differ across libjpeg/zlib builds; EXIF is compared
        assert (tmp_path / rel).read_bytes() == (FIXTURES / rel).read_bytes(), rel
    for rel in (r for r in written if r.suffix in (".jpg", ".png") and r.name != "not_a_photo.jpg"):
        with Image.open(tmp_path / rel) as new, Image.open(FIXTURES / rel) as old:
            new.load(), old.load()
            gps = ExifTags.IFD.GPSInfo
            assert repr(new.getexif().get_ifd(gps)) == repr(old.getexif().get_ifd(gps)), rel
    assert max((FIXTURES / rel).stat().st_size for rel in written) < 4096  # tiny
