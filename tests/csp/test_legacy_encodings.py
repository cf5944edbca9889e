"""The reference code's legacy encodings and contsoftmaxsym's sum (the MLP options they need:
tests/csp/test_models.py)."""

from __future__ import annotations

import math

import pytest
import torch

from csp.encodings import create_encoding, list_encodings
from csp.losses import CSPLossConfig, info_nce

LEGACY = ("geo_net", "hexagridcell", "theorydiag")


def test_legacy_entries_share_the_registry_but_stay_out_of_the_default_list() -> None:
    assert set(LEGACY) <= set(list_encodings(legacy=True))
    assert not set(LEGACY) & set(list_encodings())
    with pytest.raises(ValueError, match=r"legacy: geo_net, hexagridcell, theorydiag"):
        create_encoding("theorynorm")


@pytest.mark.parametrize("name", LEGACY)
def test_config_round_trips_with_the_weights(name: str) -> None:
    encoding = create_encoding(name)
    config = {k: v for k, v in encoding.config.items() if k != "name"}
    rebuilt = create_encoding(name, **config)
    rebuilt.load_state_dict(encoding.state_dict())
    x = torch.tensor([[10.0, 20.0], [-179.0, -89.0], [180.0, 90.0]], dtype=torch.float64)
    out = encoding.double()(x)
    assert out.shape == (3, encoding.output_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(rebuilt.double()(x), out)


def test_geo_net_doubles_latitude_so_both_poles_look_alike() -> None:
    encoding = create_encoding("geo_net")
    out = encoding(torch.tensor([[90.0, 45.0], [0.0, 90.0], [0.0, -90.0]], dtype=torch.float64))
    torch.testing.assert_close(out[0], torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], out[2])


def test_hexagridcell_phases_by_hand() -> None:
    encoding = create_encoding(
        "hexagridcell", frequency_num=2, min_radius=2 * math.pi, max_radius=4 * math.pi
    )
    lon, lat = 0.3, -0.7
    out = encoding(torch.tensor([lon, lat], dtype=torch.float64))
    expected = [
        math.sin(c * w + k * 2 * math.pi / 3) for c in (lon, lat) for w in (1.0, 0.5) for k in range(3)
    ]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_theorydiag_is_block_diagonal_over_scales() -> None:
    encoding = create_encoding("theorydiag", frequency_num=2, out_dim=4).double()
    assert list(encoding.state_dict()) == ["post_mat"] and encoding.post_mat.requires_grad
    x = torch.tensor([[12.0, -30.0]], dtype=torch.float64)
    theory = create_encoding("theory", frequency_num=2)(x).view(2, 6)
    expected = torch.cat([theory[s] @ encoding.post_mat[s] for s in range(2)])
    torch.testing.assert_close(encoding(x)[0], expected)
    with pytest.raises(ValueError, match="multiple of frequency_num"):
        create_encoding("theorydiag", frequency_num=3, out_dim=4)


def test_symmetric_info_nce_sums_or_averages() -> None:
    q, k = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.randn(5, 3)
    one_way = info_nce(q, k, 0.5)
    both = info_nce(q, k, 0.5, symmetric=True, reduction="sum")
    torch.testing.assert_close(info_nce(q, k, 0.5, symmetric=True), 0.5 * both)
    assert both > one_way
    with pytest.raises(ValueError, match="symmetric_reduction"):
        CSPLossConfig(symmetric_reduction="max")
