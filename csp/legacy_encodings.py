"""Position encodings of the CSP reference code that differ from ours, kept to run its models.

They are registered in the one registry of :mod:`csp.encodings` with ``legacy=True``:
:func:`csp.encodings.create_encoding` builds them (so converted checkpoints load), but
:func:`csp.encodings.list_encodings` leaves them out unless asked, and the trainer's presets and
the app do not offer them. ``python -m train convert-official`` maps the reference code's
``spa_enc_type`` values onto these and our encodings.

Units as everywhere here: inputs ``(..., 2)`` (lon, lat) in degrees; radii are wavelengths in
degrees with ``omega_s = 2*pi / lambda_s`` (see :mod:`csp.encodings`). The reference code writes
its scales as ``omega_s = 1 / r_s`` on degrees, i.e. ``lambda_s = 2*pi * r_s``.

Reference-code variants that need no entry here, because they equal one of ours exactly:

* ``gridcell`` and ``gridcellnorm`` are ``grid`` with ``lambda = 2*pi*r`` (``gridcellnorm``'s
  conversion to radians is computed after the angles and never used);
* ``theory`` is ``theory`` with ``lambda = 2*pi*r``; ``theorynorm`` multiplies degrees by
  ``pi / 180`` first, so it is ``theory`` with ``lambda = 360 * r``;
* ``naive`` with the global extent (-180, 180, -90, 90) is ``naive``.

Not convertible: ``rbf`` (its anchor points are training locations, not stored in the
checkpoint) and ``rff`` (planar random features on lon/180, lat/90 with a random phase, which
have no counterpart here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from csp.encodings import (
    PositionEncoding,
    TheoryEncoding,
    _like,
    _MultiScaleEncoding,
    _positive_int,
    register_encoding,
)

__all__ = ["GeoNetWrapEncoding", "HexagonGridEncoding", "TheoryDiagEncoding"]


@register_encoding("hexagridcell", legacy=True)
class HexagonGridEncoding(_MultiScaleEncoding):
    """The reference code's ``hexagridcell``: three phase-shifted sines per coordinate and scale.

    ``f(c, s) = [sin(omega_s c), sin(omega_s c + 2 pi / 3), sin(omega_s c + 4 pi / 3)]`` for c in
    (lon, lat) degrees, ``omega_s = 2*pi / lambda_s``. D = 6 * frequency_num. Output order:
    coordinate (lon then lat), scale s (finest first), phase: index ``c * 3S + 3s + k``.
    The reference code fixes its finest scale at r = 1 (``min_radius = 2*pi`` here) and applies
    ``act(dropout(Linear))`` after it, which a converted model runs as its one-layer MLP.
    Planar: it jumps across the antimeridian.
    """

    dims_per_scale = 6

    def __init__(
        self, frequency_num: int = 16, min_radius: float = 2 * math.pi, max_radius: float = 720 * math.pi
    ) -> None:
        super().__init__(frequency_num, min_radius, max_radius)
        self.register_buffer(
            "phases",
            torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64),
            persistent=False,
        )

    def encode(self, lonlat: Tensor) -> Tensor:
        angles = lonlat[..., :, None] * _like(self.omega, lonlat)  # (..., 2, S)
        return torch.sin(angles[..., None] + _like(self.phases, lonlat)).flatten(-3)


@register_encoding("theorydiag", legacy=True)
class TheoryDiagEncoding(PositionEncoding):
    """The reference code's ``theorydiag``: ``theory`` features times a learned block-diagonal map.

    The ``theory`` features ``(..., S, 6)`` (see :class:`csp.encodings.TheoryEncoding`) of each
    scale s are multiplied by their own learned ``post_mat[s]`` ``(6, out_dim / S)``; the blocks
    are concatenated: D = ``out_dim``, index ``s * (out_dim / S) + d``. ``post_mat`` is a
    trainable parameter (Xavier-uniform initialised, as in the reference code). The reference
    code's dropout, optional ``post_linear`` and activation after it run as the converted model's
    MLP (``num_hidden_layers = 0``). Planar, like ``theory``.
    """

    def __init__(
        self,
        frequency_num: int = 16,
        min_radius: float = 1.0,
        max_radius: float = 360.0,
        out_dim: int = 64,
    ) -> None:
        theory = TheoryEncoding(frequency_num, min_radius, max_radius)
        out_dim = _positive_int(out_dim, "theorydiag: out_dim")
        if out_dim % theory.config["frequency_num"]:
            raise ValueError(
                f"theorydiag: out_dim ({out_dim}) must be a multiple of frequency_num ({frequency_num})"
            )
        settings = {k: v for k, v in theory.config.items() if k != "name"}
        super().__init__(out_dim, {**settings, "out_dim": out_dim})
        self.theory = theory
        scales = theory.config["frequency_num"]
        self.post_mat = nn.Parameter(torch.empty(scales, 6, out_dim // scales))
        nn.init.xavier_uniform_(self.post_mat)

    def encode(self, lonlat: Tensor) -> Tensor:
        features = self.theory.encode(lonlat).unflatten(-1, (self.post_mat.shape[0], 6))
        return torch.einsum("...fs,fsd->...fd", features, self.post_mat.to(features.dtype)).flatten(-2)


@register_encoding("geo_net", legacy=True)
class GeoNetWrapEncoding(PositionEncoding):
    """The reference code's (and GeoPrior's) ``encode_cos_sin`` input of ``geo_net``.

    ``[sin(pi lon / 180), sin(pi lat / 90), cos(pi lon / 180), cos(pi lat / 90)]``. D = 4.
    Latitude is doubled (lat / 90), so both poles get the same features: our ``wrap`` uses
    ``lat`` in radians instead and keeps them apart. Continuous across the antimeridian.
    """

    def __init__(self) -> None:
        super().__init__(4, {})
        self.register_buffer(
            "scale", torch.tensor([math.pi / 180, math.pi / 90], dtype=torch.float64), persistent=False
        )

    def encode(self, lonlat: Tensor) -> Tensor:
        scaled = lonlat * _like(self.scale, lonlat)
        return torch.cat((torch.sin(scaled), torch.cos(scaled)), -1)
