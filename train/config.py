"""Typed training configuration, read from YAML presets and ``--set key.path=value`` overrides.

A preset file (``train/configs/<name>.yaml``) holds a partial configuration; missing fields keep
the dataclass defaults below. Overrides are applied last; their values are parsed as YAML
(``--set optim.lr=3e-4``, ``--set loss.symmetric=true``, ``--set model.encoding=sphereC+``).
Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from csp.hub import ASSETS_DIR
from csp.losses import CSPLossConfig
from csp.models import LocationEncoderConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# Shipped files, found wherever the package lives (checkout or installed wheel).
DEFAULT_SPECIES_CSV = str(ASSETS_DIR / "data" / "yfcc_inat2017_species.csv")
DEFAULT_NATIVE_RANGES = str(ASSETS_DIR / "default" / "native_ranges.csv")
DEFAULT_COUNTRIES = str(ASSETS_DIR / "basemap" / "naturalearth_110m_countries.geojson")


@dataclass
class OptimConfig:
    """Adam with per-epoch exponential learning-rate decay (the CSP recipe)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay: float = 0.98
    epochs: int = 30
    batch_size: int = 1024
    patience: int = 0  # early stopping on the validation metric; 0 = off


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16/fp16 autocast on CUDA; ignored on CPU
    seed: int = 0
    out_dir: str = "runs/run"
    progress: bool = True
    checkpoint_every: int = 1  # epochs
    # Read each batch's rows from host memory (a feature store's float16 memory map) instead
    # of holding all training data on the device; None: stream pre-training features read
    # from a feature store, hold everything else on the device (train/batches.py).
    stream: bool | None = None


@dataclass
class PretrainConfig:
    """CSP self-supervised pre-training on (location, frozen image feature) pairs."""

    features: str = ""  # a csp.features feature-store directory, or a feature .npy (see locations)
    # With features = an (N, F) .npy: its rows' locations, an (N, 2) lon/lat .npy, a CSV, or the
    # CSP reference code's {split}.json (csp.datasets.read_precomputed).
    locations: str = ""
    image_encoder: str = "tf_efficientnet_lite0"  # "" for features made elsewhere (no encoder here)
    model: LocationEncoderConfig = field(default_factory=LocationEncoderConfig)
    loss: CSPLossConfig = field(default_factory=CSPLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    val_fraction: float = 0.05  # held-out pairs for image->location retrieval


@dataclass
class DataConfig:
    """Presence-only observations and their fixed, seeded split."""

    csv: str = DEFAULT_SPECIES_CSV  # or the CSP reference code's {split}.json (its locations beside)
    clean: bool = True  # drop captive records and range outliers (csp.cleaning)
    native_ranges: str | None = DEFAULT_NATIVE_RANGES  # expert ranges used by the cleaning
    countries: str = DEFAULT_COUNTRIES  # polygons for the expert-range rule
    split_seed: int = 0
    # "spatial": leak-free, no held-out point within split_buffer_km of a same-species training
    # point (csp.splits); "observation": the old per-observation split (leaks, kept for old runs).
    split: str = "spatial"
    split_buffer_km: float = 10.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    label_fraction: float = 1.0  # few-shot: fraction of the training labels used
    label_seed: int = 0


@dataclass
class FinetuneConfig:
    """Supervised presence-only fine-tuning, from scratch or from a pre-trained checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: LocationEncoderConfig = field(default_factory=LocationEncoderConfig)
    init_from: str | None = None  # pre-trained checkpoint directory (location encoder reused)
    freeze_encoder: bool = False  # train only the class head
    pos_weight: float | None = None  # default: number of classes
    # > 0: each step scores this many classes drawn at random, an unbiased estimate of the
    # presence-only loss (csp.losses.sampled_presence_only_loss) for very many classes.
    sampled_classes: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


Config = TypeVar("Config")


class _Typed(str):
    """A value as typed after ``--set key=``; converted by the type of the field it sets."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint; parse it if it came from the command line."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None or (isinstance(value, _Typed) and value.lower() in ("null", "none", "~")):
            return None
        hint = next(a for a in args if a is not type(None))
    raw = str(value) if isinstance(value, _Typed) else None
    try:
        if hint is str:
            if raw is None and not isinstance(value, str):
                raise TypeError
            return str(value)
        if hint is bool:
            parsed = yaml.safe_load(raw) if raw is not None else value
            if not isinstance(parsed, bool):
                raise TypeError
            return parsed
        if hint is int:
            number = float(raw) if raw is not None else value
            if isinstance(number, bool) or not float(number).is_integer():
                raise TypeError
            return int(number)
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(raw if raw is not None else value)
        if typing.get_origin(hint) is dict or hint is dict:
            parsed = yaml.safe_load(raw) if raw is not None else value
            if not isinstance(parsed, dict):
                raise TypeError
            return parsed
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from err
    return value


def _build(cls: type[Config], values: dict[str, Any], where: str) -> Config:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_path(name: str) -> Path:
    """``train/configs/<name>.yaml``, or ``name`` itself if it is a path to a YAML file."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ValueError(f"unknown preset {name!r}; known presets: {known}")
    return path


def encoding_preset(name: str) -> dict[str, Any]:
    """``{"encoding": name, "encoding_kwargs": {...}}`` from ``train/configs/encodings.yaml``."""
    presets = yaml.safe_load((CONFIG_DIR / "encodings.yaml").read_text())
    if name not in presets:
        raise ValueError(f"no encoding preset {name!r}; known: {sorted(presets)}")
    return {"encoding": name, "encoding_kwargs": dict(presets[name] or {})}


def load_config(
    cls: type[Config],
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    encoding: str | None = None,
) -> Config:
    """Defaults <- preset YAML (``base:`` chains presets) <- encoding preset <- overrides.

    ``encoding`` sets ``model.encoding`` and its keyword arguments from
    ``train/configs/encodings.yaml``; ``overrides`` are ``key.path=value`` strings whose values
    are converted to the type of the field they set.
    """
    tree: dict[str, Any] = _read_preset(preset) if preset else {}
    if encoding:
        tree = _merge(tree, {"model": encoding_preset(encoding)})
        tree["model"]["encoding_kwargs"] = encoding_preset(encoding)["encoding_kwargs"]
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), _Typed(raw.strip()))
    return _build(cls, tree, cls.__name__)


def _read_preset(name: str) -> dict[str, Any]:
    path = preset_path(name)
    tree = yaml.safe_load(path.read_text()) or {}
    base = tree.pop("base", None)
    return _merge(_read_preset(base), tree) if base else tree


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(config)
