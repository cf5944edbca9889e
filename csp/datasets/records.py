"""The one record type every reader returns: columnar, aligned arrays of N records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from csp.geo import validate_lonlat

MISSING_LATLON = "missing lat/lon"
"""The ``GeoRecords.dropped`` reason for source rows whose location is absent/null."""


@dataclass
class GeoRecords:
    """N located records (photos, observations, feature rows), stored column by column.

    Attributes:
        ids: N unique-per-source record ids, as strings.
        paths: N image paths (``None`` where there is no image file).
        lonlat: ``(N, 2)`` float32, (lon, lat) in degrees.
        labels: ``(N,)`` int64 class indices into ``class_names`` (-1 = unlabeled), or
            ``None`` for an unlabeled source.
        class_names: the names of the label indices, or ``None``.
        dates: N ISO-like date strings (``None`` where unknown), or ``None`` if the source
            has no dates at all.
        features: optional ``(N, D)`` float32 precomputed image features, row-aligned with
            the records (from :func:`~csp.datasets.read_fmow` or
            :func:`~csp.datasets.read_precomputed`).
        dropped: how many source rows the reader left out, by reason (e.g.
            ``{"missing lat/lon": 3}``); empty when nothing was dropped.
    """

    ids: list[str]
    paths: list[str | None]
    lonlat: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    dates: list[str | None] | None = None
    features: np.ndarray | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lonlat = np.asarray(self.lonlat, dtype=np.float32)
        if lonlat.size == 0:
            lonlat = lonlat.reshape(0, 2)
        if lonlat.ndim != 2 or lonlat.shape[1] != 2:
            raise ValueError(f"GeoRecords.lonlat must have shape (N, 2), got {lonlat.shape}")
        self.lonlat = np.ascontiguousarray(lonlat)
        n = len(self.lonlat)
        self.ids = list(self.ids)
        self.paths = list(self.paths)
        for name in ("ids", "paths", "dates"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"GeoRecords.{name} has {len(column)} entries, lonlat has {n}")
        if self.labels is not None:
            self.labels = self._checked_labels(np.asarray(self.labels), n)
        if self.features is not None:
            features = np.asarray(self.features, dtype=np.float32)
            if features.ndim != 2 or len(features) != n:
                raise ValueError(f"GeoRecords.features must have shape ({n}, D), got {features.shape}")
            self.features = features
        validate_lonlat(self.lonlat, source="GeoRecords.lonlat")

    def _checked_labels(self, labels: np.ndarray, n: int) -> np.ndarray:
        if labels.shape != (n,):
            raise ValueError(f"GeoRecords.labels must have shape ({n},), got {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"GeoRecords.labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64, copy=False)
        if labels.size and labels.min() < -1:
            raise ValueError(f"GeoRecords.labels has {labels.min()}; use -1 for unlabeled")
        if self.class_names is not None and labels.size and labels.max() >= len(self.class_names):
            raise ValueError(
                f"GeoRecords.labels has index {labels.max()} but only {len(self.class_names)} class names"
            )
        return labels

    def __len__(self) -> int:
        return len(self.lonlat)

    def subset(self, idx: np.ndarray | list[int] | slice) -> GeoRecords:
        """The records selected by ``idx`` (integer indices, a boolean mask or a slice).

        Every column is selected consistently; ``class_names`` and ``dropped`` are kept.
        """
        rows = np.arange(len(self))[idx]
        if rows.ndim != 1:
            raise ValueError("subset index must select a 1-D set of rows")
        picked = rows.tolist()
        return GeoRecords(
            ids=[self.ids[i] for i in picked],
            paths=[self.paths[i] for i in picked],
            lonlat=self.lonlat[rows],
            labels=None if self.labels is None else self.labels[rows],
            class_names=self.class_names,
            dates=None if self.dates is None else [self.dates[i] for i in picked],
            features=None if self.features is None else self.features[rows],
            dropped=dict(self.dropped),
        )
