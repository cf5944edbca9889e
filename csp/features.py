"""Sharded, resumable on-disk store of frozen image features.

Layout of a store directory::

    manifest.json                encoder, feature dim, record count, shard size, finished shards
    shard-RRRR-NNNNN.npy         float16 (n, F): features of shard NNNNN, written by rank RRRR
    shard-RRRR-NNNNN.json        that shard's index (id, path, lon, lat, label per feature row)
                                 and its failed records (id, path, reason); written last, so its
                                 presence marks the shard complete
    report-rank-RRRR.json        extraction report of one rank (counts, failed records)
    features.f16, index.csv      after :func:`merge_shards`: raw float16 memmap (N, F) and its
                                 index (id, path, lon, lat, label), rows in record order

Records are split into shards of ``shard_size`` consecutive records; rank ``r`` of
``world_size`` handles shards ``i`` with ``i % world_size == r``. Every file is written to a
temporary name and moved into place with ``os.replace``, so an interrupted run leaves only whole
shards behind and a rerun skips them. Records whose image cannot be read or decoded are skipped
and reported, never fatal. Locations are (lon, lat) in degrees.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from csp._io import write_atomic, write_json_atomic
from csp.image_encoder import ImageEncoder

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MERGED_FEATURES = "features.f16"
MERGED_INDEX = "index.csv"
INDEX_COLUMNS = ("id", "path", "lon", "lat", "label")
_SHARD_NAME = re.compile(r"^shard-(\d{4})-(\d{5})\.json$")
# Errors that mean "this image is unreadable/corrupt": the record is skipped and reported.
# Anything else (a bug, an interrupt) propagates and stops the run; finished shards are kept.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageRecord:
    """One image to encode: ``path`` is a file, or None when an ``image_loader`` makes the image.

    ``lon``/``lat`` are degrees in [-180, 180] x [-90, 90]; ``label`` is optional.
    """

    id: str
    path: str | None
    lon: float
    lat: float
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"record id must be a non-empty string, got {self.id!r}")
        lon, lat = float(self.lon), float(self.lat)
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ValueError(
                f"record {self.id!r}: (lon, lat) = ({self.lon}, {self.lat}) is outside "
                "[-180, 180] x [-90, 90] degrees"
            )
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)


ImageLoader = Callable[[ImageRecord], Image.Image]


def load_image_file(record: ImageRecord) -> Image.Image:
    """Default loader: open ``record.path`` and decode it fully as RGB."""
    if record.path is None:
        raise TypeError(f"record {record.id!r} has no path; pass an image_loader that makes it")
    with Image.open(record.path) as img:
        return img.convert("RGB")


@dataclass
class ExtractionReport:
    """What one :func:`extract_features` call did (one rank)."""

    rank: int
    world_size: int
    num_shards: int
    shards_assigned: list[int]
    shards_written: list[int]
    shards_skipped: list[int]
    items_encoded: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    report_path: str = ""

    @property
    def num_failed(self) -> int:
        return len(self.failed)


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj, indent=1)


def _read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


@contextlib.contextmanager
def _manifest_lock(out_dir: Path) -> Iterator[None]:
    """Serialise manifest read-modify-write between ranks sharing ``out_dir``."""
    with open(out_dir / ".manifest.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _shard_stem(rank: int, shard: int) -> str:
    return f"shard-{rank:04d}-{shard:05d}"


def _completed_shards(out_dir: Path) -> dict[int, Path]:
    """Shard index -> its index JSON, for shards whose .npy and .json are both in place."""
    done: dict[int, Path] = {}
    for path in sorted(out_dir.glob("shard-*-*.json")):
        match = _SHARD_NAME.match(path.name)
        if match and path.with_suffix(".npy").is_file():
            done.setdefault(int(match.group(2)), path)
    return done


def _records_sha256(records: Sequence[ImageRecord]) -> str:
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.id, r.path, r.lon, r.lat, r.label]).encode())
    return digest.hexdigest()


def _run_signature(records: Sequence[ImageRecord], encoder: ImageEncoder, shard_size: int) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "encoder": encoder.name,
        "input_size": list(encoder.input_size),
        "feature_dim": encoder.feature_dim,
        "num_records": len(records),
        "shard_size": shard_size,
        "num_shards": math.ceil(len(records) / shard_size),
        "records_sha256": _records_sha256(records),
    }


def _open_manifest(out_dir: Path, signature: dict) -> None:
    """Create the manifest, or check that an existing one describes the same run."""
    path = out_dir / MANIFEST
    with _manifest_lock(out_dir):
        if not path.is_file():
            _write_json(path, {**signature, "finished_shards": [], "merged": False})
            return
        manifest = _read_json(path)
        differing = [k for k, v in signature.items() if manifest.get(k) != v]
        if differing:
            raise ValueError(
                f"{path} belongs to a different extraction (differs in {differing}); "
                "use a new out_dir or delete the old one"
            )


def _update_manifest(out_dir: Path, **changes: Any) -> dict:
    """Refresh ``finished_shards`` from the files on disk and apply ``changes``."""
    path = out_dir / MANIFEST
    with _manifest_lock(out_dir):
        manifest = _read_json(path)
        manifest["finished_shards"] = sorted(_completed_shards(out_dir))
        manifest.update(changes)
        _write_json(path, manifest)
    return manifest


def _validate_records(records: Sequence[ImageRecord]) -> None:
    if len(records) == 0:
        raise ValueError("extract_features() got no records")
    seen: set[str] = set()
    for i, r in enumerate(records):
        if not isinstance(r, ImageRecord):
            raise TypeError(f"record {i} is a {type(r).__name__}, expected ImageRecord")
        if r.id in seen:
            raise ValueError(f"duplicate record id {r.id!r} (record {i})")
        seen.add(r.id)


class _RecordImages(Dataset):
    """Record index -> (index, pixels (3, H, W) or None, failure reason or None)."""

    def __init__(self, records: Sequence[ImageRecord], loader: ImageLoader, transform) -> None:
        self.records = records
        self.loader = loader
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        try:
            pixels = self.transform(self.loader(self.records[i]).convert("RGB"))
        except IMAGE_ERRORS as exc:
            return i, None, f"{type(exc).__name__}: {exc}"
        return i, pixels, None


def _collate(
    items: list[tuple[int, Tensor | None, str | None]],
) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    ok = [(i, px) for i, px, _ in items if px is not None]
    failed = [(i, reason) for i, px, reason in items if px is None]
    pixels = torch.stack([px for _, px in ok]) if ok else None
    return [i for i, _ in ok], pixels, failed


def _index_row(record: ImageRecord) -> dict[str, Any]:
    return {"id": record.id, "path": record.path, "lon": record.lon, "lat": record.lat,
            "label": record.label}


def _failure_row(record: ImageRecord, reason: str) -> dict[str, Any]:
    return {"id": record.id, "path": record.path, "reason": reason}


def _write_shard(
    out_dir: Path, rank: int, shard: int, features: np.ndarray, items: list[dict],
    failed: list[dict],
) -> None:
    stem = _shard_stem(rank, shard)
    write_atomic(out_dir / f"{stem}.npy", lambda fh: np.save(fh, features), binary=True)
    _write_json(out_dir / f"{stem}.json",
                {"shard": shard, "rank": rank, "items": items, "failed": failed})


def _plan_batches(
    shards: list[int], shard_size: int, num_records: int, batch_size: int
) -> tuple[list[list[int]], list[int]]:
    """Record-index batches covering ``shards`` in order, none crossing a shard boundary,
    and the shard of each batch."""
    batches: list[list[int]] = []
    batch_shard: list[int] = []
    for s in shards:
        stop = min((s + 1) * shard_size, num_records)
        for start in range(s * shard_size, stop, batch_size):
            batches.append(list(range(start, min(start + batch_size, stop))))
            batch_shard.append(s)
    return batches, batch_shard


def extract_features(
    records: Sequence[ImageRecord],
    encoder: ImageEncoder,
    out_dir: str | Path,
    *,
    image_loader: ImageLoader = load_image_file,
    batch_size: int = 64,
    num_workers: int = 2,
    shard_size: int = 2048,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> ExtractionReport:
    """Encode this rank's shards of ``records`` into ``out_dir``, skipping finished shards.

    ``image_loader(record) -> PIL.Image`` makes each image (default: open ``record.path``);
    images are preprocessed in ``num_workers`` DataLoader workers and encoded in batches of at
    most ``batch_size`` that never cross a shard. Each shard is stored as float16 ``(n, F)``
    once all its records are done; unreadable images are left out and listed in the shard's
    JSON and in ``report-rank-RRRR.json``. Call :func:`merge_shards` once every rank is done.

    Raises:
        ValueError: bad arguments, duplicate ids, or ``out_dir`` holding a different run.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise ValueError(f"need batch_size >= 1, shard_size >= 1, num_workers >= 0; got "
                         f"{batch_size}, {shard_size}, {num_workers}")
    _validate_records(records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    signature = _run_signature(records, encoder, shard_size)
    _open_manifest(out_dir, signature)

    num_shards = signature["num_shards"]
    assigned = [s for s in range(num_shards) if s % world_size == rank]
    complete = _completed_shards(out_dir)
    pending = [s for s in assigned if s not in complete]
    failed: list[dict[str, Any]] = [
        row for s in assigned if s in complete for row in _read_json(complete[s])["failed"]
    ]

    batches, batch_shard = _plan_batches(pending, shard_size, len(records), batch_size)
    last_batch_of = {s: i for i, s in enumerate(batch_shard)}

    loader = DataLoader(
        _RecordImages(records, image_loader, encoder.transform),
        batch_sampler=batches,
        num_workers=num_workers if batches else 0,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
    )
    empty = np.zeros((0, encoder.feature_dim), dtype=np.float16)
    written: list[int] = []
    items_encoded = 0
    shard_feats: list[np.ndarray] = []
    shard_items: list[dict] = []
    shard_failed: list[dict] = []
    total = sum(len(b) for b in batches)
    with tqdm(total=total, disable=not progress, desc=f"features rank {rank}",
              unit="img") as bar:
        for b, (indices, pixels, bad) in enumerate(loader):
            if pixels is not None:
                shard_feats.append(encoder.features(pixels).cpu().numpy().astype(np.float16))
                shard_items.extend(_index_row(records[i]) for i in indices)
            shard_failed.extend(_failure_row(records[i], reason) for i, reason in bad)
            bar.update(len(indices) + len(bad))
            shard = batch_shard[b]
            if last_batch_of[shard] == b:
                feats = np.concatenate(shard_feats) if shard_feats else empty
                _write_shard(out_dir, rank, shard, feats, shard_items, shard_failed)
                _update_manifest(out_dir)
                written.append(shard)
                items_encoded += len(shard_items)
                failed.extend(shard_failed)
                shard_feats, shard_items, shard_failed = [], [], []

    report = ExtractionReport(
        rank=rank,
        world_size=world_size,
        num_shards=num_shards,
        shards_assigned=assigned,
        shards_written=written,
        shards_skipped=[s for s in assigned if s in complete],
        items_encoded=items_encoded,
        failed=failed,
        report_path=str(out_dir / f"report-rank-{rank:04d}.json"),
    )
    _write_json(Path(report.report_path), {**asdict(report), "num_failed": report.num_failed})
    return report


def _write_index_csv(path: Path, rows: list[dict]) -> None:
    def write(fh: Any) -> None:
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in INDEX_COLUMNS}
                         for row in rows)

    write_atomic(path, write)


def merge_shards(out_dir: str | Path) -> FeatureStore:
    """Concatenate all shards into ``features.f16`` + ``index.csv`` and open the result.

    Idempotent: a store that is already merged is just opened.

    Raises:
        FileNotFoundError: no manifest in ``out_dir``.
        RuntimeError: some shards are not finished yet (lists them).
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {out_dir}: run extract_features() first")
    manifest = _read_json(manifest_path)
    if manifest.get("merged") and (out_dir / MERGED_FEATURES).is_file() and (
        out_dir / MERGED_INDEX
    ).is_file():
        return FeatureStore.open(out_dir)
    complete = _completed_shards(out_dir)
    missing = [s for s in range(manifest["num_shards"]) if s not in complete]
    if missing:
        raise RuntimeError(
            f"cannot merge {out_dir}: {len(missing)} of {manifest['num_shards']} shards are not "
            f"finished: {missing[:20]}{' ...' if len(missing) > 20 else ''}"
        )
    shards = [complete[s] for s in range(manifest["num_shards"])]
    arrays = [np.load(p.with_suffix(".npy"), mmap_mode="r") for p in shards]
    indexes = [_read_json(p) for p in shards]
    num_features = sum(a.shape[0] for a in arrays)
    dim = manifest["feature_dim"]
    for path, array, index in zip(shards, arrays, indexes, strict=True):
        if array.ndim != 2 or array.shape != (len(index["items"]), dim) or (
            array.dtype != np.float16
        ):
            raise ValueError(f"{path.with_suffix('.npy')} holds {array.dtype} {array.shape}, "
                             f"expected float16 ({len(index['items'])}, {dim}) as in {path.name}")

    def write_features(fh: Any) -> None:
        for array in arrays:
            fh.write(np.ascontiguousarray(array).tobytes())

    write_atomic(out_dir / MERGED_FEATURES, write_features, binary=True)
    _write_index_csv(out_dir / MERGED_INDEX, [row for idx in indexes for row in idx["items"]])
    _update_manifest(out_dir, merged=True, num_features=num_features,
                     num_failed=sum(len(idx["failed"]) for idx in indexes))
    return FeatureStore.open(out_dir)


def write_store(
    out_dir: str | Path,
    lonlat: np.ndarray,
    features: np.ndarray | Iterable[np.ndarray],
    encoder: str,
    ids: Sequence[str] | None = None,
) -> FeatureStore:
    """Write a merged store from features computed elsewhere, and open it.

    Args:
        out_dir: a new or empty directory.
        lonlat: ``(N, 2)`` (lon, lat) degrees.
        features: ``(N, F)``, or consecutive row blocks ``(n_i, F)`` (an iterator: the whole
            array is never held in memory); written as float16.
        encoder: name of the image encoder the features come from (``manifest["encoder"]``).
        ids: N record ids; default ``"0" .. "N-1"``. Paths and labels are left empty.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).exists():
        raise FileExistsError(f"{out_dir} already holds a feature store")
    lonlat = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
    blocks = [features] if isinstance(features, np.ndarray) else features
    counts: list[int] = []
    dims: set[int] = set()

    def write_features(fh: Any) -> None:
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float16)
            counts.append(block.shape[0])
            dims.add(block.shape[1])
            fh.write(memoryview(block).cast("B"))

    write_atomic(out_dir / MERGED_FEATURES, write_features, binary=True)
    if sum(counts) != len(lonlat) or len(dims) > 1:
        (out_dir / MERGED_FEATURES).unlink()
        raise ValueError(f"features hold {sum(counts)} rows of widths {sorted(dims)}, "
                         f"but lonlat has {len(lonlat)} rows")
    names = [str(i) for i in range(len(lonlat))] if ids is None else list(ids)

    def write_index(fh: Any) -> None:
        fh.write(",".join(INDEX_COLUMNS) + "\n")
        for name, (lon, lat) in zip(names, lonlat.tolist(), strict=True):
            fh.write(f"{name},,{lon!r},{lat!r},\n")

    write_atomic(out_dir / MERGED_INDEX, write_index)
    _write_json(out_dir / MANIFEST, {
        "format_version": FORMAT_VERSION, "encoder": encoder, "feature_dim": dims.pop() if dims else 0,
        "num_records": len(lonlat), "merged": True, "num_features": len(lonlat), "num_failed": 0,
    })
    return FeatureStore.open(out_dir)


class RowFile:
    """Rows of a raw row-major float16 ``(N, F)`` file, read on demand with ``os.preadv``.

    ``shape`` and ``dtype`` as a tensor's; ``rows[indices]`` and :meth:`read_into` read rows
    in the order given. Reads go through the page cache; nothing is mapped into the process.
    """

    dtype = torch.float16

    def __init__(self, path: str | Path, num_rows: int, row_dim: int) -> None:
        self.path = Path(path)
        self.shape = (num_rows, row_dim)
        self.row_bytes = row_dim * 2
        if self.path.stat().st_size != num_rows * self.row_bytes:
            raise ValueError(
                f"{self.path}: {self.path.stat().st_size} bytes, expected {num_rows} x {row_dim} float16"
            )
        self._fd = os.open(self.path, os.O_RDONLY)
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read_into(self, rows: Tensor, out: Tensor) -> None:
        """Fill ``out`` ``(len(rows), F)`` float16 (contiguous, on the host) with ``rows``."""
        if rows.numel() == 0:
            return
        if int(rows.min()) < 0 or int(rows.max()) >= self.shape[0]:
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        buffer = memoryview(out.numpy()).cast("B")
        size = self.row_bytes
        for i, row in enumerate(rows.tolist()):
            if os.preadv(self._fd, [buffer[i * size : (i + 1) * size]], row * size) != size:
                raise OSError(f"{self.path}: short read at row {row}")

    def __getitem__(self, rows: Tensor) -> Tensor:
        out = torch.empty((len(rows), self.shape[1]), dtype=self.dtype)
        self.read_into(rows.cpu(), out)
        return out


@dataclass
class FeatureStore:
    """A merged feature store opened read-only.

    Opening reads the manifest, memory-maps the features and reads the locations; the ids,
    paths and labels are read from ``index.csv`` when first used (a store may hold tens of
    millions of rows).

    Attributes:
        features: np.memmap float16 ``(N, F)`` (a plain empty array when N == 0).
        lonlat: float32 ``(N, 2)`` (lon, lat) in degrees.
        manifest: the store's manifest.json.
    """

    directory: Path
    features: np.ndarray
    lonlat: np.ndarray
    manifest: dict

    @classmethod
    def open(cls, directory: str | Path) -> FeatureStore:
        """Open a store merged by :func:`merge_shards` or written by :func:`write_store`.

        Raises:
            FileNotFoundError: missing manifest / merged files (run merge_shards()).
            ValueError: index and features disagree in length.
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {directory}")
        manifest = _read_json(manifest_path)
        feats_path, index_path = directory / MERGED_FEATURES, directory / MERGED_INDEX
        if not manifest.get("merged") or not feats_path.is_file() or not index_path.is_file():
            raise FileNotFoundError(f"{directory} is not merged yet: call merge_shards() on it")
        n, dim = int(manifest["num_features"]), int(manifest["feature_dim"])
        if feats_path.stat().st_size != n * dim * 2:
            raise ValueError(f"{feats_path} has {feats_path.stat().st_size} bytes, expected "
                             f"{n} x {dim} float16")
        features = (np.memmap(feats_path, dtype=np.float16, mode="r", shape=(n, dim)) if n
                    else np.zeros((0, dim), dtype=np.float16))
        import pandas as pd

        table = pd.read_csv(index_path, usecols=["lon", "lat"], dtype=np.float64)
        if len(table) != n:
            raise ValueError(f"{index_path} has {len(table)} rows but the features have {n}")
        lonlat = table[["lon", "lat"]].to_numpy(dtype=np.float32).reshape(n, 2)
        return cls(directory=directory, features=features, lonlat=lonlat, manifest=manifest)

    @functools.cached_property
    def _index(self) -> list[dict[str, str]]:
        with open(self.directory / MERGED_INDEX, newline="") as fh:
            return list(csv.DictReader(fh))

    @property
    def ids(self) -> list[str]:
        """N record ids."""
        return [row["id"] for row in self._index]

    @property
    def paths(self) -> list[str | None]:
        """N image paths (None for generated images)."""
        return [row["path"] or None for row in self._index]

    @property
    def labels(self) -> list[str | None] | None:
        """N labels (None entries where missing), or None if no record has a label."""
        labels = [row["label"] or None for row in self._index]
        return labels if any(label is not None for label in labels) else None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def tensors(self, random_access: bool = False) -> tuple[Tensor | RowFile, Tensor]:
        """Zero-copy host data: (features float16 ``(N, F)``, lonlat float32 ``(N, 2)`` degrees).

        The features are a read-only tensor over the memory map (nothing is read up front), or
        with ``random_access`` a :class:`RowFile` that reads the rows asked for with ``pread``:
        a batch of scattered rows then reads its own rows only and maps nothing, so the
        process's resident memory stays at a batch however much of the store a run visits.
        """
        if random_access and len(self):
            path = self.directory / MERGED_FEATURES
            features: Tensor | RowFile = RowFile(path, len(self), self.feature_dim)
        else:
            with warnings.catch_warnings():
                # The memory map is opened read-only and this tensor is only ever read.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                features = torch.from_numpy(self.features)
        return features, torch.from_numpy(self.lonlat)

    def to_tensors(self, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """(features float32 ``(N, F)``, lonlat float32 ``(N, 2)`` degrees) on ``device``."""
        features = torch.from_numpy(np.asarray(self.features, dtype=np.float32))
        return features.to(device), torch.from_numpy(self.lonlat).to(device)
