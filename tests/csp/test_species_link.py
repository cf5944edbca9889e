"""Tests for csp.species_link (the link table loader) and train/build_link.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from csp.species_link import (
    LINK_COLUMNS,
    LinkRow,
    load_species_link,
    read_species_link,
    write_species_link,
)
from train.build_link import (
    binomial_lemmas,
    exact_links,
    fuzzy_candidates,
    imagenet_lemmas,
    main,
    merge_reviewed,
    read_species_names,
)

ROOT = Path(__file__).resolve().parents[2]
LINK = ROOT / "assets" / "default" / "imagenet_species_link.csv"
SPECIES_CSV = ROOT / "assets" / "data" / "yfcc_inat2017_species.csv"
HEADER = ",".join(LINK_COLUMNS) + "\n"


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "link.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


# --- loader --------------------------------------------------------------------------------


def test_load_species_link_maps_to_class_positions(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "291,lion,Panthera leo,exact,\n"
        "50,American alligator,Alligator mississippiensis,spelling,misspelt in WordNet\n"
        "386,African elephant,Loxodonta africana,exact,\n",
    )
    class_names = ["Alligator mississippiensis", "Canis lupus", "Panthera leo"]
    assert load_species_link(path, class_names) == {291: 2, 50: 0}  # elephant not in the prior


def test_write_then_read_round_trip_sorted(tmp_path: Path) -> None:
    rows = [
        LinkRow(291, "lion", "Panthera leo", "exact"),
        LinkRow(286, "cougar", "Puma concolor", "synonym", "genus change, with a comma"),
    ]
    path = tmp_path / "sub" / "link.csv"
    write_species_link(rows, path)
    assert read_species_link(path) == sorted(rows, key=lambda row: row.imagenet_index)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x,lion,Panthera leo,exact,\n", "must be an integer"),
        ("1000,lion,Panthera leo,exact,\n", "outside 0..999"),
        ("291,lion,Panthera leo,exact,\n291,lion,Panthera leo,exact,\n", "already linked"),
        ("291,lion,panthera,exact,\n", "scientific name"),
        ("291,,Panthera leo,exact,\n", "empty imagenet_name"),
        ("291,lion,Panthera leo,fuzzy,\n", "match must be one of"),
        ("286,cougar,Puma concolor,synonym,\n", "needs a note"),
        ("291,lion,Panthera leo\n", "expected 5 fields"),
    ],
)
def test_malformed_rows_raise_with_line(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ValueError, match=message) as info:
        load_species_link(path, ["Panthera leo"])
    assert str(path) in str(info.value) and ":" in str(info.value)


def test_bad_header_missing_file_and_repeated_class(tmp_path: Path) -> None:
    path = tmp_path / "link.csv"
    path.write_text("index,species\n291,Panthera leo\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header must be"):
        read_species_link(path)
    with pytest.raises(FileNotFoundError, match="species link table"):
        read_species_link(tmp_path / "missing.csv")
    good = _write(tmp_path, "291,lion,Panthera leo,exact,\n")
    with pytest.raises(ValueError, match="repeats 'Panthera leo'"):
        load_species_link(good, ["Panthera leo", "Panthera leo"])


# --- the committed table ---------------------------------------------------------------------


def test_committed_table_is_valid_and_reviewed() -> None:
    rows = read_species_link(LINK)
    species = read_species_names(SPECIES_CSV)
    assert {row.species for row in rows} <= species
    kinds = [row.match for row in rows]
    assert kinds.count("exact") == 57 and len(rows) == 68
    by_index = {row.imagenet_index: row for row in rows}
    assert by_index[386].species == "Loxodonta africana"
    assert by_index[50] == LinkRow(
        50,
        "American alligator",
        "Alligator mississippiensis",
        "spelling",
        "WordNet misspells the epithet as 'mississipiensis'",
    )
    assert by_index[286].species == "Puma concolor" and by_index[286].match == "synonym"
    assert all(row.note for row in rows if row.match != "exact")
    # Classes that are different species from anything in the data stay unlinked.
    assert not {46, 136, 364} & set(by_index)  # green lizard, European gallinule, 3-toed sloth


@pytest.fixture(scope="module")
def lemmas() -> list[tuple[str, ...]]:
    return imagenet_lemmas()


def test_exact_rows_are_what_build_link_regenerates(lemmas: list[tuple[str, ...]]) -> None:
    exact = exact_links(lemmas, read_species_names(SPECIES_CSV))
    committed = [row for row in read_species_link(LINK) if row.match == "exact"]
    assert committed == exact
    assert len(lemmas) == 1000 and lemmas[291][0] == "lion"


def test_build_link_check_passes_on_committed_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "exact: 57 classes (56 species); reviewed fixes: 11" in out
    assert "is up to date" in out


def test_build_link_writes_and_detects_stale_table(tmp_path: Path) -> None:
    out = tmp_path / "link.csv"
    reviewed = [row for row in read_species_link(LINK) if row.match != "exact"]
    write_species_link(reviewed[:3], out)
    assert main(["--out", str(out), "--check"]) == 1
    assert main(["--out", str(out)]) == 0
    assert len(read_species_link(out)) == 57 + 3
    assert main(["--out", str(out), "--check"]) == 0


# --- build_link helpers on small inputs --------------------------------------------------------


def test_binomial_lemmas_skip_vernacular_names() -> None:
    assert binomial_lemmas(("American alligator", "Alligator mississipiensis")) == [
        "Alligator mississipiensis"
    ]
    assert binomial_lemmas(("African grey", "African gray", "Psittacus erithacus")) == [
        "Psittacus erithacus"
    ]
    assert binomial_lemmas(("Border collie",)) == []


def test_exact_links_and_fuzzy_candidates() -> None:
    lemmas = [
        ("lion", "king of beasts", "Panthera leo"),
        ("American alligator", "Alligator mississipiensis"),
        ("cougar", "puma", "Felis concolor"),
        ("bullfrog", "Rana catesbeiana"),
        ("Windsor tie",),
    ]
    species = {
        "Panthera leo",
        "Alligator mississippiensis",
        "Puma concolor",
        "Lithobates catesbeianus",
        "Abies concolor",
    }
    exact = exact_links(lemmas, species)
    assert exact == [LinkRow(0, "lion", "Panthera leo", "exact")]
    candidates = fuzzy_candidates(lemmas, species, linked=[0])
    by_class: dict[int, list[str]] = {}
    for c in candidates:  # best first within each class
        by_class.setdefault(c.imagenet_index, []).append(c.species)
    assert set(by_class) == {1, 2, 3}  # not the lion (linked) nor the tie (no binomial)
    assert by_class[1][0] == "Alligator mississippiensis"  # misspelt epithet, same genus
    assert by_class[3][0] == "Lithobates catesbeianus"  # genus change + gender ending
    assert set(by_class[2]) == {"Puma concolor", "Abies concolor"}  # same epithet: review


def test_merge_reviewed_keeps_fixes_and_rejects_unknown_species(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exact = [LinkRow(291, "lion", "Panthera leo", "exact")]
    fix = LinkRow(286, "cougar", "Puma concolor", "synonym", "genus change")
    now_exact = LinkRow(291, "lion", "Panthera leo", "synonym", "old fix")
    merged = merge_reviewed(exact, [fix, now_exact], {"Panthera leo", "Puma concolor"})
    assert merged == [fix, exact[0]]
    assert "now links exactly" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not in the species data"):
        merge_reviewed(exact, [fix], {"Panthera leo"})


def test_read_species_names_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_species_names(tmp_path / "none.csv")
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["id", "name"], ["1", "Panthera leo"]])
    with pytest.raises(ValueError, match="no 'label' column"):
        read_species_names(path)
