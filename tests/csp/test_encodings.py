"""Tests for csp.encodings: registry, shapes/dtypes/devices, units, hand-checked values,
antimeridian continuity, spherical-harmonics accuracy, seeded buffers, config round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from csp.encodings import PositionEncoding, create_encoding, list_encodings, register_encoding

REQUIRED = {
    "naive", "xyz", "wrap", "grid", "theory", "rbf", "rff", "sphereC", "sphereC+", "sphereM",
    "sphereM+", "dfs", "nerf", "spherical_harmonics",
}  # fmt: skip
ALL = list_encodings()
PLANAR = {"naive", "grid", "theory", "covariates"}  # documented as not continuous across the antimeridian
# (covariates: its default base is grid)
SPHERICAL = [name for name in ALL if name not in PLANAR]
SEEDED = ["rbf", "rff"]
SPHERE2VEC = ["sphereC", "sphereC+", "sphereM", "sphereM+"]

# Non-default arguments for each encoding, with the output size they must give.
SMALL: dict[str, tuple[dict, int]] = {
    "naive": ({}, 2),
    "xyz": ({}, 3),
    "wrap": ({}, 4),
    "grid": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 20),
    "theory": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 30),
    "sphereC": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 15),
    "sphereC+": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 30),
    "sphereM": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 25),
    "sphereM+": ({"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0}, 40),
    "dfs": ({"frequency_num": 3, "min_radius": 2.0, "max_radius": 180.0}, 12 + 36),
    "nerf": ({"frequency_num": 4}, 24),
    "rbf": ({"num_anchors": 17, "kernel_size": 20.0, "seed": 3}, 17),
    "rff": ({"num_features": 9, "length_scale": 30.0, "seed": 3}, 18),
    "spherical_harmonics": ({"max_degree": 4}, 25),
    # grid (20) + land-cover one-hot (17) + class shares in 2-degree blocks (17)
    "covariates": (
        {
            "base": "grid",
            "base_kwargs": {"frequency_num": 5, "min_radius": 2.0, "max_radius": 180.0},
            "share_scales_deg": [2.0],
            "covariate_scale": 0.5,
        },
        54,
    ),
}


def random_lonlat(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lon = torch.rand(*shape, generator=g, dtype=dtype) * 360 - 180
    lat = torch.rad2deg(torch.asin(torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1))
    return torch.stack((lon, lat), -1)


def encode(name: str, lon: float, lat: float, **kwargs) -> torch.Tensor:
    return create_encoding(name, **kwargs)(torch.tensor([lon, lat], dtype=torch.float64))


def test_registry_holds_every_required_encoding() -> None:
    assert REQUIRED <= set(ALL)
    assert set(SMALL) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_output_dim_follows_the_arguments_and_config_round_trips(name: str) -> None:
    kwargs, dim = SMALL[name]
    enc = create_encoding(name, **kwargs)
    assert isinstance(enc, PositionEncoding)
    assert enc.output_dim == dim
    assert enc.config == {"name": name, **kwargs}
    json.dumps(enc.config)  # checkpoint metadata is JSON

    cfg = enc.config
    rebuilt = create_encoding(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
    rebuilt.load_state_dict(enc.state_dict())
    x = random_lonlat(7)
    assert torch.equal(rebuilt(x), enc(x))
    assert rebuilt.config == cfg


def test_default_grid_is_128_dimensional() -> None:
    grid = create_encoding("grid")
    assert grid.output_dim == 128  # the benchmark config relies on it
    assert grid.config == {"name": "grid", "frequency_num": 32, "min_radius": 1.0, "max_radius": 360.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_and_device(name: str, dtype: torch.dtype) -> None:
    enc = create_encoding(name)
    out = enc(random_lonlat(3, 5, dtype=dtype))
    assert out.shape == (3, 5, enc.output_dim)
    assert out.dtype == dtype
    assert out.device.type == "cpu"
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_runs_on_cuda(name: str) -> None:
    enc = create_encoding(name).cuda()
    x = random_lonlat(4, dtype=torch.float32)
    out = enc(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), enc.cpu()(x), atol=1e-4, rtol=1e-4)


POLES_AND_ANTIMERIDIAN = [
    (0.0, 90.0), (0.0, -90.0), (123.0, 90.0), (-57.0, -90.0), (180.0, 0.0), (-180.0, 0.0),
    (180.0, 90.0), (-180.0, -90.0), (180.0, 45.0), (-180.0, -33.0),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_finite_values_and_gradients_at_poles_and_antimeridian(
    name: str, dtype: torch.dtype
) -> None:
    enc = create_encoding(name)
    x = torch.tensor(POLES_AND_ANTIMERIDIAN, dtype=dtype, requires_grad=True)
    out = enc(x)
    assert torch.isfinite(out).all()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_radians_give_a_different_encoding(name: str) -> None:
    enc = create_encoding(name)
    degrees = torch.tensor([[90.0, 0.0], [-45.0, 30.0], [120.0, -60.0]], dtype=torch.float64)
    assert not torch.allclose(enc(degrees), enc(torch.deg2rad(degrees)), atol=1e-3)


# --------------------------------------------------------------------------- hand values

R2, R3 = math.sqrt(2) / 2, math.sqrt(3) / 2


@pytest.mark.parametrize(
    ("name", "lon", "lat", "expected"),
    [
        ("naive", 90.0, 0.0, [0.5, 0.0]),
        ("naive", -180.0, 45.0, [-1.0, 0.5]),
        ("xyz", 90.0, 0.0, [0.0, 1.0, 0.0]),
        ("xyz", 0.0, 45.0, [R2, 0.0, R2]),
        ("xyz", 180.0, -90.0, [0.0, 0.0, -1.0]),
        ("wrap", 90.0, 0.0, [1.0, 0.0, 0.0, 1.0]),
        ("wrap", -90.0, 60.0, [-1.0, 0.0, R3, 0.5]),
        ("nerf", 90.0, 0.0, [0, 0, 0, 1, -1, 1, 0, 0, 0, 1, 1, 1]),  # L = 2: omega = pi, 2 pi
    ],
)
def test_hand_checked_values(name: str, lon: float, lat: float, expected: list[float]) -> None:
    kwargs = {"frequency_num": 2} if name == "nerf" else {}
    out = encode(name, lon, lat, **kwargs)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_grid_first_and_last_scale_by_hand() -> None:
    out = encode("grid", 90.25, -45.5)  # S = 32, wavelengths 1 .. 360 degrees
    assert out.shape == (128,)
    lon_finest, lon_coarsest = out[0:2], out[62:64]
    lat_finest, lat_coarsest = out[64:66], out[126:128]
    # 1 degree wavelength: 90.25 cycles -> quarter turn; -45.5 cycles -> half turn.
    torch.testing.assert_close(lon_finest, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(lat_finest, torch.tensor([0.0, -1.0], dtype=torch.float64))
    # 360 degree wavelength: the angles themselves, in radians.
    a, b = math.radians(90.25), math.radians(-45.5)
    torch.testing.assert_close(lon_coarsest, torch.tensor([math.sin(a), math.cos(a)]).double())
    torch.testing.assert_close(lat_coarsest, torch.tensor([math.sin(b), math.cos(b)]).double())


def test_theory_by_hand() -> None:
    lon, lat = 90.0, 30.0
    out = encode("theory", lon, lat, frequency_num=2, min_radius=180.0, max_radius=360.0)
    projections = [lon, -0.5 * lon + R3 * lat, -0.5 * lon - R3 * lat]
    expected = []
    for wavelength in (180.0, 360.0):
        for p in projections:
            angle = 2 * math.pi * p / wavelength
            expected += [math.sin(angle), math.cos(angle)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def sphere2vec_terms(name: str, lat_s: float, lon_s: float, lat: float, lon: float) -> list:
    """The per-scale terms of the Sphere2Vec paper, in the documented order (radians)."""
    sin, cos = math.sin, math.cos
    c = [sin(lat_s), cos(lat_s) * cos(lon_s), cos(lat_s) * sin(lon_s)]
    grid = [sin(lat_s), cos(lat_s), sin(lon_s), cos(lon_s)]
    m = [
        sin(lat_s), cos(lat_s) * cos(lon), cos(lat) * cos(lon_s),
        cos(lat_s) * sin(lon), cos(lat) * sin(lon_s),
    ]  # fmt: skip
    return {
        "sphereC": c,
        "sphereC+": grid + c[1:],
        "sphereM": m,
        "sphereM+": grid + m[1:],
    }[name]


@pytest.mark.parametrize("name", SPHERE2VEC)
def test_sphere2vec_at_90e_by_hand(name: str) -> None:
    # Wavelengths 180 and 360 degrees: latitude 30 -> 60 and 30 degrees, longitude 90 -> 2 and
    # 1 whole cycles per turn -> 180 and 90 degrees.
    out = encode(name, 90.0, 30.0, frequency_num=2, min_radius=180.0, max_radius=360.0)
    lat, lon = math.radians(30), math.radians(90)
    expected = sphere2vec_terms(name, math.radians(60), math.radians(180), lat, lon)
    expected += sphere2vec_terms(name, math.radians(30), math.radians(90), lat, lon)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_sphere2vec_rounds_longitude_cycles_to_integers() -> None:
    # Wavelength 100 degrees: latitude uses 360/100 = 3.6 cycles, longitude round(3.6) = 4.
    out = encode("sphereC", 50.0, 20.0, frequency_num=2, min_radius=100.0, max_radius=360.0)
    lat_s, lon_s = 2 * math.pi * 20.0 / 100.0, 4 * math.radians(50.0)
    torch.testing.assert_close(
        out[:3], torch.tensor(sphere2vec_terms("sphereC", lat_s, lon_s, 0, 0), dtype=torch.float64)
    )


def test_sphere_c_coarsest_scale_is_the_unit_vector() -> None:
    x = random_lonlat(20)
    coarsest = create_encoding("sphereC")(x)[..., -3:]  # max_radius = 360
    torch.testing.assert_close(coarsest, create_encoding("xyz")(x)[..., [2, 0, 1]])


def test_dfs_by_hand() -> None:
    out = encode("dfs", 90.0, 30.0, frequency_num=2, min_radius=180.0, max_radius=360.0)
    lats, lons = [math.radians(60), math.radians(30)], [math.radians(180), math.radians(90)]
    single = []
    for lat_s, lon_s in zip(lats, lons, strict=True):
        single += [math.sin(lat_s), math.cos(lat_s), math.sin(lon_s), math.cos(lon_s)]
    u = [math.sin(v) for v in lons] + [math.cos(v) for v in lons]
    v = [math.sin(w) for w in lats] + [math.cos(w) for w in lats]
    expected = single + [ui * vj for ui in u for vj in v]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_rbf_peaks_at_its_anchors_with_the_documented_width() -> None:
    enc = create_encoding("rbf", num_anchors=8, kernel_size=10.0, seed=1)
    a = enc.anchors.double()  # stored in float32: unit length to ~1e-7
    lonlat = torch.rad2deg(torch.stack((torch.atan2(a[:, 1], a[:, 0]), torch.asin(a[:, 2])), -1))
    out = enc(lonlat)
    torch.testing.assert_close(out.diagonal(), torch.ones(8, dtype=torch.float64), atol=1e-5, rtol=0)
    assert (out - torch.diag(out.diagonal())).max() < 1 - 1e-3
    # A point 10 degrees of arc north of an equatorial anchor: exp(-1/2) by construction.
    equatorial = create_encoding("rbf", num_anchors=1, seed=1)
    equatorial.anchors.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(
        equatorial(torch.tensor([[0.0, 10.0]], dtype=torch.float64)),
        torch.tensor([[math.exp(-0.5)]], dtype=torch.float64),
    )


# --------------------------------------------------------------------------- antimeridian


@pytest.mark.parametrize("name", SPHERICAL)
def test_spherical_encodings_are_continuous_across_the_antimeridian(name: str) -> None:
    enc = create_encoding(name)
    lats = torch.tensor([-89.9, -60.0, -12.5, 0.0, 33.3, 75.0, 89.9], dtype=torch.float64)

    def at(lon: float) -> torch.Tensor:
        return enc(torch.stack((torch.full_like(lats, lon), lats), -1))

    # 0.0002 degrees apart: the finest default scales move by < 1e-2 over that distance.
    torch.testing.assert_close(at(179.9999), at(-179.9999), atol=1e-2, rtol=0)
    torch.testing.assert_close(at(180.0), at(-180.0), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", sorted(PLANAR))
def test_planar_encodings_jump_across_the_antimeridian(name: str) -> None:
    enc = create_encoding(name)
    east = enc(torch.tensor([179.9999, 20.0], dtype=torch.float64))
    west = enc(torch.tensor([-179.9999, 20.0], dtype=torch.float64))
    assert (east - west).abs().max() > 0.5


# --------------------------------------------------------------------------- spherical harmonics


def test_spherical_harmonics_low_degrees_by_hand() -> None:
    x = random_lonlat(50)
    out = create_encoding("spherical_harmonics", max_degree=2)(x)
    px, py, pz = create_encoding("xyz")(x).unbind(-1)
    torch.testing.assert_close(out[:, 0], torch.full_like(px, 1 / (2 * math.sqrt(math.pi))))
    c1 = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(out[:, 1:4], c1 * torch.stack((py, pz, px), -1))
    c2 = math.sqrt(15 / (4 * math.pi))
    expected_l2 = torch.stack(
        (
            c2 * px * py,
            c2 * py * pz,
            math.sqrt(5 / (16 * math.pi)) * (3 * pz**2 - 1),
            c2 * px * pz,
            c2 / 2 * (px**2 - py**2),
        ),
        -1,
    )
    torch.testing.assert_close(out[:, 4:9], expected_l2)


def test_spherical_harmonics_match_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    if not hasattr(special, "sph_harm_y"):
        pytest.skip("scipy without sph_harm_y")
    big_l = 12
    x = random_lonlat(40, seed=5)
    out = create_encoding("spherical_harmonics", max_degree=big_l)(x).numpy()
    theta = np.radians(90.0 - x[:, 1].numpy())
    phi = np.radians(x[:, 0].numpy()) % (2 * np.pi)
    column = 0
    for ell in range(big_l + 1):
        for m in range(-ell, ell + 1):
            # scipy's complex Y includes the Condon-Shortley phase (-1)^m; ours does not.
            y = special.sph_harm_y(ell, abs(m), theta, phi) * (-1) ** abs(m)
            if m > 0:
                expected = math.sqrt(2) * y.real
            elif m < 0:
                expected = math.sqrt(2) * y.imag
            else:
                expected = y.real
            np.testing.assert_allclose(out[:, column], expected, atol=1e-10)
            column += 1


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_spherical_harmonics_are_orthonormal(dtype: torch.dtype, tol: float) -> None:
    big_l = 20
    # Gauss-Legendre in z = sin(lat) times equal steps in longitude is exact for products of
    # harmonics up to degree 2L when it has > L nodes in z and > 2L steps in longitude.
    z, weights = np.polynomial.legendre.leggauss(big_l + 2)
    n_lon = 2 * big_l + 3
    lon = torch.arange(n_lon, dtype=torch.float64) * (360.0 / n_lon) - 180.0
    lat = torch.rad2deg(torch.asin(torch.from_numpy(z)))
    grid = torch.stack(torch.meshgrid(lon, lat, indexing="ij"), -1).reshape(-1, 2)
    w = (torch.from_numpy(weights)[None, :] * (2 * math.pi / n_lon)).expand(n_lon, -1).reshape(-1)
    y = create_encoding("spherical_harmonics", max_degree=big_l)(grid.to(dtype)).double()
    gram = y.T @ (w[:, None] * y)
    assert gram.shape == ((big_l + 1) ** 2,) * 2
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spherical_harmonics_stable_near_the_poles_at_degree_40(dtype: torch.dtype) -> None:
    big_l = 40
    lats = [89.9999, -89.9999, 90.0, -90.0, 89.0, -45.0, 0.0]
    x = torch.tensor([[lon, lat] for lat in lats for lon in (-180.0, -37.0, 0.0, 151.0)])
    enc = create_encoding("spherical_harmonics", max_degree=big_l)
    out = enc(x.to(dtype)).double()
    assert torch.isfinite(out).all()
    # Unsold's theorem: sum over m of Y_l^m(x)^2 = (2l + 1) / (4 pi) at every point.
    degrees = torch.repeat_interleave(torch.arange(big_l + 1), 2 * torch.arange(big_l + 1) + 1)
    per_degree = torch.zeros(x.shape[0], big_l + 1, dtype=torch.float64)
    per_degree.index_add_(1, degrees, out**2)
    expected = (2 * torch.arange(big_l + 1, dtype=torch.float64) + 1) / (4 * math.pi)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(per_degree, expected.expand_as(per_degree), rtol=tol, atol=tol)
    # At the poles only m = 0 survives: Y_l^0 = (+-1)^l sqrt((2l+1)/(4 pi)).
    zonal = torch.arange(big_l + 1) * (torch.arange(big_l + 1) + 1)  # columns with m = 0
    north = out[8:12][:, zonal]  # rows with lat = 90
    torch.testing.assert_close(north, expected.sqrt().expand_as(north), rtol=tol, atol=tol)
    if dtype == torch.float32:
        reference = enc(x.double())
        torch.testing.assert_close(out, reference, atol=2e-4, rtol=0)


# --------------------------------------------------------------------------- seeds and buffers


@pytest.mark.parametrize(("name", "buffer"), [("rbf", "anchors"), ("rff", "weight")])
def test_random_parameters_are_seeded_buffers(name: str, buffer: str) -> None:
    first, same, other = (create_encoding(name, seed=s) for s in (7, 7, 8))
    assert buffer in first.state_dict()
    assert torch.equal(first.state_dict()[buffer], same.state_dict()[buffer])
    assert not torch.allclose(first.state_dict()[buffer], other.state_dict()[buffer])
    x = random_lonlat(10)
    assert torch.equal(first(x), same(x))
    assert not torch.allclose(first(x), other(x))


def test_rbf_anchors_are_uniform_on_the_sphere() -> None:
    anchors = create_encoding("rbf", num_anchors=4000, seed=0).anchors.double()
    torch.testing.assert_close(anchors.norm(dim=-1), torch.ones(4000, dtype=torch.float64))
    # Uniform on the sphere: mean ~ 0 and z = sin(lat) uniform on [-1, 1] (Archimedes).
    assert anchors.mean(0).abs().max() < 0.05
    counts = torch.histc(anchors[:, 2], bins=4, min=-1, max=1)
    assert ((counts - 1000).abs() < 100).all()


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_the_registered_names() -> None:
    with pytest.raises(ValueError, match="unknown position encoding 'hexagon'.*sphereC"):
        create_encoding("hexagon")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("grid", {"frequency_num": 0}),
        ("grid", {"frequency_num": 2.5}),
        ("theory", {"min_radius": 0.0}),
        ("sphereC", {"min_radius": 400.0, "max_radius": 360.0}),
        ("sphereM", {"max_radius": float("inf")}),
        ("nerf", {"frequency_num": -1}),
        ("rbf", {"kernel_size": -5.0}),
        ("rbf", {"seed": "zero"}),
        ("rff", {"num_features": 0}),
        ("spherical_harmonics", {"max_degree": -1}),
        ("xyz", {"frequency_num": 4}),
        ("grid", {"min_radius_deg": 1.0}),
    ],
)
def test_bad_arguments_raise_value_error(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=name.rstrip("+")):
        create_encoding(name, **kwargs)


@pytest.mark.parametrize(
    "bad", [torch.zeros(4, 3), torch.zeros(()), torch.zeros(4, 2, dtype=torch.int64)]
)
def test_bad_input_raises_value_error(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="grid"):
        create_encoding("grid")(bad)


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_encoding("grid")
        class Another(PositionEncoding):
            pass
