"""Position encodings of (lon, lat) locations, created by name from one registry.

Every encoding maps locations ``(..., 2)`` holding (lon, lat) in DEGREES to features ``(..., D)``,
where ``D`` is the instance attribute ``output_dim``. Encodings are pure torch, vectorised,
differentiable, and compute on the input's device in the input's floating dtype. Latitude and
longitude ranges are not checked here (that would force a device sync per call); validate
coordinates where they enter the program (``csp.geo``).

Every instance records its constructor arguments, defaults included, in ``self.config`` (with
``"name"``), so a checkpoint can rebuild it::

    cfg = enc.config
    same = create_encoding(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})

Random parameters (``rbf`` anchors, ``rff`` frequencies) are drawn from a ``torch.Generator``
seeded with the ``seed`` argument and stored as persistent buffers, so they are saved in
``state_dict()``. Constants derived from the config alone (frequencies, normalisation
constants) are non-persistent buffers: they follow ``.to(device)`` but are not saved.

Multi-scale encodings share the Space2Vec wavelength schedule, in degrees::

    lambda_s = min_radius * (max_radius / min_radius) ** (s / (S - 1)),   s = 0 .. S-1

(``lambda_0 = min_radius`` when ``S = 1``) with angular frequency ``omega_s = 2*pi / lambda_s``
in radians per degree, multiplied with coordinates in degrees. Scale ``s = 0`` is the finest.
With ``max_radius = 360`` the coarsest scale makes one cycle around the globe, i.e.
``omega_{S-1} * x_deg`` equals ``x`` in radians; ``min_radius = 1`` (about 111 km) is the finest
detail the defaults resolve, which matches the resolution of the species and image data used.

Planar and spherical encodings: ``naive``, ``grid`` and ``theory`` treat (lon, lat) as a point of
the plane, as Space2Vec does; their features are not periodic in longitude and jump across the
antimeridian (lon = +-180). All other encodings are continuous across it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from csp.geo import chord_length, unit_vectors

__all__ = [
    "PositionEncoding",
    "create_encoding",
    "encoding_defaults",
    "list_encodings",
    "register_encoding",
    "resolve_encoding_kwargs",
]

_REGISTRY: dict[str, type[PositionEncoding]] = {}
_LEGACY: set[str] = set()

_E = TypeVar("_E", bound="type[PositionEncoding]")


def register_encoding(name: str, legacy: bool = False) -> Callable[[_E], _E]:
    """Class decorator: register a :class:`PositionEncoding` subclass under ``name``.

    ``legacy``: a variant kept only to run models of the CSP reference code
    (:mod:`csp.legacy_encodings`); :func:`create_encoding` builds it, :func:`list_encodings`
    lists it only when asked.

    Raises:
        ValueError: ``name`` is already registered.
        TypeError: the decorated class is not a ``PositionEncoding`` subclass.
    """

    def decorator(cls: _E) -> _E:
        if not (isinstance(cls, type) and issubclass(cls, PositionEncoding)):
            raise TypeError(f"@register_encoding({name!r}) needs a PositionEncoding subclass")
        if name in _REGISTRY:
            raise ValueError(
                f"position encoding {name!r} is already registered "
                f"(by {_REGISTRY[name].__qualname__})"
            )
        cls.name = name
        _REGISTRY[name] = cls
        if legacy:
            _LEGACY.add(name)
        return cls

    return decorator


def list_encodings(legacy: bool = False) -> list[str]:
    """Names of the registered position encodings, sorted (``legacy``: with the reference
    code's legacy variants)."""
    return sorted(name for name in _REGISTRY if legacy or name not in _LEGACY)


def _registered(name: str) -> type[PositionEncoding]:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown position encoding {name!r}; registered: {', '.join(list_encodings())} "
            f"(legacy: {', '.join(sorted(_LEGACY))})"
        )
    return _REGISTRY[name]


def encoding_defaults(name: str) -> dict[str, Any]:
    """The keyword arguments of encoding ``name`` with their defaults, read from its constructor.

    This is the one home of encoding defaults (no table elsewhere repeats them); an argument
    without a default is left out. Tuples are given as lists, the JSON form in which a config
    stores them, so the defaults compare equal to a resolved or saved configuration.
    """
    parameters = inspect.signature(_registered(name)).parameters.values()
    return {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty
    }


def resolve_encoding_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` validated by building the encoding once, with every default filled in.

    Returns the complete keyword arguments (``create_encoding(name, **result)`` rebuilds the
    same encoding), so a saved configuration says exactly which encoding it describes.

    Raises:
        ValueError: unknown ``name``, an argument the encoding does not accept, or a bad value.
    """
    config = dict(create_encoding(name, **kwargs).config)
    config.pop("name")
    return config


def create_encoding(name: str, **kwargs: Any) -> PositionEncoding:
    """Build the encoding registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered names), a keyword the
            encoding does not accept, or an invalid argument value.
    """
    cls = _registered(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(inspect.signature(cls).parameters) or "none"
        raise ValueError(
            f"position encoding {name!r}: {err}; accepted keyword arguments: {accepted}"
        ) from err
    return cls(**kwargs)


class PositionEncoding(nn.Module):
    """Base class: ``forward(lonlat)`` maps ``(..., 2)`` (lon, lat) degrees to ``(..., D)``.

    Attributes:
        name: registry name (class attribute, set by :func:`register_encoding`).
        output_dim: ``D``, the size of the last output dimension.
        config: constructor arguments with defaults filled in, plus ``"name"``.

    Subclasses call ``super().__init__(output_dim, config)`` and implement :meth:`encode`.
    """

    name: ClassVar[str] = ""

    def __init__(self, output_dim: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.config: dict[str, Any] = {"name": self.name, **config}

    def forward(self, lonlat: Tensor) -> Tensor:
        """Encode ``lonlat`` ``(..., 2)`` (lon, lat) in degrees, float; returns ``(..., D)``.

        Raises:
            ValueError: the last dimension is not 2 or the dtype is not floating point.
        """
        if not isinstance(lonlat, Tensor):
            raise ValueError(f"{self.name}: expected a torch.Tensor, got {type(lonlat).__name__}")
        if lonlat.ndim == 0 or lonlat.shape[-1] != 2:
            raise ValueError(
                f"{self.name}: expected (lon, lat) degrees of shape (..., 2), "
                f"got shape {tuple(lonlat.shape)}"
            )
        if not lonlat.is_floating_point():
            raise ValueError(f"{self.name}: expected a floating point tensor, got {lonlat.dtype}")
        return self.encode(lonlat)

    def encode(self, lonlat: Tensor) -> Tensor:
        """The encoding proper, on validated input ``(..., 2)`` degrees; returns ``(..., D)``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "name")


def _like(buffer: Tensor, x: Tensor) -> Tensor:
    """``buffer`` on ``x``'s device and in ``x``'s dtype."""
    return buffer.to(device=x.device, dtype=x.dtype)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be finite and > 0, got {value!r}")
    return float(value)


def _seed(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


# --------------------------------------------------------------------------- single scale


@register_encoding("naive")
class NaiveEncoding(PositionEncoding):
    """Scaled raw coordinates: ``[lon / 180, lat / 90]``, each in [-1, 1]. D = 2.

    Planar: lon = -180 and lon = 180 map to -1 and 1, so it jumps across the antimeridian.
    """

    def __init__(self) -> None:
        super().__init__(2, {})

    def encode(self, lonlat: Tensor) -> Tensor:
        return lonlat / _like(torch.tensor([180.0, 90.0]), lonlat)


@register_encoding("xyz")
class XYZEncoding(PositionEncoding):
    """3-D unit vector: ``[cos(lat) cos(lon), cos(lat) sin(lon), sin(lat)]``. D = 3.

    lon, lat are converted from degrees to radians. (90E, 0N) -> (0, 1, 0).
    """

    def __init__(self) -> None:
        super().__init__(3, {})

    def encode(self, lonlat: Tensor) -> Tensor:
        return unit_vectors(lonlat)


@register_encoding("wrap")
class WrapEncoding(PositionEncoding):
    """Sines and cosines of the angles: ``[sin(lon), cos(lon), sin(lat), cos(lat)]``. D = 4.

    lon, lat are converted from degrees to radians. Unlike GeoPrior's "wrap" (which uses
    ``pi * lat / 90`` and so maps both poles to the same features), latitude is not doubled.
    """

    def __init__(self) -> None:
        super().__init__(4, {})

    def encode(self, lonlat: Tensor) -> Tensor:
        rad = torch.deg2rad(lonlat)
        lon, lat = rad[..., 0], rad[..., 1]
        return torch.stack((torch.sin(lon), torch.cos(lon), torch.sin(lat), torch.cos(lat)), -1)


# --------------------------------------------------------------------------- multi-scale


def _wavelengths_deg(frequency_num: int, min_radius: float, max_radius: float) -> Tensor:
    """Space2Vec geometric wavelengths ``(S,)`` float64, degrees, finest first."""
    steps = torch.arange(frequency_num, dtype=torch.float64)
    exponent = steps / (frequency_num - 1) if frequency_num > 1 else steps
    return min_radius * (max_radius / min_radius) ** exponent


class _MultiScaleEncoding(PositionEncoding):
    """Shared set-up of multi-scale encodings: validates the scales and stores ``omega``.

    ``omega`` ``(S,)``: angular frequency ``2*pi / lambda_s`` in radians per degree (module
    docstring). ``dims_per_scale`` * S is the output size unless ``_output_dim`` is overridden.
    """

    dims_per_scale: ClassVar[int] = 0

    def __init__(self, frequency_num: int, min_radius: float, max_radius: float) -> None:
        frequency_num = _positive_int(frequency_num, f"{self.name}: frequency_num")
        min_radius = _positive_float(min_radius, f"{self.name}: min_radius (degrees)")
        max_radius = _positive_float(max_radius, f"{self.name}: max_radius (degrees)")
        if min_radius > max_radius:
            raise ValueError(
                f"{self.name}: min_radius ({min_radius}) must not exceed max_radius ({max_radius})"
            )
        super().__init__(
            self._output_dim(frequency_num),
            {"frequency_num": frequency_num, "min_radius": min_radius, "max_radius": max_radius},
        )
        wavelengths = _wavelengths_deg(frequency_num, min_radius, max_radius)
        self.register_buffer("omega", 2 * math.pi / wavelengths, persistent=False)

    def _output_dim(self, frequency_num: int) -> int:
        return self.dims_per_scale * frequency_num


@register_encoding("grid")
class GridEncoding(_MultiScaleEncoding):
    """Space2Vec-grid: multi-scale sinusoids of lon and lat, each in degrees.

    ``f(c, s) = [sin(omega_s * c), cos(omega_s * c)]`` for c in (lon, lat), with
    ``omega_s = 2*pi / lambda_s`` rad/degree (module docstring). D = 4 * frequency_num
    (128 for the default 32 scales). Output order: coordinate (lon then lat), then scale
    s = 0..S-1 (finest first), then (sin, cos): index ``c * 2S + 2s + {0: sin, 1: cos}``.

    Planar: only scales whose wavelength divides 360 degrees are periodic in longitude, so the
    encoding jumps across the antimeridian.
    """

    dims_per_scale = 4

    def __init__(
        self, frequency_num: int = 32, min_radius: float = 1.0, max_radius: float = 360.0
    ) -> None:
        super().__init__(frequency_num, min_radius, max_radius)

    def encode(self, lonlat: Tensor) -> Tensor:
        angles = lonlat[..., :, None] * _like(self.omega, lonlat)  # (..., 2, S)
        return torch.stack((torch.sin(angles), torch.cos(angles)), -1).flatten(-3)


@register_encoding("theory")
class TheoryEncoding(_MultiScaleEncoding):
    """Space2Vec-theory: sinusoids of projections on three unit directions 120 degrees apart.

    With x = (lon, lat) in degrees and a_1 = (1, 0), a_2 = (-1/2, sqrt(3)/2),
    a_3 = (-1/2, -sqrt(3)/2): ``f(s, j) = [sin(omega_s <x, a_j>), cos(omega_s <x, a_j>)]``,
    ``omega_s = 2*pi / lambda_s`` rad/degree (module docstring). D = 6 * frequency_num.
    Output order: scale s (finest first), then direction j, then (sin, cos):
    index ``6s + 2j + {0: sin, 1: cos}``.

    Planar (as in Space2Vec): the projections are not periodic in longitude, so the encoding
    jumps across the antimeridian.
    """

    dims_per_scale = 6

    def __init__(
        self, frequency_num: int = 32, min_radius: float = 1.0, max_radius: float = 360.0
    ) -> None:
        super().__init__(frequency_num, min_radius, max_radius)
        directions = torch.tensor(
            [[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]], dtype=torch.float64
        )
        self.register_buffer("directions", directions, persistent=False)

    def encode(self, lonlat: Tensor) -> Tensor:
        projections = lonlat @ _like(self.directions, lonlat).T  # (..., 3) degrees
        angles = _like(self.omega, lonlat)[:, None] * projections[..., None, :]  # (..., S, 3)
        return torch.stack((torch.sin(angles), torch.cos(angles)), -1).flatten(-3)


class _SphereTrig(NamedTuple):
    """Sines/cosines used by the Sphere2Vec family, every field ``(..., S)``.

    ``*_s`` fields are at scale s (lat_s = omega_s * lat, lon_s = k_s * lon in radians); the
    others are the angles themselves (single scale), expanded along the scale dimension.
    """

    sin_lat_s: Tensor
    cos_lat_s: Tensor
    sin_lon_s: Tensor
    cos_lon_s: Tensor
    sin_lat: Tensor
    cos_lat: Tensor
    sin_lon: Tensor
    cos_lon: Tensor


class _SphereMultiScaleEncoding(_MultiScaleEncoding):
    """Shared part of the Sphere2Vec encodings (Mai et al. 2023, ISPRS J. Photogramm.).

    Scaled angles, in radians: ``lat_s = omega_s * lat_deg`` with ``omega_s = 2*pi / lambda_s``
    (module docstring), and ``lon_s = k_s * lon_rad`` with the integer wavenumber
    ``k_s = max(1, round(360 / lambda_s))``.

    Deviation from the paper, on purpose: the paper uses ``omega_s`` for longitude too, which
    is periodic in longitude only when 360 / lambda_s is an integer, so most scales would jump
    across the antimeridian. Rounding the number of cycles around the globe to an integer makes
    every feature continuous there; latitude keeps the exact geometric schedule. With
    ``max_radius = 360`` the coarsest scale has k = 1 and omega = 1 rad/rad, so e.g. sphereC's
    coarsest block is exactly the xyz unit vector. At the poles the multi-scale terms still
    depend on longitude (a property of the paper's formulas); values and gradients stay finite.
    """

    def __init__(
        self, frequency_num: int = 32, min_radius: float = 1.0, max_radius: float = 360.0
    ) -> None:
        super().__init__(frequency_num, min_radius, max_radius)
        cycles = torch.round(self.omega * 360.0 / (2 * math.pi)).clamp_min(1.0)
        self.register_buffer("lon_wavenumber", cycles, persistent=False)

    def _trig(self, lonlat: Tensor) -> _SphereTrig:
        rad = torch.deg2rad(lonlat)
        lon, lat = rad[..., 0:1], rad[..., 1:2]  # (..., 1)
        lat_s = lonlat[..., 1:2] * _like(self.omega, lonlat)  # (..., S)
        lon_s = lon * _like(self.lon_wavenumber, lonlat)
        shape = lat_s.shape
        return _SphereTrig(
            torch.sin(lat_s),
            torch.cos(lat_s),
            torch.sin(lon_s),
            torch.cos(lon_s),
            torch.sin(lat).expand(shape),
            torch.cos(lat).expand(shape),
            torch.sin(lon).expand(shape),
            torch.cos(lon).expand(shape),
        )


@register_encoding("sphereC")
class SphereCEncoding(_SphereMultiScaleEncoding):
    """Sphere2Vec-sphereC: at each scale, the unit vector of the scaled angles.

    ``f(s) = [sin(lat_s), cos(lat_s) cos(lon_s), cos(lat_s) sin(lon_s)]`` with lat_s, lon_s in
    radians as defined in :class:`_SphereMultiScaleEncoding` (inputs in degrees).
    D = 3 * frequency_num. Output order: scale s (finest first), then the 3 terms above:
    index ``3s + i``.
    """

    dims_per_scale = 3

    def encode(self, lonlat: Tensor) -> Tensor:
        t = self._trig(lonlat)
        terms = (t.sin_lat_s, t.cos_lat_s * t.cos_lon_s, t.cos_lat_s * t.sin_lon_s)
        return torch.stack(terms, -1).flatten(-2)


@register_encoding("sphereC+")
class SphereCPlusEncoding(_SphereMultiScaleEncoding):
    """Sphere2Vec-sphereC+: sphereC combined with grid-like terms of the scaled angles.

    ``f(s) = [sin(lat_s), cos(lat_s), sin(lon_s), cos(lon_s), cos(lat_s) cos(lon_s),
    cos(lat_s) sin(lon_s)]`` with lat_s, lon_s in radians as defined in
    :class:`_SphereMultiScaleEncoding` (inputs in degrees). D = 6 * frequency_num.
    Output order: scale s (finest first), then the 6 terms above: index ``6s + i``.
    """

    dims_per_scale = 6

    def encode(self, lonlat: Tensor) -> Tensor:
        t = self._trig(lonlat)
        terms = (
            t.sin_lat_s,
            t.cos_lat_s,
            t.sin_lon_s,
            t.cos_lon_s,
            t.cos_lat_s * t.cos_lon_s,
            t.cos_lat_s * t.sin_lon_s,
        )
        return torch.stack(terms, -1).flatten(-2)


@register_encoding("sphereM")
class SphereMEncoding(_SphereMultiScaleEncoding):
    """Sphere2Vec-sphereM: products mixing one scaled angle with one single-scale angle.

    ``f(s) = [sin(lat_s), cos(lat_s) cos(lon), cos(lat) cos(lon_s), cos(lat_s) sin(lon),
    cos(lat) sin(lon_s)]`` with lat, lon the angles in radians and lat_s, lon_s as defined in
    :class:`_SphereMultiScaleEncoding` (inputs in degrees). D = 5 * frequency_num.
    Output order: scale s (finest first), then the 5 terms above: index ``5s + i``.
    """

    dims_per_scale = 5

    def encode(self, lonlat: Tensor) -> Tensor:
        t = self._trig(lonlat)
        terms = (
            t.sin_lat_s,
            t.cos_lat_s * t.cos_lon,
            t.cos_lat * t.cos_lon_s,
            t.cos_lat_s * t.sin_lon,
            t.cos_lat * t.sin_lon_s,
        )
        return torch.stack(terms, -1).flatten(-2)


@register_encoding("sphereM+")
class SphereMPlusEncoding(_SphereMultiScaleEncoding):
    """Sphere2Vec-sphereM+: sphereM combined with grid-like terms of the scaled angles.

    ``f(s) = [sin(lat_s), cos(lat_s), sin(lon_s), cos(lon_s), cos(lat_s) cos(lon),
    cos(lat) cos(lon_s), cos(lat_s) sin(lon), cos(lat) sin(lon_s)]`` with lat, lon the angles
    in radians and lat_s, lon_s as defined in :class:`_SphereMultiScaleEncoding` (inputs in
    degrees). D = 8 * frequency_num. Output order: scale s (finest first), then the 8 terms
    above: index ``8s + i``.
    """

    dims_per_scale = 8

    def encode(self, lonlat: Tensor) -> Tensor:
        t = self._trig(lonlat)
        terms = (
            t.sin_lat_s,
            t.cos_lat_s,
            t.sin_lon_s,
            t.cos_lon_s,
            t.cos_lat_s * t.cos_lon,
            t.cos_lat * t.cos_lon_s,
            t.cos_lat_s * t.sin_lon,
            t.cos_lat * t.sin_lon_s,
        )
        return torch.stack(terms, -1).flatten(-2)


@register_encoding("dfs")
class DFSEncoding(_SphereMultiScaleEncoding):
    """Sphere2Vec-dfs (double Fourier sphere): all products of lat and lon sinusoids.

    With lat_n, lon_m in radians as defined in :class:`_SphereMultiScaleEncoding` (inputs in
    degrees), the features are the single-scale block
    ``[sin(lat_s), cos(lat_s), sin(lon_s), cos(lon_s)]`` for s = 0..S-1 (index ``4s + i``),
    followed by the outer product of ``u = [sin(lon_0..lon_{S-1}), cos(lon_0..lon_{S-1})]`` and
    ``v = [sin(lat_0..lat_{S-1}), cos(lat_0..lat_{S-1})]`` (index ``4S + 2S*i + j`` holds
    ``u_i * v_j``). D = 4S + 4S^2; the default S = 8 gives 288 (S = 32 would give 4224).
    """

    def __init__(
        self, frequency_num: int = 8, min_radius: float = 1.0, max_radius: float = 360.0
    ) -> None:
        super().__init__(frequency_num, min_radius, max_radius)

    def _output_dim(self, frequency_num: int) -> int:
        return 4 * frequency_num + 4 * frequency_num**2

    def encode(self, lonlat: Tensor) -> Tensor:
        t = self._trig(lonlat)
        single = torch.stack((t.sin_lat_s, t.cos_lat_s, t.sin_lon_s, t.cos_lon_s), -1)
        lon_terms = torch.cat((t.sin_lon_s, t.cos_lon_s), -1)  # (..., 2S)
        lat_terms = torch.cat((t.sin_lat_s, t.cos_lat_s), -1)  # (..., 2S)
        products = lon_terms[..., :, None] * lat_terms[..., None, :]  # (..., 2S, 2S)
        return torch.cat((single.flatten(-2), products.flatten(-2)), -1)


@register_encoding("nerf")
class NeRFEncoding(PositionEncoding):
    """NeRF-style multi-frequency sinusoids of the unit vector (x, y, z) (see ``xyz``).

    Frequencies ``omega_l = 2^l * pi``, l = 0..L-1 (L = ``frequency_num``), applied to the
    dimensionless unit-vector coordinates; NeRF's octave schedule replaces Space2Vec's
    min/max radius here. The finest period, 2 / 2^(L-1) in chord length, is about 0.22 degrees
    of arc for the default L = 10. ``f(l) = [sin(omega_l x), sin(omega_l y), sin(omega_l z),
    cos(omega_l x), cos(omega_l y), cos(omega_l z)]``. D = 6L. Output order: level l (lowest
    frequency first), then the 6 terms above: index ``6l + i``.
    """

    def __init__(self, frequency_num: int = 10) -> None:
        frequency_num = _positive_int(frequency_num, "nerf: frequency_num")
        super().__init__(6 * frequency_num, {"frequency_num": frequency_num})
        levels = torch.arange(frequency_num, dtype=torch.float64)
        self.register_buffer("omega", math.pi * 2.0**levels, persistent=False)

    def encode(self, lonlat: Tensor) -> Tensor:
        angles = _like(self.omega, lonlat)[:, None] * unit_vectors(lonlat)[..., None, :]
        return torch.cat((torch.sin(angles), torch.cos(angles)), -1).flatten(-2)


# --------------------------------------------------------------------------- random features


@register_encoding("rbf")
class RBFEncoding(PositionEncoding):
    """Gaussian kernels centred at random anchor points drawn uniformly on the sphere.

    ``f_i = exp(-c_i^2 / (2 sigma^2))`` where ``c_i = |v - a_i|`` is the chordal distance
    between the unit vectors of the location (v) and of anchor i (a_i), and
    ``sigma = 2 sin(kernel_size / 2)`` is the chord of a great-circle arc of ``kernel_size``
    degrees (the chord is within 1% of the arc below 28 degrees, and unlike the arc it is
    smooth at c = 0). D = ``num_anchors``; output i is anchor i.

    Anchors: ``num_anchors`` normalised 3-D standard normal vectors (uniform on the sphere)
    drawn from ``torch.Generator().manual_seed(seed)``, stored as the persistent buffer
    ``anchors`` ``(num_anchors, 3)``. Defaults: 256 anchors are about 12.7 degrees apart on
    average (sqrt(4 pi / 256) rad), so a 10 degree kernel covers the globe without gaps.
    """

    def __init__(self, num_anchors: int = 256, kernel_size: float = 10.0, seed: int = 0) -> None:
        num_anchors = _positive_int(num_anchors, "rbf: num_anchors")
        kernel_size = _positive_float(kernel_size, "rbf: kernel_size (degrees)")
        seed = _seed(seed, "rbf: seed")
        super().__init__(
            num_anchors, {"num_anchors": num_anchors, "kernel_size": kernel_size, "seed": seed}
        )
        generator = torch.Generator().manual_seed(seed)
        anchors = torch.randn(num_anchors, 3, generator=generator, dtype=torch.float64)
        anchors = anchors / anchors.norm(dim=-1, keepdim=True)
        self.register_buffer("anchors", anchors.to(torch.get_default_dtype()))
        self.sigma = chord_length(math.radians(kernel_size))

    def encode(self, lonlat: Tensor) -> Tensor:
        v = unit_vectors(lonlat)
        # |v - a|^2 = 2 - 2 <v, a> for unit vectors; clamp rounding below zero.
        squared = (2.0 - 2.0 * v @ _like(self.anchors, lonlat).T).clamp_min(0.0)
        return torch.exp(-squared / (2.0 * self.sigma**2))


@register_encoding("rff")
class RFFEncoding(PositionEncoding):
    """Random Fourier features of the unit vector v = (x, y, z) (see ``xyz``).

    ``f = [cos(W v), sin(W v)]`` with ``W`` ``(num_features, 3)`` drawn from N(0, 1 / ell^2),
    ``ell = 2 sin(length_scale / 2)`` the chord of ``length_scale`` degrees of arc, so that
    ``f(v1) . f(v2) / num_features`` approximates the Gaussian kernel
    ``exp(-|v1 - v2|^2 / (2 ell^2))``. D = 2 * ``num_features``; output order: the
    ``num_features`` cosines, then the sines.

    ``W`` is drawn from ``torch.Generator().manual_seed(seed)`` and stored as the persistent
    buffer ``weight``. The default 10 degrees matches the ``rbf`` kernel size.
    """

    def __init__(
        self, num_features: int = 128, length_scale: float = 10.0, seed: int = 0
    ) -> None:
        num_features = _positive_int(num_features, "rff: num_features")
        length_scale = _positive_float(length_scale, "rff: length_scale (degrees)")
        seed = _seed(seed, "rff: seed")
        super().__init__(
            2 * num_features,
            {"num_features": num_features, "length_scale": length_scale, "seed": seed},
        )
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(num_features, 3, generator=generator, dtype=torch.float64)
        weight = weight / chord_length(math.radians(length_scale))
        self.register_buffer("weight", weight.to(torch.get_default_dtype()))

    def encode(self, lonlat: Tensor) -> Tensor:
        projections = unit_vectors(lonlat) @ _like(self.weight, lonlat).T
        return torch.cat((torch.cos(projections), torch.sin(projections)), -1)


# --------------------------------------------------------------------------- spherical harmonics


@register_encoding("spherical_harmonics")
class SphericalHarmonicsEncoding(PositionEncoding):
    """Real spherical harmonics Y_l^m of degree l = 0..L (L = ``max_degree``), as in SatCLIP.

    With colatitude theta = 90 deg - lat and azimuth phi = lon (converted to radians),
    z = cos(theta) = sin(lat), and the orthonormal associated Legendre functions
    ``Pbar_l^m(z) = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!) P_l^m(z)`` (no Condon-Shortley phase)::

        Y_l^m = sqrt(2) Pbar_l^m(z) cos(m phi)       m > 0
        Y_l^0 = Pbar_l^0(z)
        Y_l^m = sqrt(2) Pbar_l^|m|(z) sin(|m| phi)   m < 0

    so the functions are orthonormal on the unit sphere (integral of Y Y' dOmega = delta),
    Y_0^0 = 1 / (2 sqrt(pi)) and (Y_1^-1, Y_1^0, Y_1^1) = sqrt(3 / (4 pi)) (y, z, x).
    D = (L + 1)^2. Output order: degree l ascending, then m = -l..l: index ``l^2 + l + m``.
    (SatCLIP's "L = 10 Legendre polynomials" is ``max_degree = 9``.)

    Pbar is computed with the standard stable recurrences, vectorised over points and all
    orders m at once (one Python step per degree l), without any division by sin(theta)::

        Pbar_0^0 = 1 / sqrt(4 pi)
        Pbar_l^l = sqrt((2l+1) / (2l)) sin(theta) Pbar_{l-1}^{l-1}
        Pbar_l^m = a_lm (z Pbar_{l-1}^m - b_lm Pbar_{l-2}^m)                m < l
        a_lm = sqrt((4l^2 - 1) / (l^2 - m^2)),
        b_lm = sqrt(((l-1)^2 - m^2) / (4 (l-1)^2 - 1))  (0 for m = l-1)

    The coefficients are non-persistent buffers computed once in float64. The recurrence is
    accurate to float32 rounding for L >= 40, at the poles included.
    """

    def __init__(self, max_degree: int = 10) -> None:
        if isinstance(max_degree, bool) or not isinstance(max_degree, int) or max_degree < 0:
            raise ValueError(
                f"spherical_harmonics: max_degree must be an integer >= 0, got {max_degree!r}"
            )
        size = max_degree + 1
        super().__init__(size**2, {"max_degree": max_degree})
        self.max_degree = max_degree

        l_idx = torch.arange(size, dtype=torch.float64)[:, None]  # (L+1, 1)
        m_idx = torch.arange(size, dtype=torch.float64)[None, :]  # (1, L+1)
        below = m_idx < l_idx
        a = torch.where(below, (4 * l_idx**2 - 1) / (l_idx**2 - m_idx**2).clamp_min(1), 0.0)
        b_num = (l_idx - 1) ** 2 - m_idx**2
        b_den = (4 * (l_idx - 1) ** 2 - 1).clamp_min(1)
        b = torch.where(m_idx < l_idx - 1, b_num / b_den, 0.0)
        sectoral = torch.sqrt((2 * l_idx[:, 0] + 1) / (2 * l_idx[:, 0]).clamp_min(1))
        self.register_buffer("recurrence_a", a.sqrt(), persistent=False)
        self.register_buffer("recurrence_b", b.clamp_min(0).sqrt(), persistent=False)
        self.register_buffer("sectoral", sectoral, persistent=False)
        self.register_buffer("orders", torch.arange(size, dtype=torch.float64), persistent=False)

        degrees = torch.repeat_interleave(torch.arange(size), 2 * torch.arange(size) + 1)
        orders = torch.cat([torch.arange(-deg, deg + 1) for deg in range(size)])
        # Index into the flattened (l, |m|) table of Pbar and into [cos(m phi), sin(m phi)].
        self.register_buffer("legendre_index", degrees * size + orders.abs(), persistent=False)
        self.register_buffer(
            "trig_index", torch.where(orders >= 0, orders, size - orders), persistent=False
        )
        scale = torch.full(orders.shape, math.sqrt(2.0), dtype=torch.float64)
        self.register_buffer("scale", scale.masked_fill(orders == 0, 1.0), persistent=False)

    def _legendre(self, z: Tensor, sin_theta: Tensor) -> Tensor:
        """Pbar_l^m(z) for all 0 <= m <= l <= L: ``(..., L+1, L+1)`` indexed [l, m], 0 if m > l."""
        size = self.max_degree + 1
        a = _like(self.recurrence_a, z)
        b = _like(self.recurrence_b, z)
        sectoral = _like(self.sectoral, z)
        onehot = torch.eye(size, dtype=z.dtype, device=z.device)
        z, sin_theta = z[..., None], sin_theta[..., None]
        previous = torch.zeros(*z.shape[:-1], size, dtype=z.dtype, device=z.device)
        current = onehot[0] / math.sqrt(4 * math.pi) + previous
        rows = [current]
        for deg in range(1, size):
            diagonal = sectoral[deg] * sin_theta * current[..., deg - 1 : deg]
            following = a[deg] * (z * current - b[deg] * previous) + onehot[deg] * diagonal
            previous, current = current, following
            rows.append(current)
        return torch.stack(rows, -2)

    def encode(self, lonlat: Tensor) -> Tensor:
        rad = torch.deg2rad(lonlat)
        lon, lat = rad[..., 0], rad[..., 1]
        legendre = self._legendre(torch.sin(lat), torch.cos(lat)).flatten(-2)
        m_phi = lon[..., None] * _like(self.orders, lonlat)
        trig = torch.cat((torch.cos(m_phi), torch.sin(m_phi)), -1)  # (..., 2(L+1))
        return (
            legendre[..., self.legendre_index.to(lonlat.device)]
            * trig[..., self.trig_index.to(lonlat.device)]
            * _like(self.scale, lonlat)
        )


# Encodings defined in other modules register themselves on import; import them here so that a
# checkpoint naming one can be rebuilt through this registry alone: "covariates" (MODIS land
# cover) and the CSP reference code's variants (legacy=True).
from csp import covariates as _covariates  # noqa: E402, F401
from csp import legacy_encodings  # noqa: E402, F401
