"""Location encoders and the location-image model.

``LocationEncoder`` = position encoding (``csp.encodings``) + fully connected network + optional
bias-free class head, with the API of the CSP reference code
(``forward(x, class_of_interest=None, return_feats=False)``, ``eval_single_class``, sigmoid outputs).

``LocationImageEncoder`` pairs it with the image side used in self-supervised pre-training: a
trainable projection ``W`` of frozen image features (objectives ``mc`` and ``nce``) or a location
decoder that regresses image features from the location embedding (objective ``mse``).

All locations are ``(lon, lat)`` in degrees, shape ``(..., 2)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from csp.encodings import create_encoding


class LeakyReLU02(nn.LeakyReLU):
    """LeakyReLU with negative slope 0.2: the CSP reference code's ``leakyrelu``."""

    def __init__(self) -> None:
        super().__init__(negative_slope=0.2)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01 (PyTorch's default)
    "leaky_relu_0.2": LeakyReLU02,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

OBJECTIVES = ("mc", "nce", "mse")


@dataclass
class LocationEncoderConfig:
    """Hyper-parameters of a :class:`LocationEncoder`.

    Attributes:
        encoding: registered position-encoding name (``csp.encodings.list_encodings()``).
        encoding_kwargs: keyword arguments of that encoding (radii in degrees).
        hidden_dim: width of the hidden layers.
        num_hidden_layers: hidden layers of the MLP (or residual blocks if ``residual``).
        embed_dim: size E of the location embedding.
        activation: one of ``ACTIVATIONS``.
        dropout: dropout probability after each activation.
        final_activation: apply activation and dropout after the last layer too (the CSP
            reference does; it is what makes SimCSE's two dropout views differ).
        residual: SINR-style residual blocks instead of a plain MLP.
        layer_norm: LayerNorm after each hidden layer of the plain MLP (after its dropout and
            skip connection; not after the last layer), as the CSP reference code's MLP.
        skip_connection: add each hidden layer's input to its output where both have the same
            width (plain MLP; the reference code's ``skip_connection``).
        num_classes: size of the bias-free ``class_emb`` head (0: no head).
        num_users: size of the optional bias-free ``user_emb`` head (0: none).
    """

    encoding: str = "grid"
    encoding_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_dim: int = 512
    num_hidden_layers: int = 1
    embed_dim: int = 256
    activation: str = "leaky_relu"
    dropout: float = 0.5
    final_activation: bool = True
    residual: bool = False
    layer_norm: bool = False
    skip_connection: bool = False
    num_classes: int = 0
    num_users: int = 0

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("hidden_dim", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_hidden_layers < 0 or self.num_classes < 0 or self.num_users < 0:
            raise ValueError("num_hidden_layers, num_classes and num_users must be >= 0")
        if self.residual and (self.layer_norm or self.skip_connection):
            raise ValueError("layer_norm and skip_connection apply to the plain MLP, not residual=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RANDOM_BITS = 31  # uniform bits per int32 of random_(), which draws from [0, 2**31)


class Dropout(nn.Module):
    """Inverted dropout: ``x * m`` with ``m = 1 / (1 - p)`` with probability ``1 - p``, else 0,
    independently per element: the distribution of ``nn.Dropout``, made cheaper on the CPU,
    where the random draws of the masks were a fifth of a CSP pre-training step (PyTorch's CPU
    generator is a single-threaded Mersenne Twister).

    ``p = 0.5`` (every preset): each mask element is one random bit, 31 per 32-bit draw, so 31
    times fewer draws than one uniform per element. Other ``p``: a uniform draw per element
    compared with ``p`` (``u >= p``, ``u ~ U[0, 1)``). The mask is one tensor, so autograd
    records a single product (one pass forward, one backward).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.mask(x)

    def mask(self, x: Tensor) -> Tensor:
        """``m`` for ``x``: its shape, dtype and device, values 0 or ``1 / (1 - p)``."""
        if self.p == 0.5:
            n = x.numel()
            words = torch.empty(-(-n // RANDOM_BITS), dtype=torch.int32, device=x.device).random_()
            shifts = torch.arange(RANDOM_BITS, dtype=torch.int32, device=x.device)
            bits = (words[:, None] >> shifts).bitwise_and_(1)
            return bits.view(-1)[:n].view(x.shape).to(x.dtype).mul_(2.0)
        return torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _act_drop(config: LocationEncoderConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [ACTIVATIONS[config.activation]()]
    if config.dropout > 0:
        layers.append(Dropout(config.dropout))
    return layers


class ResidualBlock(nn.Module):
    """``y = x + act(W2 drop(act(W1 x)))``, width preserved (SINR's residual layer, also the
    CSP reference code's ``ResLayer`` of its ``geo_net``)."""

    def __init__(self, width: int, hidden: int, config: LocationEncoderConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, hidden), *_act_drop(config), nn.Linear(hidden, width))
        self.post = ACTIVATIONS[config.activation]()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.post(self.body(x))


class SkipConnection(nn.Module):
    """``y = x + body(x)`` (a hidden layer of the plain MLP with ``skip_connection``)."""

    def __init__(self, *body: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def build_mlp(in_dim: int, config: LocationEncoderConfig) -> nn.Sequential:
    """The network after the position encoding: ``(..., in_dim) -> (..., embed_dim)``.

    Plain: ``num_hidden_layers`` x (Linear -> act -> dropout [-> + input with
    ``skip_connection`` where the widths match] [-> LayerNorm with ``layer_norm``]) then Linear
    to ``embed_dim``, followed by act -> dropout when ``final_activation``. Residual: a Linear stem to
    ``embed_dim``, ``num_hidden_layers`` residual blocks of inner width ``hidden_dim``.
    """
    layers: list[nn.Module] = []
    if config.residual:
        layers += [nn.Linear(in_dim, config.embed_dim), *_act_drop(config)]
        layers += [
            ResidualBlock(config.embed_dim, config.hidden_dim, config)
            for _ in range(config.num_hidden_layers)
        ]
        if config.final_activation and config.dropout > 0:
            layers.append(Dropout(config.dropout))
        return nn.Sequential(*layers)
    width = in_dim
    for _ in range(config.num_hidden_layers):
        hidden = [nn.Linear(width, config.hidden_dim), *_act_drop(config)]
        skip = config.skip_connection and width == config.hidden_dim
        layers += [SkipConnection(*hidden)] if skip else hidden
        if config.layer_norm:
            layers.append(nn.LayerNorm(config.hidden_dim))
        width = config.hidden_dim
    layers.append(nn.Linear(width, config.embed_dim))
    if config.final_activation:
        layers += _act_drop(config)
    return nn.Sequential(*layers)


class LocationEncoder(nn.Module):
    """e(x) = NN(PE(x)) with an optional bias-free class head.

    Args:
        config: see :class:`LocationEncoderConfig`.
    """

    def __init__(self, config: LocationEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = create_encoding(config.encoding, **config.encoding_kwargs)
        self.net = build_mlp(self.position_encoding.output_dim, config)
        self.embed_dim = config.embed_dim
        self.num_classes = config.num_classes
        self.class_emb = (
            nn.Linear(config.embed_dim, config.num_classes, bias=False) if config.num_classes else None
        )
        self.user_emb = (
            nn.Linear(config.embed_dim, config.num_users, bias=False) if config.num_users else None
        )

    def embed(self, lonlat: Tensor) -> Tensor:
        """Location embedding: ``(..., 2)`` degrees -> ``(..., E)``."""
        return self.net(self.position_encoding(lonlat))

    def _head(self) -> nn.Linear:
        if self.class_emb is None:
            raise RuntimeError("this LocationEncoder has no class head (num_classes=0)")
        return self.class_emb

    def class_logits(self, lonlat: Tensor) -> Tensor:
        """Pre-sigmoid class scores: ``(..., 2)`` degrees -> ``(..., C)``."""
        return self._head()(self.embed(lonlat))

    def forward(self, x: Tensor, class_of_interest: int | None = None, return_feats: bool = False) -> Tensor:
        """Reference-code API.

        Args:
            x: ``(B, 2)`` locations, degrees.
            class_of_interest: if given, only that class's probability ``(B,)``.
            return_feats: return the embedding ``(B, E)`` instead of probabilities.

        Returns:
            ``(B, E)`` embedding, ``(B, C)`` sigmoid probabilities or ``(B,)`` for one class.
        """
        feats = self.embed(x)
        if return_feats:
            return feats
        if class_of_interest is not None:
            return self.eval_single_class(feats, class_of_interest)
        return torch.sigmoid(self._head()(feats))

    def eval_single_class(self, feats: Tensor, class_of_interest: int) -> Tensor:
        """Probability of one class from embeddings: ``(B, E) -> (B,)``."""
        weight = self._head().weight[class_of_interest]
        return torch.sigmoid(feats @ weight)

    def user_logits(self, lonlat: Tensor) -> Tensor:
        """Pre-sigmoid user scores ``(..., U)`` (photographer head of the reference code)."""
        if self.user_emb is None:
            raise RuntimeError("this LocationEncoder has no user head (num_users=0)")
        return self.user_emb(self.embed(lonlat))


class LocationImageEncoder(nn.Module):
    """Location encoder + the image side of CSP pre-training.

    Objectives ``mc``/``nce``: ``image_projection`` W maps frozen image features ``(B, F)`` into
    the location embedding space ``(B, E)``. Objective ``mse``: ``location_decoder`` maps the
    location embedding ``(B, E)`` to image-feature space ``(B, F)`` for a regression loss.
    Only these two parts are trainable here; the image encoder itself stays frozen elsewhere.
    """

    def __init__(self, location: LocationEncoderConfig, image_dim: int, objective: str) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
        if image_dim < 1:
            raise ValueError(f"image_dim must be positive, got {image_dim}")
        self.objective = objective
        self.image_dim = image_dim
        self.location_encoder = LocationEncoder(location)
        self.image_projection: nn.Linear | None = None
        self.location_decoder: nn.Linear | None = None
        if objective == "mse":
            self.location_decoder = nn.Linear(location.embed_dim, image_dim)
        else:
            self.image_projection = nn.Linear(image_dim, location.embed_dim)

    def encode_locations(self, lonlat: Tensor) -> Tensor:
        """``(..., 2)`` degrees -> ``(..., E)``."""
        return self.location_encoder.embed(lonlat)

    def encode_images(self, image_features: Tensor) -> Tensor:
        """Frozen image features ``(B, F)`` -> projected ``(B, E)`` (``mc``/``nce`` only)."""
        if self.image_projection is None:
            raise RuntimeError("the mse objective has no image projection")
        return self.image_projection(image_features)

    def decode_locations(self, location_embedding: Tensor) -> Tensor:
        """Location embedding ``(B, E)`` -> predicted image features ``(B, F)`` (``mse`` only)."""
        if self.location_decoder is None:
            raise RuntimeError(f"the {self.objective} objective has no location decoder")
        return self.location_decoder(location_embedding)
