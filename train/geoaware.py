"""Geo-aware classification: the captive-places layer and the benchmark.

``python -m train build-captive`` runs the cleaning rules of :mod:`csp.cleaning` on the species
observations the default build uses and writes the zoo rule's places to
``<model dir>/captive_places.csv`` (see :mod:`csp.captive`).

``python -m train experiment geoaware`` is the benchmark of :mod:`csp.fusion` and
:mod:`csp.captive` (see :func:`run_geoaware` for the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csp.captive import CAPTIVE_FILE, CaptivePlace, find_captive_places, write_captive_places
from csp.cleaning import CleaningConfig, CleaningReport, clean_occurrences, load_countries, load_native_ranges
from csp.datasets import GeoRecords, read_csv
from train.config import DataConfig


@dataclass
class Cleaned:
    """All labelled observations and the cleaning verdict on them (before any split)."""

    records: GeoRecords
    names: np.ndarray  # (N,) species name of each record
    report: CleaningReport
    config: CleaningConfig


def clean_all(data: DataConfig) -> Cleaned:
    """Read ``data.csv`` and run the cleaning rules exactly as :func:`train.data.load_species`."""
    records = read_csv(data.csv)
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{data.csv}: no label column found (expected label/species/class)")
    records = records.subset(np.flatnonzero(records.labels >= 0))
    names = np.asarray(records.class_names, dtype=object)[records.labels]
    ranges = load_native_ranges(data.native_ranges) if data.native_ranges else None
    countries = load_countries(data.countries) if ranges is not None else None
    config = CleaningConfig()
    report = clean_occurrences(records.lonlat, names, config, ranges, countries)
    return Cleaned(records, names, report, config)


def captive_places(cleaned: Cleaned) -> list[CaptivePlace]:
    """The zoo rule's places in ``cleaned`` (see :func:`csp.captive.find_captive_places`)."""
    zoo = next(rule for rule in cleaned.report.rules if rule.rule == "zoo")
    c = cleaned.config
    rule = f"zoo(place_km={c.place_km:g},zoo_min_species={c.zoo_min_species},zoo_far_km={c.zoo_far_km:g})"
    return find_captive_places(cleaned.records.lonlat, cleaned.names, zoo.drop, c.place_km, rule)


def build_captive(out: str | Path = "assets/default", data: DataConfig | None = None) -> str:
    """Write ``<out>/captive_places.csv``; returns a one-line summary."""
    places = captive_places(clean_all(data or DataConfig()))
    path = Path(out) / CAPTIVE_FILE
    write_captive_places(places, path)
    records = sum(p.n_records for p in places)
    return f"{path}: {len(places)} captive places ({records} records dropped by the zoo rule)"
