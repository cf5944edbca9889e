"""fMoW in the layout the CSP reference code (gengchenmai/csp) reads.

The reference code's fMoW directory (``geo_prior_data_csp/data/fmow/``) holds, per split
(``train``, ``val``):

- ``{split}.json``: COCO-style, ``images`` (``id``, ``file_name``) and ``annotations``
  (``image_id``, ``category_id``), read exactly like the iNaturalist files;
- ``{split}_location.json``: a list of ``{"id": image_id, "lon": deg, "lat": deg,
  "user_id": ..., "date_c": ...}``, one entry per image (null lon/lat = no location);
- ``category.json``: a JSON object mapping each of the 62 class names to its category id;
- ``features_inception_pretrain/fmow_{split}_pretrain_net_feats.npy``: a float ``(N, D)`` matrix
  of precomputed image features (MoCo-v3 ResNet50 in the paper, D = 2048), one row per image in
  the order of ``images`` in ``{split}.json``, including images later dropped for a missing
  location (the reference code indexes it with the kept-image indices, and so does this reader).
"""

from __future__ import annotations

from pathlib import Path

from csp.datasets._files import load_json
from csp.datasets.coco import LocationSource, attach_features, read_coco_located
from csp.datasets.records import GeoRecords


def _categories_from_mapping(path: Path) -> dict[int, str]:
    mapping = load_json(path, "fMoW category file")
    if not isinstance(mapping, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping class name -> integer id")
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"{path}: two class names share one category id")
    return {cid: name for name, cid in mapping.items()}


def read_fmow(
    json_path: str | Path,
    loc_json_path: str | Path | None = None,
    features_npy: str | Path | None = None,
    *,
    category_json_path: str | Path | None = None,
    image_root: str | Path | None = None,
) -> GeoRecords:
    """Read one fMoW split of the CSP reference layout (see the module docstring).

    Args:
        json_path: ``{split}.json``.
        loc_json_path: the locations list; defaults to ``{split}_location.json`` next to
            ``json_path``.
        features_npy: optional precomputed features, one row per image of ``json_path``;
            the rows of kept images end up in ``records.features`` (float32 ``(N, D)``).
        category_json_path: class name -> id mapping; defaults to ``category.json`` next to
            ``json_path`` if it exists, else the ``categories`` list of ``json_path``.
        image_root: directory prepended to each image ``file_name`` in ``paths``.

    Raises:
        FileNotFoundError: a named (or default) file does not exist.
        ValueError: naming the file and row: invalid coordinates, malformed files, or a
            feature matrix whose row count differs from the number of images.
    """
    json_path = Path(json_path)
    if loc_json_path is None:
        loc_json_path = json_path.with_name(f"{json_path.stem}_location.json")
    categories = None
    if category_json_path is None and json_path.with_name("category.json").is_file():
        category_json_path = json_path.with_name("category.json")
    if category_json_path is not None:
        categories = _categories_from_mapping(Path(category_json_path))
    records, kept = read_coco_located(
        json_path,
        LocationSource.from_file(loc_json_path),
        categories=categories,
        image_root=image_root,
    )
    return attach_features(records, kept, features_npy, json_path)
