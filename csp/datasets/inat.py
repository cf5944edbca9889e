"""iNaturalist competition files (2017, 2018, 2021) as :class:`GeoRecords`.

On-disk formats read here, as released by the competitions:

- 2017 / 2018: ``train2017.json`` / ``val2018.json`` ... are COCO-style (``images`` with ``id``
  and ``file_name``; ``annotations`` with ``image_id`` and ``category_id``; ``categories`` with
  ``id`` and ``name``). Locations are in the separately released ``train2017_locations.json``,
  ``val2018_locations.json`` ...: a list of ``{"id": image_id, "lat": deg | null,
  "lon": deg | null, "date": "YYYY-MM-DD hh:mm:ss+00:00", "date_c": ..., "user_id": ...}``
  (2018 adds ``loc_uncert`` and ``valid``). For 2018 the full category names are in the separate
  ``categories.json`` (a list of ``{"id", "name", "kingdom", ...}``): pass it as
  ``categories_json_path``.
- 2021: ``train.json`` / ``val.json`` carry the location in each image (``latitude``,
  ``longitude``, ``date``, ``location_uncertainty``); no locations file is needed.

Images whose location entry is missing or null are dropped and counted in
``GeoRecords.dropped``; out-of-range or NaN coordinates raise an error naming the file and the
image id.
"""

from __future__ import annotations

from pathlib import Path

from csp.datasets._files import load_json
from csp.datasets.coco import LocationSource, categories_from_list, read_coco_located
from csp.datasets.records import GeoRecords


def read_inat(
    json_path: str | Path,
    locations_json_path: str | Path | None = None,
    *,
    categories_json_path: str | Path | None = None,
    image_root: str | Path | None = None,
) -> GeoRecords:
    """Read an iNaturalist split: annotations plus locations, as (lon, lat) degree records.

    Args:
        json_path: the COCO-style split file (``train2017.json``, ``val2018.json``,
            ``train.json`` of 2021, ...).
        locations_json_path: the matching ``*_locations.json`` (2017/2018). Leave ``None`` for
            2021 files, whose images carry ``latitude``/``longitude`` themselves.
        categories_json_path: optional list of ``{"id", "name"}`` that names the classes
            (the 2018 ``categories.json``); defaults to the split file's ``categories``.
        image_root: directory prepended to each image ``file_name`` in ``paths``.

    Returns:
        GeoRecords with ``ids`` = image ids, ``labels`` = indices into ``class_names``
        (sorted by category id; -1 for unannotated test images), ``dates`` from the location
        entries, and ``dropped`` counting images without a usable location.

    Raises:
        FileNotFoundError: a named file does not exist.
        ValueError: naming the file and image, for malformed files or invalid coordinates, or
            when no locations file is given and the images carry no ``latitude``/``longitude``.
    """
    if locations_json_path is not None:
        locations = LocationSource.from_file(locations_json_path)
    else:
        locations = LocationSource.inline(json_path)
    categories = None
    if categories_json_path is not None:
        categories = categories_from_list(
            load_json(categories_json_path, "categories file"), categories_json_path
        )
    records, _ = read_coco_located(json_path, locations, categories=categories, image_root=image_root)
    return records
