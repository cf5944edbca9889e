"""Training data: presence-only splits with few-shot label fractions, and pre-training pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from csp.datasets import GeoRecords, read_csv, read_precomputed
from csp.datasets.reference import read_reference_split
from csp.features import FeatureStore, RowFile
from csp.geo import haversine_km
from csp.splits import leak_free_split
from train.config import DataConfig, PretrainConfig

HELD_OUT_RADIUS_KM = 1.0  # pre-training pairs this close to a val/test observation are left out


@dataclass
class SpeciesSplits:
    """A fixed split of labelled observations (indices into ``records``) and its provenance."""

    records: GeoRecords
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    cleaning: dict[str, int]

    @property
    def class_names(self) -> list[str]:
        return list(self.records.class_names or [])

    def summary(self) -> dict[str, int]:
        return {
            "observations": len(self.records),
            "classes": len(self.class_names),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            **{f"dropped_{k}": v for k, v in self.cleaning.items()},
        }


def split_by_class(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split by observation, stratified by class.

    Within each class the observations are shuffled; ``round(n * test_fraction)`` go to test
    and ``round(n * val_fraction)`` to validation, always leaving at least one for training
    (a class with one observation is train-only). Returns sorted index arrays.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    order = np.argsort(labels, kind="stable")
    boundaries = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, boundaries):
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_test = min(round(n * test_fraction), n - 1)
        n_val = min(round(n * val_fraction), n - 1 - n_test)
        test.append(members[:n_test])
        val.append(members[n_test : n_test + n_val])
        train.append(members[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def label_fraction_subset(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A deterministic, class-stratified subset of ``round(fraction * len(indices))`` indices.

    Each class gets ``floor(fraction * n_c)`` observations; the remaining quota goes to classes
    drawn (seeded) with probability proportional to their fractional parts, so the class mix
    follows the full training set as closely as integers allow.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.sort(indices)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels[indices], return_counts=True)
    exact = counts * fraction
    quota = np.floor(exact).astype(np.int64)
    remaining = round(fraction * len(indices)) - int(quota.sum())
    if remaining > 0:
        weights = exact - quota
        extra = rng.choice(len(classes), size=remaining, replace=False, p=weights / weights.sum())
        quota[extra] += 1
    chosen = []
    for cls, take in zip(classes, quota, strict=True):
        if take:
            members = indices[labels[indices] == cls]
            chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def load_species(config: DataConfig) -> SpeciesSplits:
    """Read, optionally clean, and split presence-only observations (labels required)."""
    records = read_reference_split(config.csv) if config.csv.endswith(".json") else read_csv(config.csv)
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{config.csv}: no label column found (expected label/species/class)")
    labelled = records.labels >= 0
    if not labelled.all():
        records = records.subset(np.flatnonzero(labelled))
    cleaning: dict[str, int] = {}
    if config.clean:
        from csp.cleaning import clean_occurrences, load_countries, load_native_ranges

        names = np.asarray(records.class_names, dtype=object)[records.labels]
        ranges = load_native_ranges(config.native_ranges) if config.native_ranges else None
        countries = load_countries(config.countries) if ranges is not None else None
        report = clean_occurrences(records.lonlat, names, None, ranges, countries)
        cleaning = dict(report.dropped_per_rule)
        records = records.subset(np.flatnonzero(report.keep))
    records = _compact_classes(records)
    if config.split == "spatial":
        train, val, test = leak_free_split(
            records.lonlat,
            records.labels,
            config.val_fraction,
            config.test_fraction,
            config.split_seed,
            config.split_buffer_km,
        )
    elif config.split == "observation":
        train, val, test = split_by_class(
            records.labels, config.val_fraction, config.test_fraction, config.split_seed
        )
    else:
        raise ValueError(f"data.split must be 'spatial' or 'observation', got {config.split!r}")
    return SpeciesSplits(records, train, val, test, cleaning)


def _compact_classes(records: GeoRecords) -> GeoRecords:
    """Drop class names that no record uses any more and renumber labels."""
    used = np.unique(records.labels)
    if len(used) == len(records.class_names):
        return records
    remap = np.full(len(records.class_names), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return GeoRecords(
        ids=records.ids,
        paths=records.paths,
        lonlat=records.lonlat,
        labels=remap[records.labels],
        class_names=[records.class_names[i] for i in used],
        dates=records.dates,
        dropped=records.dropped,
    )


def far_from(points: np.ndarray, others: np.ndarray, km: float, chunk: int = 2048) -> np.ndarray:
    """``(N,)`` bool: which of ``points (N, 2)`` lie more than ``km`` from every one of
    ``others (M, 2)`` (degrees; great-circle distance)."""
    keep = np.ones(len(points), dtype=bool)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        keep[start : start + chunk] = haversine_km(block[:, None, :], others[None, :, :]).min(axis=1) > km
    return keep


def load_pairs(
    config: PretrainConfig, random_access: bool = False
) -> tuple[torch.Tensor, torch.Tensor | RowFile]:
    """Locations ``(N, 2)`` float32 and frozen image features ``(N, F)`` float16 from the config's
    feature store (the store's memory map: nothing is read up front; ``random_access``: see
    :meth:`csp.features.FeatureStore.tensors`), or from a feature ``.npy`` and
    ``config.locations`` (e.g. the CSP reference code's files; read into memory, float32)."""
    if config.features.endswith(".npy"):
        if not config.locations:
            raise ValueError(f"{config.features} is a feature matrix: give its rows' locations (--locations)")
        records = read_precomputed(config.features, config.locations)
        lonlat = torch.from_numpy(records.lonlat.astype(np.float32))
        return lonlat, torch.from_numpy(records.features)  # float32, as the file holds them
    store = FeatureStore.open(config.features)
    encoder_name = store.manifest.get("encoder")
    if encoder_name and encoder_name != config.image_encoder:
        raise ValueError(
            f"{config.features} holds {encoder_name} features, but the config names {config.image_encoder}"
        )
    features, lonlat = store.tensors(random_access)
    return lonlat, features


def pairs_away_from_held_out(
    config: PretrainConfig, splits: SpeciesSplits
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pre-training pairs minus those within ``HELD_OUT_RADIUS_KM`` of a validation or test
    observation (photo-location sets and species photos can share places); also returns how
    many were left out."""
    lonlat, features = load_pairs(config)
    held_out = splits.records.lonlat[np.concatenate([splits.val, splits.test])]
    keep = torch.from_numpy(far_from(lonlat.numpy(), held_out, HELD_OUT_RADIUS_KM))
    return lonlat[keep], features[keep], int((~keep).sum())
