"""Training data: presence-only splits with few-shot label fractions, and pre-training pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from csp.datasets import GeoRecords, read_csv, read_precomputed
from csp.datasets.reference import read_reference_split
from csp.features import FeatureStore, RowFile
from csp.geo import haversine_km
from csp.splits import leak_free_split
from train.config import DataConfig, PretrainConfig
from train.sites import Sites, is_sites_file, match_species, read_sites

HELD_OUT_RADIUS_KM = 1.0  # pre-training pairs this close to a val/test observation are left out


@dataclass
class SpeciesSplits:
    """A fixed split of labelled observations (indices into ``records``) and its provenance."""

    records: GeoRecords
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    cleaning: dict[str, int]
    val_sites: tuple[Sites, np.ndarray] | None = None  # presence-absence sites, class indices
    test_sites: tuple[Sites, np.ndarray] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.records.class_names or [])

    def summary(self) -> dict[str, int]:
        sites = {
            f"{role}_sites": len(found[0].lonlat)
            for role, found in (("val", self.val_sites), ("test", self.test_sites))
            if found is not None
        }
        return {
            "observations": len(self.records),
            "classes": len(self.class_names),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            **sites,
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


def read_occurrences(config: DataConfig, path: str | Path) -> GeoRecords:
    """Read an occurrence file with the config's columns and separator; with any cleaning,
    rows with invalid coordinates are dropped and counted instead of raising. A ``.json``
    path is the CSP reference code's split file (:func:`csp.datasets.reference.read_reference_split`)."""
    if str(path).endswith(".json"):
        return read_reference_split(path)
    return read_csv(
        path,
        lon_col=config.lon_col,
        lat_col=config.lat_col,
        label_col=config.label_col,
        date_col=config.date_col,
        delimiter=config.delimiter,
        invalid="raise" if config.cleaning == "none" else "drop",
    )


def clean_records(records: GeoRecords, config: DataConfig) -> tuple[GeoRecords, dict[str, int]]:
    """Apply the config's cleaning level to labelled records; returns the kept records and
    the count each rule dropped (a record can count for several rules; reading counts too).

    ``basic``: :func:`csp.cleaning.basic_cleaning` (with the country polygons if the file
    exists). ``full``: basic, then the statistical rules (the zoo rule only where the data
    spread allows a far place, :func:`csp.cleaning.zoo_rule_applies`) and the expert ranges
    of ``native_ranges``. ``inat``: the bundled species data's rules, exactly as they were
    (zoo, range outlier, expert range; no duplicate rule, so its split is unchanged).
    """
    from csp.cleaning import (
        RULES,
        basic_cleaning,
        clean_occurrences,
        load_countries,
        load_native_ranges,
        zoo_rule_applies,
    )

    level = config.cleaning
    dropped = dict(records.dropped)
    has_countries = bool(config.countries) and Path(config.countries).is_file()
    if level in ("basic", "full"):
        countries = load_countries(config.countries) if has_countries else None
        report = basic_cleaning(records.lonlat, _names(records), records.dates, countries)
        dropped |= report.dropped_per_rule
        records = records.subset(np.flatnonzero(report.keep))
    if level in ("full", "inat"):
        ranges = load_native_ranges(config.native_ranges) if config.native_ranges else None
        countries = load_countries(config.countries) if ranges is not None else None
        fits = level == "inat" or zoo_rule_applies(records.lonlat)
        rules = RULES if fits else tuple(r for r in RULES if r != "zoo")
        report = clean_occurrences(records.lonlat, _names(records), None, ranges, countries, rules=rules)
        dropped |= report.dropped_per_rule
        records = records.subset(np.flatnonzero(report.keep))
    return records, dropped


def _names(records: GeoRecords) -> np.ndarray:
    return np.asarray(records.class_names, dtype=object)[records.labels]


def _labelled(records: GeoRecords, path: str | Path) -> GeoRecords:
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{path}: no label column found (name it with --label-col / data.label_col)")
    return records.subset(np.flatnonzero(records.labels >= 0))


def load_species(config: DataConfig) -> SpeciesSplits:
    """Read, clean and split presence-only observations (labels required).

    Validation and test data come from ``config.val_csv`` / ``config.test_csv`` when given
    (presences of known species, appended to ``records``; or presence-absence sites, in
    ``val_sites`` / ``test_sites``), else from the seeded split of the observations.
    """
    records, cleaning = clean_records(_labelled(read_occurrences(config, config.csv), config.csv), config)
    records = _compact_classes(records)
    train, val, test = _split(records, config)
    parts = {"val": val, "test": test}
    sites: dict[str, tuple[Sites, np.ndarray]] = {}
    for role in ("val", "test"):
        path = getattr(config, f"{role}_csv")
        if not path:
            continue
        if is_sites_file(path, records.class_names, config.delimiter):
            found = read_sites(
                path, records.class_names, lon_col=config.lon_col, lat_col=config.lat_col,
                label_col=config.label_col, delimiter=config.delimiter,
            )  # fmt: skip
            sites[role] = match_species(found, records.class_names)
            continue
        extra, dropped = _own_presences(config, path, records.class_names)
        cleaning |= {f"{role}_{k}": v for k, v in dropped.items()}
        parts[role] = np.arange(len(records), len(records) + len(extra))
        records = _concat(records, extra)
    return SpeciesSplits(
        records, train, parts["val"], parts["test"], cleaning, sites.get("val"), sites.get("test")
    )


def _split(records: GeoRecords, config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The config's split of ``records``; no held-out share for a role that has its own file."""
    val_fraction = 0.0 if config.val_csv else config.val_fraction
    test_fraction = 0.0 if config.test_csv else config.test_fraction
    if config.split == "spatial":
        return leak_free_split(
            records.lonlat,
            records.labels,
            val_fraction,
            test_fraction,
            config.split_seed,
            config.split_buffer_km,
        )
    if config.split == "observation":
        return split_by_class(records.labels, val_fraction, test_fraction, config.split_seed)
    raise ValueError(f"data.split must be 'spatial' or 'observation', got {config.split!r}")


def _own_presences(
    config: DataConfig, path: str, class_names: list[str]
) -> tuple[GeoRecords, dict[str, int]]:
    """Presences from a validation/test file, cleaned like the training data, labelled with
    the training classes (records of other species are dropped and counted)."""
    records, dropped = clean_records(_labelled(read_occurrences(config, path), path), config)
    index = {name: i for i, name in enumerate(class_names)}
    names = _names(records)
    known = np.array([name in index for name in names], dtype=bool)
    dropped["unknown_species"] = int((~known).sum())
    if not known.any():
        raise ValueError(f"{path}: none of its species is among the {len(class_names)} training species")
    records = records.subset(np.flatnonzero(known))
    labels = np.array([index[name] for name in names[known]], dtype=np.int64)
    return GeoRecords(
        ids=records.ids, paths=records.paths, lonlat=records.lonlat, labels=labels,
        class_names=list(class_names), dates=records.dates, dropped={},
    ), dropped  # fmt: skip


def _concat(a: GeoRecords, b: GeoRecords) -> GeoRecords:
    """Records of ``a`` then ``b`` (same class names)."""
    dates = None
    if a.dates is not None or b.dates is not None:
        dates = (a.dates or [None] * len(a)) + (b.dates or [None] * len(b))
    return GeoRecords(
        ids=list(a.ids) + list(b.ids),
        paths=list(a.paths) + list(b.paths),
        lonlat=np.concatenate([a.lonlat, b.lonlat]),
        labels=np.concatenate([a.labels, b.labels]),
        class_names=a.class_names,
        dates=dates,
        dropped=a.dropped,
    )


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


def pairs_away_from_held_out(config: PretrainConfig, splits: SpeciesSplits) -> tuple[torch.Tensor, int]:
    """The rows of the config's pre-training pairs farther than ``HELD_OUT_RADIUS_KM`` from
    every validation and test observation (photo-location sets and species photos can share
    places), as ``(n,)`` int64 indices for :func:`train.pretrain.run_pretrain`'s ``rows``
    (only the locations are read here), and how many pairs were left out."""
    lonlat, _ = load_pairs(config)
    held_out = splits.records.lonlat[np.concatenate([splits.val, splits.test])]
    keep = torch.from_numpy(far_from(lonlat.numpy(), held_out, HELD_OUT_RADIUS_KM))
    return keep.nonzero().squeeze(1), int((~keep).sum())
