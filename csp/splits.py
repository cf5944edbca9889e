"""Leak-free train / validation / test splits of presence-only observations.

Species photos cluster at the same spots (the same pond photographed on many days). Split by
observation, a quarter of the held-out points sit at exactly the coordinates of a training
point of the same species, and the metric rewards memorising spots. The protocol here
(spatial buffering in the sense of Roberts et al. 2017, Ecography) guarantees instead:

    no validation or test observation lies within ``buffer_km`` (10 km by default) of a
    training observation of the same species.

Method, per species:

1. **Single-linkage clustering** at ``buffer_km`` on great-circle distance: two observations
   are in the same cluster when a chain of observations joins them with every link
   ``<= buffer_km`` (the connected components of the "within buffer_km" graph). Observations
   of *different* clusters are therefore more than ``buffer_km`` apart.
2. **Whole clusters are assigned** to train, validation or test, so the guarantee above holds.
   Clusters are visited in a seeded random order; a cluster goes to test while that brings the
   species' test count closer to ``round(n * test_fraction)`` (the nearest count, so a cluster
   may overshoot by less than half its size), then to validation the same way, else to
   train. If no cluster ended up in train, the last visited one is moved there: every species
   keeps at least one training observation, and a species with a single cluster is train-only.

The split is deterministic given the data and the seed (NumPy ``default_rng(seed)``, species
visited in label order). Other species' observations may lie anywhere: the guarantee is per
species, which is what a per-species prior can memorise.
"""

from __future__ import annotations

import numpy as np

from csp.geo import haversine_km, km_to_radians, unit_vectors

DEFAULT_BUFFER_KM = 10.0
"""Minimum distance between a held-out observation and a same-species training observation."""

SPLIT_NAMES = ("train", "val", "test")


def _pairs_within(xyz: np.ndarray, cos_limit: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of unit vectors ``(n, 3)`` whose dot is ``>= cos_limit``.

    Blocked over rows, so memory stays ``O(block * n)``.
    """
    rows, cols = [], []
    for start in range(0, len(xyz), block):
        dots = xyz[start : start + block] @ xyz.T
        i, j = np.nonzero(dots >= cos_limit)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def spatial_clusters(lonlat: np.ndarray, buffer_km: float = DEFAULT_BUFFER_KM) -> np.ndarray:
    """Single-linkage clusters at ``buffer_km``: ``(n, 2)`` (lon, lat) degrees -> ``(n,)`` int64.

    Cluster ids are the smallest member index of each cluster, so they are deterministic.
    Two points share a cluster iff a chain of points links them with great-circle steps of at
    most ``buffer_km``. Cost ``O(n^2)`` time, ``O(n)`` memory per block of rows.
    """
    if buffer_km <= 0:
        raise ValueError(f"buffer_km must be positive, got {buffer_km}")
    n = len(lonlat)
    labels = np.arange(n, dtype=np.int64)
    if n < 2:
        return labels
    xyz = unit_vectors(lonlat)
    i, j = _pairs_within(xyz, np.cos(km_to_radians(buffer_km)))
    # Label propagation: every point takes the smallest label among its neighbours until stable
    # (converges in at most "cluster diameter in links" passes).
    while len(i):
        smaller = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, i, smaller)
        np.minimum.at(new, j, smaller)
        new = new[new]  # pointer jumping: follow labels to their own label
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _assign_clusters(sizes: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) for clusters of ``sizes``, already in visiting order."""
    n = int(sizes.sum())
    targets = {2: round(n * test_fraction), 1: round(n * val_fraction)}
    counts = {1: 0, 2: 0}
    assigned = np.zeros(len(sizes), dtype=np.int64)
    for k, size in enumerate(sizes):
        for split in (2, 1):
            # Nearer to the target with the cluster than without it.
            if abs(counts[split] + size - targets[split]) < abs(counts[split] - targets[split]):
                assigned[k] = split
                counts[split] += int(size)
                break
    if not (assigned == 0).any():
        assigned[-1] = 0
    return assigned


def leak_free_split(
    lonlat: np.ndarray,
    labels: np.ndarray,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    buffer_km: float = DEFAULT_BUFFER_KM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded spatially buffered split (see the module docstring).

    Args:
        lonlat: ``(N, 2)`` observation locations, (lon, lat) degrees.
        labels: ``(N,)`` int class labels.
        val_fraction, test_fraction: target share of each species' observations.
        seed: seeds the cluster visiting order.
        buffer_km: clustering distance, i.e. the guaranteed minimum distance between a
            held-out observation and any training observation of its species.

    Returns:
        sorted int64 index arrays ``(train, val, test)``.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
    lonlat = np.asarray(lonlat, dtype=np.float64)
    labels = np.asarray(labels)
    if lonlat.shape != (len(labels), 2):
        raise ValueError(f"lonlat must be ({len(labels)}, 2), got {lonlat.shape}")
    rng = np.random.default_rng(seed)
    split_of = np.zeros(len(labels), dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    boundaries = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, boundaries):
        clusters = spatial_clusters(lonlat[members], buffer_km)
        ids, inverse, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
        visit = rng.permutation(len(ids))
        assigned = np.empty(len(ids), dtype=np.int64)
        assigned[visit] = _assign_clusters(sizes[visit], val_fraction, test_fraction)
        split_of[members] = assigned[inverse]
    return tuple(np.flatnonzero(split_of == k).astype(np.int64) for k in range(3))


def min_distance_to_train_km(
    lonlat: np.ndarray, labels: np.ndarray, train: np.ndarray, held_out: np.ndarray
) -> np.ndarray:
    """For each ``held_out`` index, the great-circle distance (km) to the nearest training
    observation of the same species (``inf`` if the species has none): ``(len(held_out),)``.

    The check behind the protocol's guarantee (tests and the shipped ``split.csv``).
    """
    lonlat = np.asarray(lonlat, dtype=np.float64)
    out = np.full(len(held_out), np.inf)
    train_labels = labels[train]
    for k, index in enumerate(held_out):
        same = train[train_labels == labels[index]]
        if len(same):
            out[k] = haversine_km(lonlat[index], lonlat[same]).min()
    return out
