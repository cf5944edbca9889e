"""COCO-style annotation files joined with per-image locations.

This is the layout shared by the iNaturalist competition files and by the fMoW files of the CSP
reference code: a JSON object with

- ``images``: ``[{"id": ..., "file_name": ..., ...}]`` (order defines the record order and the
  row order of any precomputed feature matrix),
- ``annotations``: ``[{"image_id": ..., "category_id": ...}]`` (absent for test splits),
- ``categories``: ``[{"id": ..., "name": ...}]`` (optional; may be supplied separately),

and a location per image, either in a separate list ``[{"id": image_id, "lat": ..., "lon": ...,
"date": ...}]`` or inline in each image (``latitude`` / ``longitude`` / ``date``, iNat 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from csp.datasets._files import check_row_count, load_features, load_json
from csp.datasets.records import MISSING_LATLON, GeoRecords
from csp.geo import validate_lonlat

MISSING_ENTRY = "no entry in the locations file"


@dataclass(frozen=True)
class LocationSource:
    """Where image locations come from: a separate list, or keys inside each image."""

    entries: Mapping[Any, dict] | None  # image id -> location entry; None = inline
    path: Path  # the file holding the locations (for messages)
    lat_key: str
    lon_key: str

    @classmethod
    def from_file(cls, path: str | Path) -> LocationSource:
        """A ``[{"id", "lat", "lon", ...}]`` locations file (iNat ``*_locations.json``)."""
        entries = load_json(path, "locations file")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"{path}: expected a JSON list of location objects")
        by_id = {}
        for k, entry in enumerate(entries):
            if "id" not in entry:
                raise ValueError(f"{path}: entry {k} has no 'id'")
            by_id[entry["id"]] = entry
        return cls(entries=by_id, path=Path(path), lat_key="lat", lon_key="lon")

    @classmethod
    def inline(cls, annotation_path: str | Path) -> LocationSource:
        """Locations stored in each image as ``latitude`` / ``longitude`` (iNat 2021)."""
        return cls(entries=None, path=Path(annotation_path), lat_key="latitude", lon_key="longitude")


def load_coco(path: str | Path) -> dict:
    """Load a COCO-style annotation file and check its top-level structure."""
    data = load_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO-style annotation file (no 'images' list)")
    for key in ("annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list")
    return data


def categories_from_list(items: Any, path: str | Path) -> dict[int, str]:
    """``[{"id": int, "name": str}, ...]`` as an id -> name mapping."""
    if not isinstance(items, list):
        raise ValueError(f"{path}: categories must be a list of {{'id', 'name'}} objects")
    categories = {}
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "name" not in item:
            raise ValueError(f"{path}: category {k} needs an 'id' and a 'name'")
        categories[item["id"]] = str(item["name"])
    return categories


def _coordinate(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: '{key}' is {value!r}, not a number of degrees")
    return float(value)


def _labels_by_image(data: dict, path: Path, index: dict[Any, int]) -> dict[Any, int]:
    labels: dict[Any, int] = {}
    for k, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise ValueError(f"{path}: annotations[{k}] needs an 'image_id' and a 'category_id'")
        if ann["category_id"] not in index:
            raise ValueError(f"{path}: annotations[{k}] has unknown category_id {ann['category_id']!r}")
        label = index[ann["category_id"]]
        if labels.setdefault(ann["image_id"], label) != label:
            raise ValueError(f"{path}: image {ann['image_id']!r} has annotations with different categories")
    return labels


def read_coco_located(
    json_path: str | Path,
    locations: LocationSource,
    *,
    categories: dict[int, str] | None = None,
    image_root: str | Path | None = None,
) -> tuple[GeoRecords, np.ndarray]:
    """Join a COCO-style annotation file with image locations.

    Args:
        json_path: the annotation file.
        locations: where the per-image (lat, lon) degrees are.
        categories: category id -> name; defaults to the file's ``categories`` (or, if it has
            none, the category ids seen in ``annotations``, named by their id).
        image_root: joined in front of each ``file_name`` for ``paths``.

    Returns:
        The records (labels index ``class_names``, which are sorted by category id; images
        without an annotation get -1) and the int64 indices of the kept images in the file's
        ``images`` list, to align precomputed feature rows. Images without a location entry or
        with a null lat/lon are dropped and counted in ``records.dropped``.

    Raises:
        ValueError: naming the file and the entry, for malformed JSON structure, non-numeric,
            NaN or out-of-range coordinates, or inconsistent annotations.
    """
    path = Path(json_path)
    data = load_coco(path)
    if categories is None:
        if data.get("categories"):
            categories = categories_from_list(data["categories"], path)
        else:
            seen = {a.get("category_id") for a in data.get("annotations", []) if isinstance(a, dict)}
            categories = {c: str(c) for c in seen if c is not None}
    category_ids = sorted(categories)
    index = {cid: i for i, cid in enumerate(category_ids)}
    labels_by_image = _labels_by_image(data, path, index)
    images = data["images"]
    if (
        locations.entries is None
        and images
        and not any(isinstance(im, dict) and locations.lat_key in im for im in images)
    ):
        raise ValueError(
            f"{path}: the images have no '{locations.lat_key}'/'{locations.lon_key}'; the "
            "locations must come from a separate locations file (e.g. iNat 2017/2018 "
            "*_locations.json)"
        )

    ids, paths, lonlat, labels, dates, where, kept = [], [], [], [], [], [], []
    dropped = {MISSING_ENTRY: 0, MISSING_LATLON: 0}
    for k, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"{path}: images[{k}] has no 'id'")
        image_id = image["id"]
        if locations.entries is None:
            entry, entry_where = image, f"images[{k}] (id {image_id})"
        else:
            entry = locations.entries.get(image_id)
            entry_where = f"entry for image id {image_id}"
            if entry is None:
                dropped[MISSING_ENTRY] += 1
                continue
        context = f"{locations.path}: {entry_where}"
        lat = _coordinate(entry.get(locations.lat_key), locations.lat_key, context)
        lon = _coordinate(entry.get(locations.lon_key), locations.lon_key, context)
        if lat is None or lon is None:
            dropped[MISSING_LATLON] += 1
            continue
        file_name = image.get("file_name")
        if file_name is not None and image_root is not None:
            file_name = str(Path(image_root) / file_name)
        date = entry.get("date")
        ids.append(str(image_id))
        paths.append(file_name)
        lonlat.append((lon, lat))
        labels.append(labels_by_image.get(image_id, -1))
        dates.append(date if isinstance(date, str) else None)
        where.append(entry_where)
        kept.append(k)

    lonlat_arr = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    validate_lonlat(lonlat_arr, source=str(locations.path), describe_row=lambda i: where[i])
    records = GeoRecords(
        ids=ids,
        paths=paths,
        lonlat=lonlat_arr,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[categories[c] for c in category_ids],
        dates=dates if any(d is not None for d in dates) else None,
        dropped={reason: n for reason, n in dropped.items() if n},
    )
    return records, np.asarray(kept, dtype=np.int64)


def attach_features(
    records: GeoRecords, kept: np.ndarray, features_npy: str | Path | None, json_path: str | Path
) -> GeoRecords:
    """``records`` with the rows ``kept`` of ``features_npy`` (one row per image of
    ``json_path``, as :func:`read_coco_located` returned them) as ``features``; unchanged if None.

    Raises:
        ValueError: the matrix's row count is not the number of images (naming both files).
    """
    if features_npy is None:
        return records
    features = load_features(features_npy)
    n_images = len(records) + sum(records.dropped.values())  # every image is kept or dropped
    check_row_count(features, n_images, Path(features_npy), f"{json_path} (images)")
    return replace(records, features=features[kept])
