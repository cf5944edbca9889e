"""Precomputed image features plus their locations, for users who already have features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from csp.datasets._files import check_row_count, load_features, require_file
from csp.datasets.records import GeoRecords
from csp.datasets.tabular import read_csv
from csp.geo import validate_lonlat


def _lonlat_npy(path: Path) -> GeoRecords:
    try:
        lonlat = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: cannot read as a .npy array ({err})") from None
    if not np.issubdtype(lonlat.dtype, np.number) or lonlat.ndim != 2 or lonlat.shape[1] != 2:
        raise ValueError(
            f"{path}: locations must be a numeric (N, 2) array of (lon, lat) degrees, "
            f"got dtype {lonlat.dtype} and shape {lonlat.shape}"
        )
    validate_lonlat(lonlat, source=str(path))
    n = len(lonlat)
    return GeoRecords(ids=[str(i) for i in range(n)], paths=[None] * n, lonlat=lonlat)


def read_precomputed(
    features_npy: str | Path, locations_csv_or_npy: str | Path, **csv_options: Any
) -> GeoRecords:
    """Pair a feature matrix with one location per row.

    Args:
        features_npy: ``(N, D)`` numeric .npy (no pickles), row i = record i.
        locations_csv_or_npy: either an ``(N, 2)`` .npy of **(lon, lat)** degrees, or a CSV
            read by :func:`csp.datasets.read_csv` (which may also give labels, ids, paths,
            dates); every CSV row must have coordinates, in the same order as the features.
            Or the CSP reference code's ``{split}.json`` (its locations file beside it), whose
            images the feature rows follow; rows of images without a location are left out,
            as the reference code does (:func:`csp.datasets.reference.read_reference_split`).
        **csv_options: forwarded to :func:`csp.datasets.read_csv` (``lat_col=``,
            ``label_col=`` ...).

    Returns:
        GeoRecords with ``features`` set (float32 ``(N, D)``).

    Raises:
        FileNotFoundError: if either file is missing.
        ValueError: naming the file(s): mismatched row counts, rows without coordinates,
            invalid coordinates or features, unsupported location file type.
    """
    features_path = require_file(features_npy, "feature file")
    loc_path = require_file(locations_csv_or_npy, "location file")
    suffix = loc_path.suffix.lower()
    if suffix == ".json":
        if csv_options:
            raise ValueError(f"CSV options {sorted(csv_options)} do not apply to {loc_path}")
        from csp.datasets.reference import read_reference_split

        return read_reference_split(loc_path, features_path)
    if suffix == ".npy":
        if csv_options:
            raise ValueError(f"CSV options {sorted(csv_options)} do not apply to {loc_path}")
        records = _lonlat_npy(loc_path)
    elif suffix in (".csv", ".tsv", ".txt"):
        records = read_csv(loc_path, **csv_options)
        if records.dropped:
            raise ValueError(
                f"{loc_path}: {sum(records.dropped.values())} rows have no coordinates; every "
                f"row must have one to stay aligned with the rows of {features_path}"
            )
    else:
        raise ValueError(f"{loc_path}: locations must be a .npy, .csv or reference .json, got '{suffix}'")
    features = load_features(features_path)
    check_row_count(features, len(records), features_path, str(loc_path))
    return replace(records, features=features)
