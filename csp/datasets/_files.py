"""File helpers shared by the readers: existence checks, JSON and .npy loading with clear errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path; FileNotFoundError naming ``what`` if it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def read_fixed_table(
    path: str | Path, columns: tuple[str, ...], what: str
) -> Iterator[tuple[str, int, dict[str, str]]]:
    """Rows of a CSV with exactly the header ``columns``, as ``(where, line, row)``.

    ``where`` is ``"<path>:<line>"`` for error messages. Raises FileNotFoundError naming
    ``what`` for a missing file, and ValueError for another header or a row with missing fields.
    """
    p = require_file(path, what)
    with p.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(
                f"{p}: header must be {','.join(columns)}, "
                f"got {','.join(reader.fieldnames or ()) or 'nothing'}"
            )
        for row in reader:
            where = f"{p}:{reader.line_num}"
            if None in row or any(value is None for value in row.values()):
                raise ValueError(f"{where}: expected {len(columns)} fields")
            yield where, reader.line_num, row


def load_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; FileNotFoundError / ValueError naming the file and the bad line."""
    p = require_file(path, what)
    try:
        with p.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not UTF-8 text ({err.reason})") from None


def load_features(path: str | Path) -> np.ndarray:
    """Load an ``(N, D)`` feature matrix from a .npy file as float32 (pickles are refused).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: naming the file for a non-.npy file, a pickled/non-numeric array, a shape
            other than (N, D), or the first row holding NaN/inf.
    """
    p = require_file(path, "feature file")
    try:
        features = np.load(p, allow_pickle=False)
    except ValueError as err:  # pickled object arrays, corrupt headers
        raise ValueError(f"{p}: cannot read as a .npy array ({err})") from None
    if not isinstance(features, np.ndarray):
        raise ValueError(f"{p}: expected a single .npy array, got {type(features).__name__}")
    if not (np.issubdtype(features.dtype, np.number) and not np.iscomplexobj(features)):
        raise ValueError(f"{p}: features must be real numbers, got dtype {features.dtype}")
    if features.ndim != 2:
        raise ValueError(f"{p}: features must have shape (N, D), got {features.shape}")
    features = features.astype(np.float32, copy=False)
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"{p}: row {row}: features contain NaN or inf")
    return features


def check_row_count(features: np.ndarray, n_rows: int, features_path: Path, rows_source: str):
    """ValueError naming both files when the feature rows do not match the records."""
    if len(features) != n_rows:
        raise ValueError(
            f"{features_path} has {len(features)} feature rows but {rows_source} has {n_rows} "
            "records; the rows must correspond one to one, in the same order"
        )
