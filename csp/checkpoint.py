"""Checkpoint format: a directory with ``model.safetensors`` and ``model.json``.

``model.json`` holds the schema version, the model configuration, the class list, the image
encoder's name, what a reader needs to use the model (the similarity the CSP objective was
trained with, the classes whose prior rests on expert ranges: typed fields), metrics, free-form
training provenance and the SHA-256 of the weights file, so a truncated or swapped weights file
is detected before it is used. Nothing is unpickled.

Schema history: 1 kept the similarity and the expert-range classes only in the free-form
``train`` record; 2 made them fields. Older files are migrated when read
(:func:`read_meta`); :func:`upgrade_checkpoint` rewrites one in the current schema.

Writes are atomic: the directory is built under a temporary name and renamed into place; named
pointers such as ``last`` and ``best`` are symlinks replaced with one ``rename``, so a process
killed mid-write never leaves a half-written ``last``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from csp._io import write_text_atomic
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder

SCHEMA_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of another schema, or does not match its config."""


@dataclass
class CheckpointMeta:
    """Everything needed to rebuild the model, besides its weights.

    Attributes:
        location_encoder: :class:`LocationEncoderConfig` as a dict.
        objective: ``mc``/``nce``/``mse`` for a :class:`LocationImageEncoder`, None for a bare
            :class:`LocationEncoder`.
        image_dim: image-feature size F of the image side (None without one).
        image_encoder: timm name of the frozen image encoder the features came from.
        class_names: names of the ``class_emb`` rows (empty without a head).
        cosine_similarity: the image-location similarity is the cosine of the two embeddings
            (the CSP loss normalised them); False: the plain dot product.
        temperature: the CSP objective's temperature: similarities are divided by it.
        image_size: square input size in pixels the image features were computed at (the
            pre-training chips' pixels, e.g. 96); a query image must be encoded at the same
            size. None: the encoder's own default.
        expert_range_species: classes whose prior rests partly on pseudo-presences sampled in
            their expert native range (flagged to users).
        metrics: evaluation figures.
        train: training configuration and provenance (free form, JSON-serialisable; no reader
            may depend on its content).
    """

    location_encoder: dict[str, Any]
    objective: str | None = None
    image_dim: int | None = None
    image_encoder: str | None = None
    class_names: list[str] = field(default_factory=list)
    cosine_similarity: bool = False
    temperature: float = 1.0
    image_size: int | None = None
    expert_range_species: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def build_model(self) -> nn.Module:
        """An untrained model of the recorded architecture."""
        config = LocationEncoderConfig(**self.location_encoder)
        if self.objective is None:
            return LocationEncoder(config)
        if self.image_dim is None:
            raise CheckpointError("checkpoint has an objective but no image_dim")
        return LocationImageEncoder(config, self.image_dim, self.objective)


def describe_model(model: nn.Module, **fields: Any) -> CheckpointMeta:
    """A :class:`CheckpointMeta` for ``model`` (a LocationEncoder or LocationImageEncoder)."""
    if isinstance(model, LocationImageEncoder):
        return CheckpointMeta(
            location_encoder=model.location_encoder.config.to_dict(),
            objective=model.objective,
            image_dim=model.image_dim,
            **fields,
        )
    if isinstance(model, LocationEncoder):
        return CheckpointMeta(location_encoder=model.config.to_dict(), **fields)
    raise TypeError(f"cannot describe a {type(model).__name__}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | Path, model: nn.Module, meta: CheckpointMeta, extra_files: dict | None = None
) -> Path:
    """Write ``model`` and ``meta`` to ``directory`` atomically (replacing an existing one).

    Args:
        directory: target checkpoint directory.
        model: its ``state_dict`` is saved (tensors made contiguous, on the CPU).
        meta: configuration and metadata.
        extra_files: ``{file name: callable(path)}`` writers for companion files (e.g. the
            trainer's optimizer state), written inside the same atomic directory.

    Returns:
        the checkpoint directory.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, staging / WEIGHTS_FILE)
        record = asdict(meta) | {"weights_sha256": _sha256(staging / WEIGHTS_FILE)}
        (staging / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        for name, writer in (extra_files or {}).items():
            writer(staging / name)
        for item in staging.iterdir():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        if directory.exists() and not directory.is_symlink():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def point_link(link: str | Path, target: str | Path) -> None:
    """Atomically make ``link`` a relative symlink to ``target`` (e.g. ``last -> step-00042``)."""
    link, target = Path(link), Path(target)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(os.path.relpath(target, link.parent))
    os.replace(temporary, link)


def _migrate_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: the similarity and the expert-range classes move from the free-form
    ``train`` record (``train.config.loss``, ``train.expert_range_species``) to fields."""
    train = dict(record.get("train") or {})
    loss = (train.get("config") or {}).get("loss") or {}
    return record | {
        "cosine_similarity": bool(loss.get("normalize", False)),
        "temperature": float(loss.get("temperature", 1.0)),
        "expert_range_species": sorted(train.pop("expert_range_species", [])),
        "train": train,
        "schema_version": 2,
    }


MIGRATIONS = {1: _migrate_1_to_2}
"""``{version: function}`` turning a ``model.json`` record of that version into the next."""


def _read_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint metadata at {path}")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return record


def read_meta(directory: str | Path) -> CheckpointMeta:
    """Read and validate ``model.json`` (schema version, fields); a file of an older schema is
    migrated in memory (the file is left as it is)."""
    path = Path(directory) / META_FILE
    record = _read_record(path)
    version = record.get("schema_version")
    while version in MIGRATIONS:
        record = MIGRATIONS[version](record)
        version = record["schema_version"]
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has schema version {version!r}; this version of csp reads {SCHEMA_VERSION} "
            f"(and migrates {', '.join(map(str, sorted(MIGRATIONS)))})"
        )
    record.pop("weights_sha256", None)
    try:
        return CheckpointMeta(**record)
    except TypeError as err:
        raise CheckpointError(f"{path} has unexpected fields: {err}") from err


def upgrade_checkpoint(directory: str | Path) -> bool:
    """Rewrite ``model.json`` of ``directory`` in the current schema (atomically; the weights and
    their recorded hash are untouched). Returns whether the file was of an older schema."""
    path = Path(directory) / META_FILE
    record = _read_record(path)
    if record.get("schema_version") == SCHEMA_VERSION:
        return False
    meta = read_meta(directory)
    upgraded = asdict(meta) | {"weights_sha256": record.get("weights_sha256")}
    write_text_atomic(path, json.dumps(upgraded, indent=2, sort_keys=True))
    return True


def load_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model from ``directory`` and load its weights strictly.

    Raises:
        CheckpointError: missing files, wrong schema, a weights file that is not safetensors,
            truncated, changed since it was written, or whose tensors do not fit the config.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    meta = read_meta(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"no weights file at {weights}")
    expected = _read_record(directory / META_FILE).get("weights_sha256")
    if expected is not None and _sha256(weights) != expected:
        raise CheckpointError(f"{weights} does not match the hash recorded in {META_FILE}")
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
    try:
        model = meta.build_model()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / META_FILE} has an invalid model config: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {weights} do not match the config: {err}") from err
    return model.to(map_location).eval(), meta
