"""Typed training configuration, read from YAML presets and ``--set key.path=value`` overrides.

A preset file (``train/configs/<name>.yaml``) holds a partial configuration; missing fields keep
the dataclass defaults below. Overrides are applied last; their values are parsed as YAML
(``--set optim.lr=3e-4``, ``--set loss.symmetric=true``, ``--set model.encoding=sphereC+``,
``--set model.encoding_kwargs.min_radius=0.1``). Unknown keys are errors, so a typo never passes
silently; encoding arguments are validated against the encoding registry when the config loads.
"""

from __future__ import annotations

import dataclasses
import filecmp
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from csp.encodings import resolve_encoding_kwargs
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
    # The L term's random negative locations: globe (uniform on the sphere), land, extent or
    # hull of the pairs' locations, or a polygon / points file (train.pretrain.negative_sampler).
    negative_locations: str = "globe"


CLEANING_LEVELS = ("none", "basic", "full", "inat")
SELECT = ("best", "last")
METRICS = ("mrr", "top1", "top3", "top5", "auc")


@dataclass
class DataConfig:
    """Presence-only observations, how they are read and cleaned, and their split.

    Column names are ``"auto"`` (recognised by name, see :mod:`csp.datasets.tabular`) or the
    exact header; ``delimiter`` ``"auto"`` sniffs comma, tab or semicolon from the header.
    ``clean``: ``none`` | ``basic`` (duplicates, invalid and 0/0 coordinates, country
    centroids) | ``full`` (basic + the zoo rule where it fits, range outliers and expert
    ranges of :mod:`csp.cleaning`) | ``inat`` (the rules the bundled iNat/YFCC species data
    is cleaned with) | ``auto`` (``inat`` for the bundled data, ``basic`` for any other file);
    see :func:`train.data.clean_records`. ``val_csv`` / ``test_csv``: your own validation /
    test data instead of the seeded split (presences, or presence-absence sites with a 0/1
    column: see :mod:`train.sites`).
    """

    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("csv", "native_ranges", "countries", "val_csv", "test_csv")

    csv: str = DEFAULT_SPECIES_CSV  # or the CSP reference code's {split}.json (its locations beside)
    lon_col: str = "auto"
    lat_col: str = "auto"
    label_col: str = "auto"
    date_col: str | None = "auto"
    delimiter: str = "auto"
    clean: str = "auto"
    native_ranges: str | None = DEFAULT_NATIVE_RANGES  # expert ranges used by the full cleaning
    countries: str = DEFAULT_COUNTRIES  # polygons for the expert-range and centroid rules
    val_csv: str | None = None
    test_csv: str | None = None
    split_seed: int = 0
    # "spatial": leak-free, no held-out point within split_buffer_km of a same-species training
    # point (csp.splits); "observation": the old per-observation split (leaks, kept for old runs).
    split: str = "spatial"
    split_buffer_km: float = 10.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    label_fraction: float = 1.0  # few-shot: fraction of the training labels used
    label_seed: int = 0

    def __post_init__(self) -> None:
        # Configs saved before the cleaning levels existed hold a bool (True = the full rules).
        legacy = {"true": "inat", "false": "none"}
        self.clean = legacy.get(str(self.clean).lower(), str(self.clean))
        if self.clean not in (*CLEANING_LEVELS, "auto"):
            raise ValueError(f"data.clean must be one of {[*CLEANING_LEVELS, 'auto']}, got {self.clean!r}")

    @property
    def bundled(self) -> bool:
        """Whether this is the bundled species data (whose defaults differ from a user's file):
        the bundled file itself, or a byte-identical copy of it (a checkpoint records the
        absolute path of the checkout it was built in; another checkout's copy is the same data)."""
        path, bundled = Path(self.csv), Path(DEFAULT_SPECIES_CSV)
        if path.resolve() == bundled.resolve():
            return True
        same_size = path.is_file() and bundled.is_file() and path.stat().st_size == bundled.stat().st_size
        return same_size and filecmp.cmp(path, bundled, shallow=False)

    @property
    def cleaning(self) -> str:
        """The cleaning level that applies: ``clean``, with ``auto`` resolved."""
        if self.clean != "auto":
            return self.clean
        return "inat" if self.bundled else "basic"


@dataclass
class FinetuneConfig:
    """Supervised presence-only fine-tuning, from scratch or from a pre-trained checkpoint.

    Attributes:
        init_from: pre-trained checkpoint directory; the model architecture (encoding
            included) is then the checkpoint's, unless ``model`` is set explicitly, which is
            an error when it differs from the checkpoint unless ``reencode``.
        reencode: with ``init_from``, train the encoder on ``model``'s position encoding: the
            first layer (which reads the encoding) starts fresh, the rest is copied.
        background: where background (pseudo-absence) points come from: ``globe`` (uniform
            on the sphere), ``extent`` (the training data's lon/lat box plus
            ``background_buffer_deg``), ``hull`` (the data's convex hull on the sphere, plus
            the buffer), a polygon file (``.geojson``/``.gpkg``/``.shp``), a CSV of background
            points, or ``auto`` (``globe`` for the bundled data, ``extent`` otherwise).
        scale: ``auto`` chooses a multi-scale encoding's finest wavelength ``min_radius``
            from the training data's extent (:func:`train.finetune.region_min_radius`) for a
            model trained from scratch on your own data; ``fixed`` keeps ``model``'s value.
            Setting ``model.encoding_kwargs.min_radius`` yourself implies ``fixed``.
        metric: validation metric for early stopping and the best checkpoint (``auc`` needs
            presence-absence validation sites and is then the default).
        select: ``best`` (highest validation metric) or ``last`` epoch as ``checkpoints/best``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: LocationEncoderConfig = field(default_factory=LocationEncoderConfig)
    init_from: str | None = None
    reencode: bool = False
    freeze_encoder: bool = False  # train only the class head
    pos_weight: float | None = None  # default: number of classes
    # > 0: each step scores this many classes drawn at random, an unbiased estimate of the
    # presence-only loss (csp.losses.sampled_presence_only_loss) for very many classes.
    sampled_classes: int = 0
    background: str = "auto"
    background_buffer_deg: float = 1.0
    scale: str = "auto"
    metric: str = "auto"
    select: str = "best"
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.scale not in ("auto", "fixed"):
            raise ValueError(f"scale must be auto or fixed, got {self.scale!r}")
        if self.metric not in (*METRICS, "auto"):
            raise ValueError(f"metric must be one of {[*METRICS, 'auto']}, got {self.metric!r}")
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {list(SELECT)}, got {self.select!r}")
        if not (self.background_buffer_deg >= 0):
            raise ValueError(f"background_buffer_deg must be >= 0, got {self.background_buffer_deg}")


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
            return {key: _leaf(item) for key, item in parsed.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from err
    return value


def _leaf(value: Any) -> Any:
    """A free-form mapping's value as typed after ``--set a.b.key=``: YAML, and numbers in
    any notation (PyYAML reads ``1e-3`` as a string)."""
    if isinstance(value, dict):
        return {key: _leaf(item) for key, item in value.items()}
    if not isinstance(value, _Typed):
        return value
    parsed = yaml.safe_load(str(value))
    if isinstance(parsed, str):
        try:
            return float(parsed)
        except ValueError:
            return parsed
    return parsed


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


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"--set expects key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    return key.strip(), raw.strip()


def _encoder_sections(cls: type) -> list[str]:
    """Names of the fields of ``cls`` that hold a :class:`LocationEncoderConfig`."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] is LocationEncoderConfig]


def _switch_encoding(tree: dict[str, Any], section: str, pairs: list[tuple[str, str]]) -> None:
    """Drop the preset's ``encoding_kwargs`` when an override names another encoding: they
    belong to the preset's encoding (the new one starts from its own registry defaults)."""
    asked = [raw for key, raw in pairs if key == f"{section}.encoding"]
    node = tree.get(section)
    if not asked or not isinstance(node, dict):
        return
    if asked[-1] != node.get("encoding", LocationEncoderConfig.encoding):
        node.pop("encoding_kwargs", None)


def _resolve_encodings(config: Any, sections: list[str]) -> None:
    """Validate each encoder section's encoding and fill in its defaults (registry)."""
    for section in sections:
        model: LocationEncoderConfig = getattr(config, section)
        try:
            model.encoding_kwargs = resolve_encoding_kwargs(model.encoding, model.encoding_kwargs)
        except ValueError as err:
            raise ValueError(f"{type(config).__name__}.{section}: {err}") from None


def load_config(
    cls: type[Config],
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    encoding: str | None = None,
) -> Config:
    """Defaults <- preset YAML (``base:`` chains presets) <- overrides, validated.

    ``overrides`` are ``key.path=value`` strings whose values are converted to the type of
    the field they set (inside free-form mappings such as ``model.encoding_kwargs``, by YAML
    and then by the encoding's own argument checks). ``encoding`` is a shortcut for
    ``model.encoding=NAME``. Naming an encoding other than the preset's starts from that
    encoding's defaults (``csp.encodings.encoding_defaults``); every encoding's arguments are
    checked here and written out in full, so a bad one fails now, not in the first epoch.
    A fine-tuning config with ``init_from`` takes the checkpoint's architecture unless
    ``model`` was set by an override (see :class:`FinetuneConfig`).
    """
    tree: dict[str, Any] = _read_preset(preset) if preset else {}
    pairs = [_split_override(item) for item in overrides]
    if encoding:
        pairs.insert(0, ("model.encoding", encoding))
    if cls is FinetuneConfig:
        _adopt_checkpoint_model(tree, pairs)
    sections = _encoder_sections(cls)
    for section in sections:
        _switch_encoding(tree, section, pairs)
    for key, raw in pairs:
        _set_path(tree, key, _Typed(raw))
    config = _build(cls, tree, cls.__name__)
    _resolve_encodings(config, sections)
    return config


def _adopt_checkpoint_model(tree: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    """Fine-tuning from ``init_from``: the checkpoint's architecture replaces the preset's
    ``model`` (overrides of ``model.*`` still apply on top); setting
    ``model.encoding_kwargs`` by hand implies ``scale=fixed``."""
    keys = [key for key, _ in pairs]
    if any(key.startswith("model.encoding_kwargs") for key in keys) and "scale" not in keys:
        tree["scale"] = "fixed"
    asked = [raw for key, raw in pairs if key == "init_from"]
    init_from = asked[-1] if asked else tree.get("init_from")
    if not init_from or str(init_from).lower() in ("null", "none", "~"):
        return
    from csp.checkpoint import META_FILE, read_meta

    if not (Path(str(init_from)) / META_FILE).is_file():
        return  # no checkpoint there (yet): loading it at the start of the run says so

    source = dict(read_meta(str(init_from)).location_encoder)
    source.update(num_classes=0, num_users=0)
    tree["model"] = source


def _read_preset(name: str) -> dict[str, Any]:
    path = preset_path(name)
    tree = yaml.safe_load(path.read_text()) or {}
    base = tree.pop("base", None)
    return _merge(_read_preset(base), tree) if base else tree


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(config)
