"""Generic CSV files of located records (one row per photo / observation).

Columns are found by name, case-insensitively, unless given explicitly. Within a role the
first group with a match wins; two matches in one group are ambiguous (an error):

- latitude: ``latitude``, ``lat``, ``decimalLatitude`` (GBIF / Darwin Core), ``gps_latitude``;
  then ``y``
- longitude: ``longitude``, ``lon``, ``lng``, ``long``, ``decimalLongitude``, ``gps_longitude``;
  then ``x``
- label (optional): ``label``, ``species``, ``class``, ``class_name``, ``category``, ``taxon``,
  ``spid``, ``species_id``; then ``scientific_name``, ``scientificName`` (so a GBIF file's
  ``species`` column, the binomial without authorship, wins over ``scientificName``)
- id (optional): ``id``, ``yfcc_id``, ``image_id``, ``photo_id``, ``observation_id``,
  ``gbifID``; then ``occurrenceID``
- path (optional): ``path``, ``image_path``, ``file_path``, ``filepath``, ``file_name``,
  ``filename``
- date (optional): ``date``, ``datetime``, ``observed_on``, ``eventDate``, ``timestamp``

The separator (comma, tab or semicolon) is sniffed from the header unless given, so GBIF's
tab-separated ``occurrence.txt`` reads as it is. Coordinate cells are decimal degrees, or any
format :func:`csp.geo.parse_coordinate` accepts (``48°51'29.6"N``). A row with both coordinate
cells empty is dropped and counted; any other bad row raises a ValueError naming the file, its
line number (the header is line 1) and the column, or, with ``invalid="drop"``, is dropped
and counted.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from csp.datasets._files import require_file
from csp.datasets.records import MISSING_LATLON, GeoRecords
from csp.geo import find_invalid_lonlat, parse_coordinate, validate_lonlat

AUTO = "auto"
INVALID_LATLON = "invalid lat/lon"
"""Key of ``GeoRecords.dropped`` counting rows dropped with ``invalid="drop"``."""

# Recognised column names by role, lower case, in tiers: the first tier with a match wins
# (so GBIF's ``species`` beats its ``scientificName``, and ``lon`` beats ``x``); two matches in
# one tier are ambiguous.
_CANDIDATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "latitude": (("latitude", "lat", "decimallatitude", "gps_latitude"), ("y",)),
    "longitude": (("longitude", "lon", "lng", "long", "decimallongitude", "gps_longitude"), ("x",)),
    "label": (
        ("label", "species", "class", "class_name", "category", "taxon", "spid", "species_id"),
        ("scientific_name", "scientificname"),
    ),
    "id": (
        ("id", "yfcc_id", "image_id", "photo_id", "observation_id", "gbifid"),
        ("occurrenceid",),
    ),
    "path": (("path", "image_path", "file_path", "filepath", "file_name", "filename"),),
    "date": (("date", "datetime", "observed_on", "eventdate", "timestamp"),),
}
_ARG = {"latitude": "lat_col", "longitude": "lon_col", "label": "label_col", "id": "id_col"}
_DELIMITERS = (",", "\t", ";")


def sniff_delimiter(header_line: str) -> str:
    """The separator of a header line: whichever of comma, tab and semicolon occurs most
    (comma when none does)."""
    counts = [header_line.count(d) for d in _DELIMITERS]
    return _DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def _find_column(
    header: list[str], requested: str | None, role: str, path: Path, *, required: bool
) -> int | None:
    """Index of the column playing ``role``: by explicit name, auto-detected, or disabled."""
    arg = _ARG.get(role, f"{role}_col")
    names = [h.strip() for h in header]
    if requested is None:
        if required:
            raise ValueError(f"{arg} cannot be None: the {role} column is required")
        return None
    if requested != AUTO:
        exact = [i for i, h in enumerate(names) if h == requested]
        matches = exact or [i for i, h in enumerate(names) if h.lower() == requested.lower()]
        if len(matches) != 1:
            problem = "is missing" if not matches else "appears more than once"
            raise ValueError(f"{path}: column {requested!r} ({arg}) {problem}; columns: {names}")
        return matches[0]
    for tier in _CANDIDATES[role]:
        matches = [i for i, h in enumerate(names) if h.lower() in tier]
        if len(matches) > 1:
            found = [names[i] for i in matches]
            raise ValueError(
                f"{path}: columns {found} all look like the {role}; choose one with {arg}= "
                f"(--{arg.replace('_', '-')} on the command line)"
            )
        if matches:
            return matches[0]
    if required:
        known = [name for tier in _CANDIDATES[role] for name in tier]
        raise ValueError(
            f"{path}: no {role} column found (looked for {known}, case-insensitive); "
            f"columns: {names}; name it with {arg}= (--{arg.replace('_', '-')} on the command line)"
        )
    return None


def _coordinate(text: str, axis: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_coordinate(text, axis)
    except ValueError as err:
        name = "latitude" if axis == "lat" else "longitude"
        raise ValueError(f"{where}: bad {name}: {err}") from None


def _class_index(texts: list[str]) -> tuple[np.ndarray, list[str]] | tuple[None, None]:
    """Label texts (empty = unlabeled) as int64 indices into sorted class names."""
    names = {t for t in texts if t}
    if not names:
        return None, None
    numeric = all(n.lstrip("-").isdigit() for n in names)
    class_names = sorted(names, key=int) if numeric else sorted(names)
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index.get(t, -1) for t in texts], dtype=np.int64), class_names


def read_csv(
    path: str | Path,
    *,
    lat_col: str = AUTO,
    lon_col: str = AUTO,
    label_col: str | None = AUTO,
    id_col: str | None = AUTO,
    path_col: str | None = AUTO,
    date_col: str | None = AUTO,
    delimiter: str = AUTO,
    invalid: str = "raise",
) -> GeoRecords:
    """Read located records from a CSV (or TSV) file with a header line.

    Args:
        path: the file (UTF-8, optional BOM).
        lat_col, lon_col: column names, or ``"auto"`` to detect them (module docstring).
        label_col, id_col, path_col, date_col: column names, ``"auto"`` to detect them if
            present, or ``None`` to ignore them.
        delimiter: field separator, or ``"auto"`` (:func:`sniff_delimiter` on the header).
            Tab-separated files are read without quote handling, as GBIF writes them.
        invalid: ``"raise"`` on a bad coordinate, or ``"drop"`` the row and count it under
            :data:`INVALID_LATLON` in ``dropped`` (rows with the wrong number of fields still
            raise: the file itself is broken).

    Returns:
        GeoRecords with (lon, lat) degrees; ``labels`` index ``class_names`` (sorted; by
        numeric value when every label is an integer; empty cells = -1), or are ``None``
        without a label column; ``ids`` from the id column, else the 0-based data row number
        (counting rows dropped for missing coordinates, not blank lines);
        relative ``paths`` are resolved against the CSV's directory.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an empty file, a header without data rows, a missing or ambiguous
            column, or a bad row (unparseable, NaN/inf or out-of-range coordinate, wrong
            number of fields): the message names the file, the line and the column.
    """
    if invalid not in ("raise", "drop"):
        raise ValueError(f"invalid must be 'raise' or 'drop', got {invalid!r}")
    path = require_file(path, "CSV file")
    try:
        table = _read_rows(path, delimiter)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise ValueError(f"{path}: malformed CSV ({err})") from None
    header, rows = table
    cols = {
        "lat": _find_column(header, lat_col, "latitude", path, required=True),
        "lon": _find_column(header, lon_col, "longitude", path, required=True),
        "label": _find_column(header, label_col, "label", path, required=False),
        "id": _find_column(header, id_col, "id", path, required=False),
        "path": _find_column(header, path_col, "path", path, required=False),
        "date": _find_column(header, date_col, "date", path, required=False),
    }
    names = {key: header[i].strip() for key, i in cols.items() if i is not None}
    kept, lonlat, counts = _coordinates(path, header, rows, cols, names, invalid)
    cells = {
        key: [rows[k][1][cols[key]].strip() for k in kept]
        for key in ("label", "id", "path", "date")
        if cols[key] is not None
    }
    labels, class_names = _class_index(cells["label"]) if "label" in cells else (None, None)
    if labels is None and "label" in cells:
        labels = np.full(len(lonlat), -1, dtype=np.int64)  # a label column, all cells empty
    n = len(lonlat)
    return GeoRecords(
        ids=cells["id"] if "id" in cells else [str(k) for k in kept],
        paths=[str(path.parent / p) if p else None for p in cells["path"]] if "path" in cells else [None] * n,
        lonlat=lonlat,
        labels=labels,
        class_names=class_names,
        dates=[d or None for d in cells["date"]] if "date" in cells else None,
        dropped={k: v for k, v in counts.items() if v},
    )


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank data rows with their line numbers (the header is line 1)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        if not first.strip():
            raise ValueError(f"{path}: the file is empty (no header line)")
        if delimiter == AUTO:
            delimiter = sniff_delimiter(first)
        f.seek(0)
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader)
        rows = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise ValueError(
                    f"{path}: line {reader.line_num}: expected {len(header)} fields, got {len(row)}"
                )
            rows.append((reader.line_num, row))
    return header, rows


def _coordinates(
    path: Path,
    header: list[str],
    rows: list[tuple[int, list[str]]],
    cols: dict[str, int | None],
    names: dict[str, str],
    invalid: str,
) -> tuple[list[int], np.ndarray, dict[str, int]]:
    """Parse and check the coordinate cells of every row.

    Returns the kept rows' positions in ``rows`` (= their 0-based data row numbers), their
    ``(N, 2)`` (lon, lat) degrees, and the counts of rows dropped for missing / invalid
    coordinates.
    """
    kept, lonlat, lines = [], [], []
    counts = {MISSING_LATLON: 0, INVALID_LATLON: 0}
    for k, (line, row) in enumerate(rows):
        lat_text, lon_text = row[cols["lat"]].strip(), row[cols["lon"]].strip()
        if not lat_text and not lon_text:
            counts[MISSING_LATLON] += 1
            continue
        try:
            lat = _coordinate(lat_text, "lat", f"{path}: line {line}, column {names['lat']!r}")
            lon = _coordinate(lon_text, "lon", f"{path}: line {line}, column {names['lon']!r}")
        except ValueError:
            if invalid == "raise":
                raise
            counts[INVALID_LATLON] += 1
            continue
        kept.append(k)
        lonlat.append((lon, lat))
        lines.append(line)
    points = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    where = f"columns {names['lon']!r}/{names['lat']!r}"
    if invalid == "raise":
        validate_lonlat(points, source=str(path), describe_row=lambda i: f"line {lines[i]}, {where}")
    else:
        good = np.ones(len(points), dtype=bool)
        while (found := find_invalid_lonlat(points[good])) is not None:
            good[np.flatnonzero(good)[found[0]]] = False
        counts[INVALID_LATLON] += int((~good).sum())
        points, kept = points[good], [k for k, g in zip(kept, good, strict=True) if g]
    if not len(points):
        raise ValueError(f"{path}: no data rows with valid coordinates after the header")
    return kept, points, counts
