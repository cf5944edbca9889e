"""Dataset readers. Each returns :class:`GeoRecords`: (lon, lat) degrees plus aligned columns.

| reader | source |
|---|---|
| :func:`read_inat` | iNaturalist 2017/2018/2021 COCO-style JSON (+ ``*_locations.json``) |
| :func:`read_fmow` | fMoW in the CSP reference layout (JSON, location JSON, feature .npy) |
| :func:`read_csv` | any CSV with latitude/longitude columns (auto-detected names) |
| :func:`read_photo_folder` | a folder of photos located by EXIF GPS |
| :func:`read_precomputed` | a feature .npy plus a location .npy/.csv |

Every reader validates coordinates with :func:`csp.geo.validate_lonlat`; errors name the file
and the row (line number, image id). Longitudes outside [-180, 180] are rejected, not wrapped.
"""

from csp.datasets.fmow import read_fmow
from csp.datasets.inat import read_inat
from csp.datasets.photos import read_photo_folder
from csp.datasets.precomputed import read_precomputed
from csp.datasets.records import GeoRecords
from csp.datasets.tabular import read_csv

__all__ = [
    "GeoRecords",
    "read_csv",
    "read_fmow",
    "read_inat",
    "read_photo_folder",
    "read_precomputed",
]
