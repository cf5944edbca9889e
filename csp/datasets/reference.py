"""A split of the CSP reference code's data folder, by its annotation file.

The reference code (gengchenmai/csp, ``main/datasets.py``) reads, per dataset and split, a
COCO-style ``{split}.json`` (``train2018.json``, ``train.json`` ...) and its locations beside it:
``{split}_location.json`` for fMoW, ``{split}_locations.json`` for iNaturalist; its image
features are ``.npy`` matrices with one row per image of ``{split}.json`` (e.g.
``features_inception_pretrain/inat2018_train_pretrain_net_feats.npy``), of which it keeps the rows
of images with a location. :func:`read_reference_split` does the same, so those files feed
``python -m train pretrain`` (``--features X.npy --locations {split}.json``) and ``finetune``
(``--csv {split}.json``) directly.
"""

from __future__ import annotations

from pathlib import Path

from csp.datasets.coco import LocationSource, attach_features, read_coco_located
from csp.datasets.fmow import read_fmow
from csp.datasets.records import GeoRecords

LOCATION_SUFFIXES = ("_location.json", "_locations.json")  # fMoW, iNaturalist


def reference_locations_file(json_path: str | Path) -> Path:
    """The locations file beside ``{split}.json``.

    Raises:
        FileNotFoundError: neither ``{split}_location.json`` nor ``{split}_locations.json`` exists.
    """
    json_path = Path(json_path)
    candidates = [json_path.with_name(json_path.stem + suffix) for suffix in LOCATION_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{json_path}: no locations file beside it (looked for {', '.join(c.name for c in candidates)})"
    )


def read_reference_split(json_path: str | Path, features_npy: str | Path | None = None) -> GeoRecords:
    """Read ``{split}.json`` with its locations (and optional feature rows) as the reference code.

    Args:
        json_path: the split's annotation file.
        features_npy: optional ``(N_images, D)`` features, one row per image of ``json_path``;
            the rows of the kept images (those with a location) become ``records.features``.

    Returns:
        GeoRecords with labels and class names (fMoW: from ``category.json`` when it is there).

    Raises:
        FileNotFoundError: a file is missing; ValueError: malformed files or a feature matrix
            whose row count is not the number of images (naming the files).
    """
    locations = reference_locations_file(json_path)
    if locations.name.endswith(LOCATION_SUFFIXES[0]):
        return read_fmow(json_path, locations, features_npy)
    records, kept = read_coco_located(json_path, LocationSource.from_file(locations))
    return attach_features(records, kept, features_npy, json_path)
