"""A folder of the user's own photos, located by their EXIF GPS tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from csp.datasets.records import GeoRecords
from csp.exif import capture_time_from_exif, read_gps

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
UNSUPPORTED_SUFFIXES = (".heic", ".heif")  # reported as skipped, so the user learns why
NO_GPS = "no usable GPS"
UNREADABLE = "unreadable image"


def _photo_files(root: Path) -> list[Path]:
    suffixes = PHOTO_SUFFIXES + UNSUPPORTED_SUFFIXES
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _read_one(path: Path) -> tuple[tuple[float, float] | None, str | None, str]:
    """(lonlat or None, ISO capture time or None, reason) for one photo file."""
    if path.suffix.lower() in UNSUPPORTED_SUFFIXES:
        return None, None, f"{UNREADABLE}: {path.suffix} is not supported; convert it to JPEG"
    try:
        with Image.open(path) as image:
            gps = read_gps(image)
            date = capture_time_from_exif(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return None, None, f"{UNREADABLE}: {err}"
    return gps.lonlat, date, gps.reason


def read_photo_folder(
    root: str | Path, *, labels_from_subfolders: bool = False
) -> tuple[GeoRecords, list[tuple[str, str]]]:
    """Read every photo under ``root`` (recursively) that carries a usable EXIF GPS position.

    Photos without a usable position are not guessed: they are returned in ``skipped`` as
    ``(path, reason)`` (reasons come from :func:`csp.exif.read_gps`, or say the file cannot be
    opened) and counted in ``records.dropped``.

    Args:
        root: the folder; files with suffixes in :data:`PHOTO_SUFFIXES` are read (HEIC/HEIF
            files are listed as skipped, since Pillow cannot open them).
        labels_from_subfolders: label each photo by its first-level subfolder name
            (``root/<class>/.../photo.jpg``); photos directly in ``root`` get -1.

    Returns:
        ``(records, skipped)``: records with ``ids`` = paths relative to ``root`` (POSIX),
        ``paths`` = full paths, (lon, lat) degrees from EXIF, ``dates`` from
        ``DateTimeOriginal`` (``None`` if no photo has one), labels / class_names (sorted
        folder names) if requested, else ``None``.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
        ValueError: if it holds no photo files, or if ``labels_from_subfolders`` is set but no
            photo is inside a subfolder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"photo folder not found: {root}")
    files = _photo_files(root)
    if not files:
        raise ValueError(f"{root}: no photos found (looked for {', '.join(PHOTO_SUFFIXES)})")
    relative = [f.relative_to(root) for f in files]
    if labels_from_subfolders and all(len(r.parts) == 1 for r in relative):
        raise ValueError(f"{root}: labels_from_subfolders is set but no photo is in a subfolder")

    ids, paths, lonlat, folders, dates = [], [], [], [], []
    skipped: list[tuple[str, str]] = []
    dropped = {NO_GPS: 0, UNREADABLE: 0}
    for file, rel in zip(files, relative, strict=True):
        position, date, reason = _read_one(file)
        if position is None:
            skipped.append((str(file), reason))
            dropped[UNREADABLE if reason.startswith(UNREADABLE) else NO_GPS] += 1
            continue
        ids.append(rel.as_posix())
        paths.append(str(file))
        lonlat.append(position)
        folders.append(rel.parts[0] if len(rel.parts) > 1 else None)
        dates.append(date)

    labels = class_names = None
    if labels_from_subfolders:
        class_names = sorted({f for f in folders if f is not None})
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index.get(f, -1) for f in folders], dtype=np.int64)
    records = GeoRecords(
        ids=ids,
        paths=paths,
        lonlat=np.asarray(lonlat, dtype=np.float64).reshape(-1, 2),
        labels=labels,
        class_names=class_names,
        dates=dates if any(d is not None for d in dates) else None,
        dropped={reason: n for reason, n in dropped.items() if n},
    )
    return records, skipped
