"""Presence-absence sites: reading them and scoring a range model at them (per-species AUC).

A sites file is a CSV/TSV with (lon, lat) columns (recognised as in
:mod:`csp.datasets.tabular`) in one of two layouts:

- long: one row per (site, species) with a label column and a presence column
  (``presence``, ``present``, ``pa``, ``occurrence``, ``occurrenceStatus``; cells ``1``/``0``,
  ``present``/``absent``, ``true``/``false``). Rows at the same coordinates (rounded to 1e-6
  degrees) are one site; a species not listed at a site is "not surveyed" there (NaN).
- wide: one row per site, one 0/1 column per species, the column named like the species
  (only columns named like one of ``class_names`` are read).

AUC is the Mann-Whitney statistic: the probability that a random presence site scores
higher than a random absence site, ties counting one half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from csp.datasets import read_csv
from csp.datasets.tabular import AUTO, sniff_delimiter

PRESENCE_COLUMNS = ("presence", "present", "pa", "occurrence", "occurrencestatus")
_TRUE = {"1", "1.0", "present", "presence", "true", "yes", "y"}
_FALSE = {"0", "0.0", "absent", "absence", "false", "no", "n"}
COORDINATE_DECIMALS = 6  # rows of a long-format file this close are one site


@dataclass(frozen=True)
class Sites:
    """Presence-absence data at ``S`` sites for ``K`` species.

    Attributes:
        lonlat: ``(S, 2)`` (lon, lat) degrees.
        species: the ``K`` species names (columns of ``presence``).
        presence: ``(S, K)`` float, 1 = present, 0 = absent, NaN = not surveyed.
        source: the file they were read from.
    """

    lonlat: np.ndarray
    species: list[str]
    presence: np.ndarray
    source: str


def _flag(value: str, path: Path, line: int, column: str) -> float:
    text = value.strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    if not text:
        return float("nan")
    raise ValueError(f"{path}: line {line}, column {column!r}: {value!r} is not 0/1 or present/absent")


def _header(path: Path, delimiter: str) -> tuple[list[str], str]:
    with path.open(encoding="utf-8-sig") as handle:
        first = handle.readline()
    delimiter = sniff_delimiter(first) if delimiter == AUTO else delimiter
    return [h.strip() for h in first.rstrip("\r\n").split(delimiter)], delimiter


def presence_column(header: list[str]) -> str | None:
    """The header's presence column (long layout), if any."""
    found = [h for h in header if h.lower() in PRESENCE_COLUMNS]
    if len(found) > 1:
        raise ValueError(f"columns {found} all look like the presence flag; keep one")
    return found[0] if found else None


def is_sites_file(path: str | Path, class_names: list[str], delimiter: str = AUTO) -> bool:
    """Whether ``path`` holds presence-absence sites (a presence column, or species columns)."""
    header, _ = _header(Path(path), delimiter)
    return presence_column(header) is not None or bool(set(header) & set(class_names))


def read_sites(
    path: str | Path,
    class_names: list[str] | None = None,
    *,
    lon_col: str = AUTO,
    lat_col: str = AUTO,
    label_col: str = AUTO,
    delimiter: str = AUTO,
) -> Sites:
    """Read a presence-absence file in the long or wide layout (module docstring).

    ``class_names`` (the model's species) select the columns of a wide file and are needed
    for it; species of a long file are kept whatever they are (callers match them).

    Raises:
        ValueError: naming file, line and column for a bad cell; no species columns found.
    """
    path = Path(path)
    header, delimiter = _header(path, delimiter)
    flag_column = presence_column(header)
    if flag_column is not None:
        return _read_long(path, flag_column, lon_col, lat_col, label_col, delimiter)
    columns = [h for h in header if class_names is not None and h in class_names]
    if not columns:
        raise ValueError(
            f"{path}: no presence column ({list(PRESENCE_COLUMNS)}) and no column named like a "
            "species of the model: not a presence-absence file"
        )
    records = read_csv(
        path, lon_col=lon_col, lat_col=lat_col, label_col=None, id_col=None, delimiter=delimiter
    )
    table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, usecols=columns)
    rows = np.array([int(i) for i in records.ids])  # data row numbers (id_col=None)
    cells = table[columns].to_numpy()[rows]
    presence = np.array(
        [[_flag(cells[i, k], path, r + 2, c) for k, c in enumerate(columns)] for i, r in enumerate(rows)],
        dtype=np.float64,
    ).reshape(len(rows), len(columns))
    return Sites(records.lonlat, columns, presence, str(path))


def _read_long(
    path: Path, flag_column: str, lon_col: str, lat_col: str, label_col: str, delimiter: str
) -> Sites:
    records = read_csv(
        path, lon_col=lon_col, lat_col=lat_col, label_col=label_col, id_col=None, delimiter=delimiter
    )
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{path}: a long presence-absence file needs a species (label) column")
    table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, usecols=[flag_column])
    rows = np.array([int(i) for i in records.ids])
    flags = np.array([_flag(table[flag_column].iloc[r], path, r + 2, flag_column) for r in rows])
    keys = pd.MultiIndex.from_arrays(np.round(records.lonlat, COORDINATE_DECIMALS).T)
    site_codes, site_keys = pd.factorize(keys)
    presence = np.full((len(site_keys), len(records.class_names)), np.nan)
    labelled = records.labels >= 0
    presence[site_codes[labelled], records.labels[labelled]] = flags[labelled]
    first = pd.Series(np.arange(len(site_codes))).groupby(site_codes).first().to_numpy()
    return Sites(records.lonlat[first], list(records.class_names), presence, str(path))


def auc(scores: np.ndarray, presence: np.ndarray) -> float:
    """ROC AUC of ``scores (S,)`` against ``presence (S,)`` (1/0; NaN rows skipped); NaN when
    one of the two classes is missing."""
    keep = ~np.isnan(presence)
    scores, presence = scores[keep], presence[keep] > 0.5
    n_pos, n_neg = int(presence.sum()), int((~presence).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[presence].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_species_auc(scores: np.ndarray, sites: Sites) -> dict[str, float]:
    """``scores (S, K)`` for ``sites.species`` -> AUC per species (NaN without both classes)."""
    return {name: auc(scores[:, k], sites.presence[:, k]) for k, name in enumerate(sites.species)}


def mean_auc(per_species: dict[str, float]) -> float:
    """Mean over the species with a defined AUC (NaN if none)."""
    values = [v for v in per_species.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def match_species(sites: Sites, class_names: list[str]) -> tuple[Sites, np.ndarray]:
    """``sites`` restricted to species the model knows, and their class indices ``(K',)``.

    Raises:
        ValueError: none of the species is a class of the model.
    """
    index = {name: i for i, name in enumerate(class_names)}
    known = [k for k, name in enumerate(sites.species) if name in index]
    if not known:
        raise ValueError(
            f"{sites.source}: none of its {len(sites.species)} species is a class of the model "
            f"(e.g. {sites.species[:3]} vs {class_names[:3]})"
        )
    restricted = Sites(
        sites.lonlat, [sites.species[k] for k in known], sites.presence[:, known], sites.source
    )
    return restricted, np.array([index[sites.species[k]] for k in known], dtype=np.int64)
