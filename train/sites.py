"""Presence-absence sites: reading them and scoring a range model at them (per-species AUC).

A sites file is a CSV/TSV with (lon, lat) columns (recognised as in
:mod:`csp.datasets.tabular`) in one of two layouts:

- long: one row per (site, species) with a label column and a presence column
  (``presence``, ``present``, ``pa``, ``occurrence``, ``occurrenceStatus``; cells ``1``/``0``,
  ``present``/``absent``, ``true``/``false``). Rows at the same coordinates (rounded to 1e-6
  degrees) are one site; a species not listed at a site is "not surveyed" there (NaN).
- wide: one row per site, one 0/1 column per species, the column named like the species
  (only columns named like one of ``class_names`` are read).

AUC is the Mann-Whitney statistic: the probability that a random presence site scores
higher than a random absence site, ties counting one half.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from csp.datasets import read_csv
from csp.datasets.tabular import AUTO, sniff_delimiter
from csp.models import LocationEncoder

PRESENCE_COLUMNS = ("presence", "present", "pa", "occurrence", "occurrencestatus")
_TRUE = {"1", "1.0", "present", "presence", "true", "yes", "y"}
_FALSE = {"0", "0.0", "absent", "absence", "false", "no", "n"}
COORDINATE_DECIMALS = 6  # rows of a long-format file this close are one site


@dataclass(frozen=True)
class Sites:
    """Presence-absence data at ``S`` sites for ``K`` species.

    Attributes:
        lonlat: ``(S, 2)`` (lon, lat) degrees.
        species: the ``K`` species names (columns of ``presence``).
        presence: ``(S, K)`` float, 1 = present, 0 = absent, NaN = not surveyed.
        source: the file they were read from.
    """

    lonlat: np.ndarray
    species: list[str]
    presence: np.ndarray
    source: str


def _flag(value: str, path: Path, line: int, column: str) -> float:
    text = value.strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    if not text:
        return float("nan")
    raise ValueError(f"{path}: line {line}, column {column!r}: {value!r} is not 0/1 or present/absent")


def _header(path: Path, delimiter: str) -> tuple[list[str], str]:
    with path.open(encoding="utf-8-sig") as handle:
        first = handle.readline()
    delimiter = sniff_delimiter(first) if delimiter == AUTO else delimiter
    return [h.strip() for h in first.rstrip("\r\n").split(delimiter)], delimiter


def presence_column(header: list[str]) -> str | None:
    """The header's presence column (long layout), if any."""
    found = [h for h in header if h.lower() in PRESENCE_COLUMNS]
    if len(found) > 1:
        raise ValueError(f"columns {found} all look like the presence flag; keep one")
    return found[0] if found else None


def is_sites_file(path: str | Path, class_names: list[str], delimiter: str = AUTO) -> bool:
    """Whether ``path`` holds presence-absence sites (a presence column, or species columns)."""
    header, _ = _header(Path(path), delimiter)
    return presence_column(header) is not None or bool(set(header) & set(class_names))


def read_sites(
    path: str | Path,
    class_names: list[str] | None = None,
    *,
    lon_col: str = AUTO,
    lat_col: str = AUTO,
    label_col: str = AUTO,
    delimiter: str = AUTO,
) -> Sites:
    """Read a presence-absence file in the long or wide layout (module docstring).

    ``class_names`` (the model's species) select the columns of a wide file and are needed
    for it; species of a long file are kept whatever they are (callers match them).

    Raises:
        ValueError: naming file, line and column for a bad cell; no species columns found.
    """
    path = Path(path)
    header, delimiter = _header(path, delimiter)
    flag_column = presence_column(header)
    if flag_column is not None:
        return _read_long(path, flag_column, lon_col, lat_col, label_col, delimiter)
    columns = [h for h in header if class_names is not None and h in class_names]
    if not columns:
        raise ValueError(
            f"{path}: no presence column ({list(PRESENCE_COLUMNS)}) and no column named like a "
            "species of the model: not a presence-absence file"
        )
    records = read_csv(
        path, lon_col=lon_col, lat_col=lat_col, label_col=None, id_col=None, delimiter=delimiter
    )
    table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, usecols=columns)
    rows = np.array([int(i) for i in records.ids])  # data row numbers (id_col=None)
    cells = table[columns].to_numpy()[rows]
    presence = np.array(
        [[_flag(cells[i, k], path, r + 2, c) for k, c in enumerate(columns)] for i, r in enumerate(rows)],
        dtype=np.float64,
    ).reshape(len(rows), len(columns))
    return Sites(records.lonlat, columns, presence, str(path))


def _read_long(
    path: Path, flag_column: str, lon_col: str, lat_col: str, label_col: str, delimiter: str
) -> Sites:
    records = read_csv(
        path, lon_col=lon_col, lat_col=lat_col, label_col=label_col, id_col=None, delimiter=delimiter
    )
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{path}: a long presence-absence file needs a species (label) column")
    table = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, usecols=[flag_column])
    rows = np.array([int(i) for i in records.ids])
    flags = np.array([_flag(table[flag_column].iloc[r], path, r + 2, flag_column) for r in rows])
    keys = pd.MultiIndex.from_arrays(np.round(records.lonlat, COORDINATE_DECIMALS).T)
    site_codes, site_keys = pd.factorize(keys)
    presence = np.full((len(site_keys), len(records.class_names)), np.nan)
    labelled = records.labels >= 0
    presence[site_codes[labelled], records.labels[labelled]] = flags[labelled]
    first = pd.Series(np.arange(len(site_codes))).groupby(site_codes).first().to_numpy()
    return Sites(records.lonlat[first], list(records.class_names), presence, str(path))


@torch.no_grad()
def presence_scores(
    model: LocationEncoder, lonlat: np.ndarray, classes: np.ndarray | None = None, batch: int = 65536
) -> np.ndarray:
    """Per-species presence scores ``sigmoid(logit)`` in [0, 1], ``(N, K)`` float32, at
    ``lonlat (N, 2)`` degrees for the class indices ``classes (K,)`` (all when None). The model
    is scored in eval mode and put back in the mode it was in."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pick = None if classes is None else torch.as_tensor(classes, dtype=torch.long, device=device)
    out = []
    for start in range(0, len(lonlat), batch):
        where = torch.as_tensor(lonlat[start : start + batch], dtype=torch.float32, device=device)
        logits = model.class_logits(where)
        out.append(torch.sigmoid(logits if pick is None else logits[:, pick]).float().cpu())
    model.train(was_training)
    width = model.num_classes if classes is None else len(classes)
    return torch.cat(out).numpy() if out else np.zeros((0, width), dtype=np.float32)


def auc(scores: np.ndarray, presence: np.ndarray) -> float:
    """ROC AUC of ``scores (S,)`` against ``presence (S,)`` (1/0; NaN rows skipped); NaN when
    one of the two classes is missing."""
    keep = ~np.isnan(presence)
    scores, presence = scores[keep], presence[keep] > 0.5
    n_pos, n_neg = int(presence.sum()), int((~presence).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[presence].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_species_auc(scores: np.ndarray, sites: Sites) -> dict[str, float]:
    """``scores (S, K)`` for ``sites.species`` -> AUC per species (NaN without both classes)."""
    return {name: auc(scores[:, k], sites.presence[:, k]) for k, name in enumerate(sites.species)}


def mean_auc(per_species: dict[str, float]) -> float:
    """Mean over the species with a defined AUC (NaN if none)."""
    values = [v for v in per_species.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def match_species(sites: Sites, class_names: list[str]) -> tuple[Sites, np.ndarray]:
    """``sites`` restricted to species the model knows, and their class indices ``(K',)``.

    Raises:
        ValueError: none of the species is a class of the model.
    """
    index = {name: i for i, name in enumerate(class_names)}
    known = [k for k, name in enumerate(sites.species) if name in index]
    if not known:
        raise ValueError(
            f"{sites.source}: none of its {len(sites.species)} species is a class of the model "
            f"(e.g. {sites.species[:3]} vs {class_names[:3]})"
        )
    restricted = Sites(
        sites.lonlat, [sites.species[k] for k in known], sites.presence[:, known], sites.source
    )
    return restricted, np.array([index[sites.species[k]] for k in known], dtype=np.int64)


KDE_SITE_BANDWIDTHS_KM = (2.0, 5.0)
"""Bandwidths tried for the KDE baseline besides ``csp.baselines.KDE_BANDWIDTHS_KM`` (a
region a few degrees wide needs kernels narrower than 10 km)."""


@dataclass(frozen=True)
class SiteEvaluation:
    """Per-species AUC of a model and of the KDE baseline at the same presence-absence sites.

    Attributes:
        rows: one dict per species (``species``, ``presences``, ``absences``, ``model_auc``,
            ``kde_auc``), NaN AUC where a species lacks presences or absences there.
        kde_bandwidth_km: the KDE bandwidth, chosen on the run's validation data.
        kde_selected_by: how it was chosen (validation MRR or AUC).
        sites: the number of sites.
    """

    rows: list[dict[str, float | int | str]]
    kde_bandwidth_km: float
    kde_selected_by: str
    sites: int

    def means(self) -> dict[str, float]:
        """Mean AUC over the species where both are defined (the same species for both)."""
        both = [r for r in self.rows if not (np.isnan(r["model_auc"]) or np.isnan(r["kde_auc"]))]
        return {
            "species": len(both),
            "model_auc": float(np.mean([r["model_auc"] for r in both])) if both else float("nan"),
            "kde_auc": float(np.mean([r["kde_auc"] for r in both])) if both else float("nan"),
        }

    def table(self) -> str:
        """A plain-text table, species then the mean."""
        lines = [f"{'species':<32} {'pres':>5} {'abs':>5} {'model':>7} {'KDE':>7}"]
        for r in self.rows:
            lines.append(
                f"{str(r['species'])[:32]:<32} {r['presences']:>5} {r['absences']:>5} "
                f"{r['model_auc']:>7.3f} {r['kde_auc']:>7.3f}"
            )
        m = self.means()
        lines.append(
            f"{'mean (' + str(m['species']) + ' species)':<44} {m['model_auc']:>7.3f} {m['kde_auc']:>7.3f}"
        )
        lines.append(
            f"{self.sites} sites; KDE bandwidth {self.kde_bandwidth_km:g} km chosen by {self.kde_selected_by}"
        )
        return "\n".join(lines)


def evaluate_presence_absence(checkpoint: str | Path, sites_path: str | Path | None = None) -> SiteEvaluation:
    """Per-species AUC at presence-absence sites: the model vs the spherical KDE baseline.

    The KDE is fitted on the run's training split (its config is read from the checkpoint, so
    the data, cleaning and split are the same) with the bandwidth chosen on its validation data
    (AUC at validation sites if the run had them, else MRR of validation presences), never on
    the sites scored here. ``sites_path`` defaults to the run's own ``--test`` sites file.

    Raises:
        ValueError: no sites file, or none of its species is a class of the model.
    """
    from csp.baselines import KDE_BANDWIDTHS_KM, SphericalKDE, select_on_validation
    from csp.checkpoint import read_meta
    from train.config import DataConfig
    from train.data import load_species
    from train.predict import load_model

    model = load_model(checkpoint)
    data = DataConfig(**dict(read_meta(model.source).train.get("config", {}).get("data", {})))
    splits = load_species(data)
    if splits.class_names != model.class_names:
        raise ValueError(
            f"{checkpoint}: its training data no longer gives its {len(model.class_names)} classes"
        )
    if sites_path is None:
        if splits.test_sites is None:
            raise ValueError("give --presence-absence FILE (the run has no presence-absence test sites)")
        sites, classes = splits.test_sites
    else:
        sites, classes = match_species(read_sites(sites_path, model.class_names), model.class_names)
    records = splits.records
    train = splits.train

    def make(bandwidth: float) -> SphericalKDE:
        return SphericalKDE(records.lonlat[train], records.labels[train], len(model.class_names), bandwidth)

    candidates = sorted({*KDE_SITE_BANDWIDTHS_KM, *KDE_BANDWIDTHS_KM})
    if splits.val_sites is not None:
        val_sites, val_classes = splits.val_sites
        tried = {
            h: mean_auc(per_species_auc(_kde_scores(make(h), val_sites.lonlat, val_classes), val_sites))
            for h in candidates
        }
        bandwidth, selected_by = max(tried, key=lambda h: tried[h]), "validation-site AUC"
    elif len(splits.val):
        val = splits.val
        bandwidth = select_on_validation(make, candidates, records.lonlat[val], records.labels[val]).value
        selected_by = "validation MRR"
    else:
        raise ValueError(f"{checkpoint}: the run has no validation data to choose the KDE bandwidth on")
    model_auc = per_species_auc(presence_scores(model.encoder, sites.lonlat, classes), sites)
    kde_auc = per_species_auc(_kde_scores(make(bandwidth), sites.lonlat, classes), sites)
    rows = [
        {
            "species": name,
            "presences": int((sites.presence[:, k] == 1).sum()),
            "absences": int((sites.presence[:, k] == 0).sum()),
            "model_auc": model_auc[name],
            "kde_auc": kde_auc[name],
        }
        for k, name in enumerate(sites.species)
    ]
    return SiteEvaluation(rows, bandwidth, selected_by, len(sites.lonlat))


def _kde_scores(kde, lonlat: np.ndarray, classes: np.ndarray, block: int = 4096) -> np.ndarray:
    """The KDE's per-species log density ``(S, K)`` at ``lonlat`` for ``classes``."""
    parts = [
        kde.log_density(torch.as_tensor(lonlat[i : i + block]))[:, torch.as_tensor(classes)].cpu().numpy()
        for i in range(0, len(lonlat), block)
    ]
    return np.concatenate(parts)
