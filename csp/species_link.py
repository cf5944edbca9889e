"""The ImageNet-class -> species link table (``imagenet_species_link.csv``).

ImageNet-1k classes whose WordNet lemmas carry a Latin binomial (e.g. "African elephant,
Loxodonta africana") are linked to the species of the location prior, so that geo-aware
classification can re-weight exactly those classes. One CSV row per linked class:

``imagenet_index``  ImageNet-1k class index, 0..999 (each at most once)
``imagenet_name``   the class's first WordNet lemma, for people reading the file
``species``         scientific name as written in the species data ("Genus epithet ...")
``match``           ``exact`` (a lemma equals the name), ``spelling`` (a misspelt lemma) or
                    ``synonym`` (an older name of the same species, e.g. a genus change)
``note``            why a non-exact row is right (required unless ``match`` is ``exact``)

Several classes may link to one species (ImageNet has both "hog" and "wild boar" for
*Sus scrofa*). ``train/build_link.py`` regenerates the exact rows from timm's WordNet lemmas.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from csp.datasets._files import read_fixed_table
from csp.names import is_scientific_name

LINK_COLUMNS = ("imagenet_index", "imagenet_name", "species", "match", "note")
MATCH_KINDS = ("exact", "spelling", "synonym")
N_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class LinkRow:
    """One linked ImageNet class (see the module docstring for the fields)."""

    imagenet_index: int
    imagenet_name: str
    species: str
    match: str
    note: str = ""


def _parse_row(row: dict[str, str], where: str) -> LinkRow:
    values = {key: (value or "").strip() for key, value in row.items()}
    try:
        index = int(values["imagenet_index"])
    except ValueError:
        raise ValueError(
            f"{where}: imagenet_index must be an integer, got {values['imagenet_index']!r}"
        ) from None
    if not 0 <= index < N_IMAGENET_CLASSES:
        raise ValueError(f"{where}: imagenet_index {index} is outside 0..{N_IMAGENET_CLASSES - 1}")
    if not values["imagenet_name"]:
        raise ValueError(f"{where}: empty imagenet_name")
    if not is_scientific_name(values["species"]):
        raise ValueError(
            f"{where}: species must be a scientific name like 'Genus epithet', got {values['species']!r}"
        )
    if values["match"] not in MATCH_KINDS:
        raise ValueError(f"{where}: match must be one of {', '.join(MATCH_KINDS)}, got {values['match']!r}")
    if values["match"] != "exact" and not values["note"]:
        raise ValueError(f"{where}: a {values['match']} link needs a note saying why")
    return LinkRow(index, values["imagenet_name"], values["species"], values["match"], values["note"])


def read_species_link(path: str | Path) -> list[LinkRow]:
    """Read and validate the link CSV, in file order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and line, for a header other than :data:`LINK_COLUMNS`,
            a non-integer or out-of-range or repeated ``imagenet_index``, an empty name, a
            species that is not a scientific name, an unknown ``match`` or a missing note.
    """
    rows: list[LinkRow] = []
    seen: dict[int, int] = {}
    for where, line, raw in read_fixed_table(path, LINK_COLUMNS, "species link table"):
        row = _parse_row(raw, where)
        if row.imagenet_index in seen:
            raise ValueError(
                f"{where}: imagenet_index {row.imagenet_index} already linked on line "
                f"{seen[row.imagenet_index]}"
            )
        seen[row.imagenet_index] = line
        rows.append(row)
    return rows


def write_species_link(rows: Iterable[LinkRow], path: str | Path) -> None:
    """Write rows sorted by ImageNet index, with the :data:`LINK_COLUMNS` header."""
    ordered = sorted(rows, key=lambda row: row.imagenet_index)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LINK_COLUMNS)
        for row in ordered:
            writer.writerow([row.imagenet_index, row.imagenet_name, row.species, row.match, row.note])


def load_species_link(path: str | Path, class_names: Sequence[str]) -> dict[int, int]:
    """Map ImageNet class index -> index in ``class_names`` (the prior's species list).

    Rows whose species is not in ``class_names`` are skipped (the prior has no such class).

    Raises:
        FileNotFoundError / ValueError: as :func:`read_species_link`, and ValueError if
            ``class_names`` repeats a name.
    """
    position: dict[str, int] = {}
    for i, name in enumerate(class_names):
        if name in position:
            raise ValueError(f"class_names repeats {name!r} (positions {position[name]} and {i})")
        position[name] = i
    return {
        row.imagenet_index: position[row.species]
        for row in read_species_link(path)
        if row.species in position
    }
