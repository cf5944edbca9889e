"""Tests for csp.cleaning: each rule on synthetic records with a known answer, the range
tables and country polygons, pseudo-presence sampling, and the real YFCC species file."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from csp.cleaning import (
    CleaningConfig,
    NativeRange,
    clean_occurrences,
    flag_outside_native_range,
    flag_range_outliers,
    flag_zoo_records,
    load_countries,
    load_native_ranges,
    native_country_codes,
    sample_pseudo_presences,
    summarise,
)
from csp.species_link import read_species_link

ROOT = Path(__file__).resolve().parents[2]
COUNTRIES = ROOT / "assets" / "basemap" / "naturalearth_110m_countries.geojson"
RANGES = ROOT / "assets" / "default" / "native_ranges.csv"
LINK = ROOT / "assets" / "default" / "imagenet_species_link.csv"
SPECIES_CSV = ROOT / "assets" / "data" / "yfcc_inat2017_species.csv"

ZOO = (13.40, 52.51)  # (lon, lat): a zoo in Berlin
# Homes of ten exotic species on five continents (lon, lat).
EXOTIC_HOMES = {
    "africa_a": (30.0, -5.0),
    "africa_b": (25.0, -20.0),
    "samerica_a": (-60.0, -10.0),
    "samerica_b": (-65.0, -28.0),
    "australia_a": (135.0, -25.0),
    "australia_b": (145.0, -32.0),
    "namerica_a": (-100.0, 40.0),
    "namerica_b": (-88.0, 33.0),
    "asia_a": (100.0, 18.0),
    "asia_b": (80.0, 24.0),
}


def _cluster(centre: tuple[float, float], n: int, spread_deg: float, seed: int) -> np.ndarray:
    """``n`` (lon, lat) points around ``centre``, distinct places ~``spread_deg`` apart."""
    rng = np.random.default_rng(seed)
    return np.asarray(centre) + rng.uniform(-spread_deg, spread_deg, size=(n, 2))


def _records(groups: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    lonlat = np.concatenate([points for _, points in groups])
    labels = np.concatenate([[name] * len(points) for name, points in groups])
    return lonlat, labels


def _zoo_scene(n_exotic: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exotic species (6 wild points at home + 1 at the zoo) and a local native species
    (6 points around Berlin + 1 at the zoo). Returns lonlat, labels, is-exotic-at-zoo mask."""
    groups, at_zoo = [], []
    for seed, (name, home) in enumerate(list(EXOTIC_HOMES.items())[:n_exotic]):
        groups.append((name, _cluster(home, 6, 3.0, seed)))
        at_zoo.append(np.zeros(6, dtype=bool))
        groups.append((name, _cluster(ZOO, 1, 0.005, 100 + seed)))
        at_zoo.append(np.ones(1, dtype=bool))
    groups.append(("local", _cluster((12.0, 51.0), 6, 2.0, 999)))
    groups.append(("local", _cluster(ZOO, 1, 0.005, 998)))
    at_zoo += [np.zeros(7, dtype=bool)]
    lonlat, labels = _records(groups)
    return lonlat, labels, np.concatenate(at_zoo)


@pytest.fixture(scope="module")
def countries() -> gpd.GeoDataFrame:
    return load_countries(COUNTRIES)


# --- rule 1: zoo signature ----------------------------------------------------------------


def test_zoo_with_ten_species_from_five_continents_is_dropped_native_kept() -> None:
    lonlat, labels, exotic_at_zoo = _zoo_scene(n_exotic=10)
    result = flag_zoo_records(lonlat, labels, CleaningConfig())
    np.testing.assert_array_equal(result.drop, exotic_at_zoo)
    local_at_zoo = (labels == "local") & (np.abs(lonlat[:, 0] - ZOO[0]) < 0.01)
    assert local_at_zoo.sum() == 1 and not result.drop[local_at_zoo].any()


def test_too_few_exotic_species_is_not_a_zoo() -> None:
    lonlat, labels, _ = _zoo_scene(n_exotic=5)
    assert not flag_zoo_records(lonlat, labels, CleaningConfig()).drop.any()
    lonlat, labels, exotic_at_zoo = _zoo_scene(n_exotic=6)
    result = flag_zoo_records(lonlat, labels, CleaningConfig(zoo_min_species=6))
    np.testing.assert_array_equal(result.drop, exotic_at_zoo)


def test_many_photos_of_one_species_at_the_zoo_count_as_one_place() -> None:
    """Six photos of each exotic species at the zoo and four wild ones: counted per photo,
    the zoo photos would look 'native' (median distance 0 to the other zoo photos)."""
    groups = []
    for seed, (name, home) in enumerate(EXOTIC_HOMES.items()):
        groups.append((name, _cluster(home, 4, 3.0, seed)))
        groups.append((name, _cluster(ZOO, 6, 0.002, 200 + seed)))
    lonlat, labels = _records(groups)
    at_zoo = np.abs(lonlat[:, 0] - ZOO[0]) < 0.01
    result = flag_zoo_records(lonlat, labels, CleaningConfig())
    np.testing.assert_array_equal(result.drop, at_zoo)


# --- rule 2: range outliers -------------------------------------------------------------------


def test_far_outlier_dropped_widespread_and_holarctic_species_kept() -> None:
    rng = np.random.default_rng(0)
    across_north_america = np.column_stack(
        [np.linspace(-122.0, -72.0, 10), rng.uniform(33.0, 45.0, 10)]
    )
    groups = [
        ("african", _cluster((30.0, -5.0), 8, 4.0, 3)),
        ("african", np.array([[-75.7, 45.4]])),  # Ottawa: > 10,000 km from the rest
        ("widespread", across_north_america),
        ("holarctic", _cluster((10.0, 50.0), 5, 4.0, 4)),
        ("holarctic", _cluster((-95.0, 45.0), 5, 4.0, 5)),
        ("two_places", np.array([[0.0, 0.0], [120.0, 10.0]])),  # too few places to judge
    ]
    lonlat, labels = _records(groups)
    result = flag_range_outliers(lonlat, labels, CleaningConfig())
    expected = (labels == "african") & (lonlat[:, 0] < -70.0)
    np.testing.assert_array_equal(result.drop, expected)


def test_excluded_records_neither_support_nor_get_flagged() -> None:
    """Two zoo records of a species support each other unless the zoo rule removed them."""
    groups = [
        ("sp", _cluster((30.0, -5.0), 6, 3.0, 6)),
        ("sp", np.array([[2.35, 48.85], [4.35, 50.85]])),  # Paris, Brussels
    ]
    lonlat, labels = _records(groups)
    europe = lonlat[:, 1] > 40.0
    config = CleaningConfig(outlier_min_support=0.0)
    assert not flag_range_outliers(lonlat, labels, config).drop.any()
    paris_excluded = europe & (lonlat[:, 0] < 3.0)
    result = flag_range_outliers(lonlat, labels, config, exclude=paris_excluded)
    np.testing.assert_array_equal(result.drop, europe & ~paris_excluded)


# --- rule 3: expert range ---------------------------------------------------------------------


def test_expert_range_point_in_polygon_and_sea_tolerance(countries: gpd.GeoDataFrame) -> None:
    ranges = {"lion": NativeRange("lion", ("KEN", "TZA"), (), "test")}
    lonlat = np.array(
        [
            [36.8, -1.3],  # Nairobi, KEN: in range
            [35.6, -3.2],  # Tanzania: in range
            [40.0, -4.5],  # Indian Ocean ~40 km off Mombasa: in range (sea tolerance)
            [60.0, -10.0],  # open Indian Ocean, > 1,500 km from Kenya: out
            [13.4, 52.5],  # Berlin: out
            [13.4, 52.5],  # another species without a range: untouched
        ]
    )
    labels = np.array(["lion"] * 5 + ["other"])
    result = flag_outside_native_range(lonlat, labels, ranges, countries, CleaningConfig())
    np.testing.assert_array_equal(result.drop, [False, False, False, True, True, False])
    np.testing.assert_array_equal(result.vouched, [True, True, True, False, False, False])


def test_expert_range_vouches_against_statistical_rules(countries: gpd.GeoDataFrame) -> None:
    """One wild record in Kenya among zoo records in Europe: statistics alone would keep the
    European cluster and drop Kenya; the expert range keeps Kenya and drops Europe."""
    groups = [
        ("lion", np.array([[36.8, -1.3]])),
        ("lion", _cluster((8.0, 50.0), 6, 4.0, 7)),
    ]
    lonlat, labels = _records(groups)
    kenya = lonlat[:, 1] < 0
    plain = clean_occurrences(lonlat, labels, CleaningConfig())
    np.testing.assert_array_equal(plain.keep, ~kenya)
    ranges = {"lion": NativeRange("lion", ("KEN",), (), "test")}
    expert = clean_occurrences(lonlat, labels, CleaningConfig(), ranges, countries)
    np.testing.assert_array_equal(expert.keep, kenya)
    assert set(expert.reason[~kenya]) == {"expert_range"}


def test_expert_range_makes_a_captive_species_count_at_the_zoo(
    countries: gpd.GeoDataFrame,
) -> None:
    """A species whose records are all captive looks 'native' at the zoo statistically; its
    expert range says it is far from home, which completes the zoo signature."""
    lonlat, labels, exotic_at_zoo = _zoo_scene(n_exotic=7)
    captive = [("captive", _cluster(ZOO, 1, 0.005, 50)), ("captive", _cluster((8, 50), 4, 3, 51))]
    extra_lonlat, extra_labels = _records(captive)
    lonlat = np.concatenate([lonlat, extra_lonlat])
    labels = np.concatenate([labels, extra_labels])
    config = CleaningConfig()
    assert not flag_zoo_records(lonlat, labels, config).drop.any()  # only 7 far species
    ranges = {"captive": NativeRange("captive", ("AUS",), (), "test")}
    expert = flag_outside_native_range(lonlat, labels, ranges, countries, config)
    result = flag_zoo_records(lonlat, labels, config, expert)
    captive_at_zoo = np.array([True, False, False, False, False])
    np.testing.assert_array_equal(result.drop, np.concatenate([exotic_at_zoo, captive_at_zoo]))


# --- combined report and input checks ---------------------------------------------------------


def test_clean_occurrences_report_and_summary() -> None:
    lonlat, labels, exotic_at_zoo = _zoo_scene(n_exotic=10)
    outlier = np.array([[-75.7, 45.4]])
    lonlat = np.concatenate([lonlat, outlier])
    labels = np.concatenate([labels, ["africa_a"]])
    report = clean_occurrences(lonlat, labels)
    expected_drop = np.concatenate([exotic_at_zoo, [True]])
    np.testing.assert_array_equal(~report.keep, expected_drop)
    assert report.dropped_per_rule == {"zoo": 10, "range_outlier": 1}
    assert list(report.reason[expected_drop]) == ["zoo"] * 10 + ["range_outlier"]
    assert set(report.reason[report.keep]) == {""}
    table = summarise(report)
    assert "zoo" in table and "range_outlier" in table and "of 78 records" in table


def test_int_labels_and_empty_input() -> None:
    lonlat, labels, exotic_at_zoo = _zoo_scene(n_exotic=10)
    codes = pd.factorize(labels)[0]
    np.testing.assert_array_equal(~clean_occurrences(lonlat, codes).keep, exotic_at_zoo)
    empty = clean_occurrences(np.zeros((0, 2)), np.array([], dtype=str))
    assert empty.keep.shape == (0,) and "of 0 records" in summarise(empty)


@pytest.mark.parametrize(
    ("lonlat", "labels", "message"),
    [
        (np.zeros((3, 3)), np.array(["a"] * 3), "shape"),
        (np.zeros((3, 2)), np.array(["a"] * 2), "labels must have shape"),
        (np.array([[200.0, 0.0]]), np.array(["a"]), "longitude 200"),
        (np.array([[0.0, np.nan]]), np.array(["a"]), "non-finite"),
        (np.zeros((2, 2)), np.array(["a", None], dtype=object), "no species label"),
    ],
)
def test_bad_records_raise(lonlat: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clean_occurrences(lonlat, labels)


@pytest.mark.parametrize(
    "kwargs",
    [{"place_km": 0.0}, {"zoo_min_species": 1}, {"outlier_min_support": 1.5},
     {"sea_tolerance_km": -1.0}, {"outlier_min_places": 1}],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="CleaningConfig"):
        CleaningConfig(**kwargs)


def test_ranges_need_countries() -> None:
    with pytest.raises(ValueError, match="together"):
        clean_occurrences(np.zeros((1, 2)), np.array(["a"]), native_ranges={})


# --- country polygons and the native range table ------------------------------------------


def test_load_countries_resolves_minus_99_and_french_guiana(countries: gpd.GeoDataFrame) -> None:
    assert "-99" not in set(countries["iso_a3"])
    points = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy([2.35, -53.0, 10.75, 21.0], [48.85, 4.0, 59.91, 42.6]),
        crs="EPSG:4326",
    )
    joined = gpd.sjoin(points, countries, predicate="within").sort_index()
    assert list(joined["iso_a3"]) == ["FRA", "GUF", "NOR", "XKX"]
    assert list(joined["continent"]) == ["Europe", "South America", "Europe", "Europe"]


def test_native_range_table_is_complete_and_resolvable(countries: gpd.GeoDataFrame) -> None:
    ranges = load_native_ranges(RANGES)
    linked = {row.species for row in read_species_link(LINK)}
    # Cosmopolitan species (oceans, or coasts of every continent): a country list adds nothing.
    cosmopolitan = {
        "Orcinus orca", "Dermochelys coriacea", "Caretta caretta", "Arenaria interpres",
        "Ardea alba",
    }
    assert set(ranges) == linked - cosmopolitan
    for native in ranges.values():
        assert native_country_codes(native, countries)
        assert native.source


def test_native_ranges_spot_checks(countries: gpd.GeoDataFrame) -> None:
    ranges = load_native_ranges(RANGES)
    lion = set(native_country_codes(ranges["Panthera leo"], countries))
    continent = countries.set_index("iso_a3")["continent"].to_dict()
    assert "IND" in lion and "TZA" in lion and "KEN" in lion
    assert {continent[c] for c in lion - {"IND"}} == {"Africa"}
    assert native_country_codes(ranges["Phascolarctos cinereus"], countries) == ("AUS",)
    assert "USA" not in native_country_codes(ranges["Panthera onca"], countries)
    assert "AUS" not in native_country_codes(ranges["Vulpes vulpes"], countries)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("species,iso,continents,source\n", "header"),
        ("species,native_iso_a3,native_continents,source\nA b,fra,,x\n", "invalid ISO"),
        ("species,native_iso_a3,native_continents,source\nA b,FRA,,\n", "empty source"),
        ("species,native_iso_a3,native_continents,source\nA b,,,x\n", "no native country"),
        ("species,native_iso_a3,native_continents,source\nA b,FRA,,x\nA b,DEU,,x\n", "duplicate"),
        ("species,native_iso_a3,native_continents,source\nA b,FRA\n", "4 fields"),
    ],
)
def test_bad_native_range_table_raises(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_native_ranges(path)


def test_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="native range"):
        load_native_ranges(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="country polygons"):
        load_countries(tmp_path / "none.geojson")


def test_unknown_range_code_raises(countries: gpd.GeoDataFrame) -> None:
    with pytest.raises(ValueError, match="ATL"):
        native_country_codes(NativeRange("x", ("ATL",), (), "test"), countries)


# --- pseudo-presences --------------------------------------------------------------------------


def test_pseudo_presences_inside_deterministic_and_by_area(countries: gpd.GeoDataFrame) -> None:
    points = sample_pseudo_presences("Phascolarctos cinereus", ["AUS", "NZL"], 3000, 0, countries)
    assert points.shape == (3000, 2) and points.dtype == np.float32
    frame = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(points[:, 0], points[:, 1]), crs="EPSG:4326"
    )
    joined = gpd.sjoin(frame, countries, predicate="within")
    joined = joined[~joined.index.duplicated()]
    assert len(joined) == 3000  # every point is inside a polygon
    share_nz = float((joined["iso_a3"] == "NZL").mean())
    assert 0.02 < share_nz < 0.05  # New Zealand is ~3.4% of the two countries' area
    again = sample_pseudo_presences("Phascolarctos cinereus", ["AUS", "NZL"], 3000, 0, countries)
    np.testing.assert_array_equal(points, again)
    other_seed = sample_pseudo_presences(
        "Phascolarctos cinereus", ["AUS", "NZL"], 3000, 1, countries
    )
    other_species = sample_pseudo_presences("Cygnus atratus", ["AUS", "NZL"], 3000, 0, countries)
    assert not np.array_equal(points, other_seed)
    assert not np.array_equal(points, other_species)


def test_pseudo_presences_edge_cases(countries: gpd.GeoDataFrame) -> None:
    assert sample_pseudo_presences("x", ["AUS"], 0, 0, countries).shape == (0, 2)
    with pytest.raises(ValueError, match="unknown"):
        sample_pseudo_presences("x", ["ATL"], 5, 0, countries)
    with pytest.raises(ValueError, match="n must be"):
        sample_pseudo_presences("x", ["AUS"], -1, 0, countries)


# --- the real YFCC species file -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(countries: gpd.GeoDataFrame) -> tuple[pd.DataFrame, object]:
    frame = pd.read_csv(SPECIES_CSV)
    lonlat = frame[["longitude", "latitude"]].to_numpy()
    report = clean_occurrences(
        lonlat, frame["label"].to_numpy(), CleaningConfig(), load_native_ranges(RANGES),
        countries,
    )
    return frame.assign(keep=report.keep, reason=report.reason), report


def test_real_file_ueno_zoo_exotics_dropped(real_report: tuple[pd.DataFrame, object]) -> None:
    frame, _ = real_report
    near_ueno = (np.abs(frame["latitude"] - 35.7176) < 0.005) & (
        np.abs(frame["longitude"] - 139.771) < 0.005
    )
    ueno = frame[near_ueno]
    exotic = {
        "Procavia capensis", "Lycaon pictus", "Cynomys ludovicianus", "Hydrochoerus hydrochaeris",
        "Erethizon dorsatum", "Sicalis flaveola", "Balearica regulorum", "Struthio camelus",
        "Ursus americanus",
    }
    assert exotic <= set(ueno["label"])
    exotic_rows = ueno[ueno["label"].isin(exotic)]
    assert len(exotic_rows) >= 20
    assert exotic_rows["reason"].str.contains("zoo").all()
    native = ueno[ueno["label"].isin({"Cervus nippon", "Passer montanus"})]
    assert len(native) == 2 and native["keep"].all()


def test_real_file_lion_keeps_only_african_points(
    real_report: tuple[pd.DataFrame, object],
) -> None:
    frame, _ = real_report
    lion = frame[frame["label"] == "Panthera leo"]
    kept = lion[lion["keep"]]
    assert len(lion) == 10 and len(kept) >= 1
    assert kept["longitude"].between(-20, 52).all() and kept["latitude"].between(-35, 25).all()
    dropped = lion[~lion["keep"]]
    assert not (dropped["longitude"].between(-20, 52) & dropped["latitude"].between(-35, 15)).any()


def test_real_file_summary_counts(real_report: tuple[pd.DataFrame, object]) -> None:
    frame, report = real_report
    assert set(report.dropped_per_rule) == {"zoo", "range_outlier", "expert_range"}
    # Every rule removes something, and cleaning keeps most of the data.
    assert all(count > 0 for count in report.dropped_per_rule.values())
    assert 0.6 < frame["keep"].mean() < 0.95
    assert "expert range: 62" in summarise(report)
