"""Generic CSV files of located records (one row per photo / observation).

Columns are found by name, case-insensitively, unless given explicitly:

- latitude: ``latitude``, ``lat``, ``decimalLatitude`` (GBIF / Darwin Core), ``gps_latitude``
- longitude: ``longitude``, ``lon``, ``lng``, ``long``, ``decimalLongitude``, ``gps_longitude``
- label (optional): ``label``, ``species``, ``class``, ``class_name``, ``category``,
  ``scientific_name``, ``scientificName``, ``taxon``
- id (optional): ``id``, ``yfcc_id``, ``image_id``, ``photo_id``, ``observation_id``,
  ``gbifID``, ``occurrenceID``
- path (optional): ``path``, ``image_path``, ``file_path``, ``filepath``, ``file_name``,
  ``filename``
- date (optional): ``date``, ``datetime``, ``observed_on``, ``eventDate``, ``timestamp``

Coordinate cells are decimal degrees, or any format :func:`csp.geo.parse_coordinate` accepts
(``48°51'29.6"N``). A row with both coordinate cells empty is dropped and counted; any other
bad row raises a ValueError naming the file and its line number (the header is line 1).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from csp.datasets._files import require_file
from csp.datasets.records import MISSING_LATLON, GeoRecords
from csp.geo import parse_coordinate, validate_lonlat

AUTO = "auto"
_CANDIDATES = {
    "latitude": ("latitude", "lat", "decimallatitude", "gps_latitude"),
    "longitude": ("longitude", "lon", "lng", "long", "decimallongitude", "gps_longitude"),
    "label": (
        "label",
        "species",
        "class",
        "class_name",
        "category",
        "scientific_name",
        "scientificname",
        "taxon",
    ),  # fmt: skip
    "id": ("id", "yfcc_id", "image_id", "photo_id", "observation_id", "gbifid", "occurrenceid"),
    "path": ("path", "image_path", "file_path", "filepath", "file_name", "filename"),
    "date": ("date", "datetime", "observed_on", "eventdate", "timestamp"),
}
_ARG = {"latitude": "lat_col", "longitude": "lon_col", "label": "label_col", "id": "id_col"}


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
    matches = [i for i, h in enumerate(names) if h.lower() in _CANDIDATES[role]]
    if len(matches) > 1:
        found = [names[i] for i in matches]
        raise ValueError(f"{path}: columns {found} all look like the {role}; choose one with {arg}=")
    if not matches:
        if required:
            raise ValueError(
                f"{path}: no {role} column found (looked for {list(_CANDIDATES[role])}, "
                f"case-insensitive); columns: {names}; name it with {arg}="
            )
        return None
    return matches[0]


def _coordinate(text: str, axis: str, path: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_coordinate(text, axis)
    except ValueError as err:
        name = "latitude" if axis == "lat" else "longitude"
        raise ValueError(f"{path}: line {line}: bad {name}: {err}") from None


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
    delimiter: str = ",",
) -> GeoRecords:
    """Read located records from a CSV file with a header line.

    Args:
        path: the CSV file (UTF-8, optional BOM).
        lat_col, lon_col: column names, or ``"auto"`` to detect them (module docstring).
        label_col, id_col, path_col, date_col: column names, ``"auto"`` to detect them if
            present, or ``None`` to ignore them.
        delimiter: field separator.

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
            number of fields): the message names the file and the line number.
    """
    path = require_file(path, "CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise ValueError(f"{path}: the file is empty (no header line)")
            cols = {
                "lat": _find_column(header, lat_col, "latitude", path, required=True),
                "lon": _find_column(header, lon_col, "longitude", path, required=True),
                "label": _find_column(header, label_col, "label", path, required=False),
                "id": _find_column(header, id_col, "id", path, required=False),
                "path": _find_column(header, path_col, "path", path, required=False),
                "date": _find_column(header, date_col, "date", path, required=False),
            }
            lines, row_numbers, lonlat = [], [], []
            cells: dict[str, list[str]] = {k: [] for k in ("label", "id", "path", "date")}
            n_missing = n_rows = 0
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                line, n_rows = reader.line_num, n_rows + 1
                if len(row) != len(header):
                    raise ValueError(f"{path}: line {line}: expected {len(header)} fields, got {len(row)}")
                lat_text, lon_text = row[cols["lat"]].strip(), row[cols["lon"]].strip()
                if not lat_text and not lon_text:
                    n_missing += 1
                    continue
                lat = _coordinate(lat_text, "lat", path, line)
                lon = _coordinate(lon_text, "lon", path, line)
                lines.append(line)
                row_numbers.append(n_rows - 1)
                lonlat.append((lon, lat))
                for key, column in cells.items():
                    if cols[key] is not None:
                        column.append(row[cols[key]].strip())
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise ValueError(f"{path}: malformed CSV ({err})") from None

    if not lonlat:
        raise ValueError(f"{path}: no data rows with coordinates after the header")
    lonlat_arr = np.asarray(lonlat, dtype=np.float64)
    validate_lonlat(lonlat_arr, source=str(path), describe_row=lambda i: f"line {lines[i]}")

    labels, class_names = _class_index(cells["label"]) if cols["label"] is not None else (None, None)
    if labels is None and cols["label"] is not None:
        labels = np.full(len(lonlat), -1, dtype=np.int64)  # a label column, all cells empty
    n = len(lonlat)
    return GeoRecords(
        ids=cells["id"] if cols["id"] is not None else [str(r) for r in row_numbers],
        paths=(
            [str(path.parent / p) if p else None for p in cells["path"]]
            if cols["path"] is not None
            else [None] * n
        ),
        lonlat=lonlat_arr,
        labels=labels,
        class_names=class_names,
        dates=[d or None for d in cells["date"]] if cols["date"] is not None else None,
        dropped={MISSING_LATLON: n_missing} if n_missing else {},
    )
