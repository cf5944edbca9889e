"""``python -m train predict``: a trained range model's scores at your points, embeddings, GeoTIFF maps.

Scores are per-species presence scores ``sigmoid(logit)`` in [0, 1] of the location prior
(the model's class head), as :func:`train.sites.presence_scores` computes them: each species on
its own, not normalised across species. The model is given as a run directory, a checkpoint
directory or a model directory (:func:`csp.hub.resolve_model_path`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from csp.checkpoint import CheckpointError, load_checkpoint
from csp.datasets import read_csv
from csp.datasets.tabular import AUTO, sniff_delimiter
from csp.models import LocationEncoder, LocationImageEncoder
from train.sites import presence_scores

MAX_RASTER_CELLS = 50_000_000  # cells x bands of one GeoTIFF (200 MB of float32)
MAX_DEFAULT_BANDS = 16  # above this many classes a raster needs --classes


@dataclass(frozen=True)
class LoadedModel:
    """A location model read for prediction.

    Attributes:
        encoder: the location encoder (the prior, or a pre-trained CSP model's encoder).
        class_names: its classes (empty without a class head).
        source: the checkpoint directory it was read from.
    """

    encoder: LocationEncoder
    class_names: list[str]
    source: Path


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """The location model of a run, checkpoint or model directory (its prior if it has one)."""
    from csp.hub import resolve_model_path
    from csp.predictor import PRIOR_DIR

    directory = resolve_model_path(path)
    if (directory / PRIOR_DIR).is_dir():
        directory = directory / PRIOR_DIR
    model, meta = load_checkpoint(directory, map_location=device)
    encoder = model.location_encoder if isinstance(model, LocationImageEncoder) else model
    return LoadedModel(encoder, list(meta.class_names or []), directory)


def class_indices(model: LoadedModel, classes: Sequence[str] | None) -> np.ndarray:
    """Indices of ``classes`` (all when None) in the model's class list.

    Raises:
        ValueError: the model has no class head, or a name is not one of its classes.
    """
    if not model.class_names or model.encoder.class_emb is None:
        raise ValueError(f"{model.source} has no class head: it gives embeddings, not species scores")
    if classes is None:
        return np.arange(len(model.class_names))
    index = {name: i for i, name in enumerate(model.class_names)}
    unknown = [name for name in classes if name not in index]
    if unknown:
        raise ValueError(
            f"not classes of {model.source}: {unknown[:5]} ({len(model.class_names)} classes, "
            f"e.g. {model.class_names[:3]})"
        )
    return np.array([index[name] for name in classes], dtype=np.int64)


@dataclass(frozen=True)
class Points:
    """Input points and the table they came from.

    Attributes:
        table: every row and column of the file, as text, in file order.
        lonlat: ``(N, 2)`` degrees of the rows that have coordinates.
        rows: ``(N,)`` their positions in ``table``.
    """

    table: pd.DataFrame
    lonlat: np.ndarray
    rows: np.ndarray


def read_points(path: str | Path, lon_col: str = AUTO, lat_col: str = AUTO, delimiter: str = AUTO) -> Points:
    """Read a points file (CSV/TSV), keeping all its columns; rows without coordinates are kept
    in the table (their scores are left empty), a bad coordinate is an error naming the line."""
    path = Path(path)
    records = read_csv(
        path, lon_col=lon_col, lat_col=lat_col, label_col=None, id_col=None, path_col=None, date_col=None,
        delimiter=delimiter,
    )  # fmt: skip
    with path.open(encoding="utf-8-sig") as handle:
        separator = sniff_delimiter(handle.readline()) if delimiter == AUTO else delimiter
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    table = pd.read_csv(
        path, sep=separator, dtype=str, keep_default_na=False, quoting=quoting, encoding="utf-8-sig"
    )
    rows = np.array([int(i) for i in records.ids], dtype=np.int64)  # data row numbers (id_col=None)
    return Points(table, records.lonlat, rows)


def score_points(model: LoadedModel, points: Points, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """The points' table plus one score column per class (empty where a row has no location).

    Raises:
        ValueError: a class column would replace one of the file's columns.
    """
    chosen = class_indices(model, classes)
    names = [model.class_names[i] for i in chosen]
    clash = sorted(set(names) & set(points.table.columns))
    if clash:
        raise ValueError(f"the points file already has column(s) {clash[:5]}; rename them first")
    scores = np.full((len(points.table), len(chosen)), np.nan, dtype=np.float32)
    scores[points.rows] = presence_scores(model.encoder, points.lonlat, chosen)
    return pd.concat([points.table, pd.DataFrame(scores, columns=names, index=points.table.index)], axis=1)


@torch.no_grad()
def embed_points(model: LoadedModel, points: Points, batch: int = 65536) -> np.ndarray:
    """``(rows of the table, E)`` float32 location embeddings (NaN rows without a location)."""
    encoder = model.encoder.eval()
    device = next(encoder.parameters()).device
    out = np.full((len(points.table), encoder.embed_dim), np.nan, dtype=np.float32)
    chunks = [
        encoder.embed(torch.as_tensor(points.lonlat[i : i + batch], dtype=torch.float32, device=device))
        for i in range(0, len(points.lonlat), batch)
    ]
    out[points.rows] = torch.cat(chunks).float().cpu().numpy()
    return out


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"W,S,E,N"`` degrees -> a tuple (W < E, S < N, inside [-180, 180] x [-90, 90])."""
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--bbox expects W,S,E,N in degrees, got {text!r}") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"--bbox {text!r}: need -180 <= W < E <= 180 and -90 <= S < N <= 90")
    return west, south, east, north


def write_raster(
    model: LoadedModel,
    out: str | Path,
    bbox: tuple[float, float, float, float],
    resolution: float,
    classes: Sequence[str] | None = None,
) -> Path:
    """A GeoTIFF of presence scores on a lon/lat grid (EPSG:4326), one float32 band per class
    (band description = class name), cells of ``resolution`` degrees from the bbox's
    north-west corner, scored at cell centres. Returns the file written.

    Raises:
        ValueError: a bad resolution, too many cells x bands, or too many classes without
            ``classes``.
    """
    import rasterio
    from rasterio.transform import Affine

    if not resolution > 0:
        raise ValueError(f"--resolution must be > 0 degrees, got {resolution}")
    chosen = class_indices(model, classes)
    if classes is None and len(chosen) > MAX_DEFAULT_BANDS:
        raise ValueError(f"the model has {len(chosen)} classes: choose the bands with --classes")
    west, south, east, north = bbox
    width = max(1, round((east - west) / resolution))
    height = max(1, round((north - south) / resolution))
    if width * height * len(chosen) > MAX_RASTER_CELLS:
        raise ValueError(
            f"{width} x {height} cells x {len(chosen)} bands is over {MAX_RASTER_CELLS:,}: "
            "use a coarser --resolution, a smaller --bbox or fewer --classes"
        )
    lon = west + (np.arange(width) + 0.5) * resolution
    lat = north - (np.arange(height) + 0.5) * resolution
    grid = np.stack(np.meshgrid(lon, lat), axis=-1).reshape(-1, 2)
    scores = presence_scores(model.encoder, grid, chosen).astype(np.float32)
    bands = scores.T.reshape(len(chosen), height, width)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": len(chosen),
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": Affine.translation(west, north) @ Affine.scale(resolution, -resolution),
        "compress": "deflate",
    }
    with rasterio.open(out, "w", **profile) as dataset:
        dataset.write(bands)
        for band, k in enumerate(chosen, start=1):
            dataset.set_band_description(band, model.class_names[k])
        dataset.update_tags(source=str(model.source), score="sigmoid presence score in [0, 1]")
    return out


@dataclass(frozen=True)
class PredictRequest:
    """What ``python -m train predict`` was asked to write (see :func:`run_predict`)."""

    checkpoint: str
    points: str | None = None
    out: str | None = None
    embeddings: str | None = None
    raster: str | None = None
    bbox: str | None = None
    resolution: float | None = None
    classes: tuple[str, ...] | None = None
    lon_col: str = AUTO
    lat_col: str = AUTO
    delimiter: str = AUTO


def run_predict(request: PredictRequest) -> list[str]:
    """Write the scores CSV, embeddings .npy and/or GeoTIFF asked for; returns one line each.

    Raises:
        ValueError: nothing to write, or a missing companion option.
    """
    if not (request.out or request.embeddings or request.raster):
        raise ValueError("nothing to write: give --out (scores CSV), --embeddings or --raster")
    if (request.out or request.embeddings) and not request.points:
        raise ValueError("--out and --embeddings need --points FILE")
    if request.raster and (request.bbox is None or request.resolution is None):
        raise ValueError("--raster needs --bbox W,S,E,N and --resolution DEG")
    try:
        model = load_model(request.checkpoint)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    done = []
    if request.points:
        points = read_points(request.points, request.lon_col, request.lat_col, request.delimiter)
        if request.out:
            table = score_points(model, points, request.classes)
            Path(request.out).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(request.out, index=False)
            done.append(
                f"scores: {request.out} ({len(table)} rows, {table.shape[1] - points.table.shape[1]} classes)"
            )
        if request.embeddings:
            vectors = embed_points(model, points)
            np.save(request.embeddings, vectors)
            done.append(f"embeddings: {request.embeddings} {vectors.shape}")
    if request.raster:
        path = write_raster(
            model, request.raster, parse_bbox(request.bbox), request.resolution, request.classes
        )
        done.append(f"raster: {path}")
    return done
