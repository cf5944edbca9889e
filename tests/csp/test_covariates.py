"""MODIS land-cover lookup at hand-checked pixels (antimeridian, poles) and the covariate encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csp.covariates import (
    CovariateEncoding,
    LandCover,
    bilinear,
    cell_index,
    class_shares,
    read_landcover,
)
from csp.encodings import create_encoding
from csp.models import LocationEncoder, LocationEncoderConfig


def test_cell_index_wraps_the_antimeridian_and_clamps_the_poles():
    lonlat = torch.tensor([[-180.0, 90.0], [180.0, -90.0], [179.99, 89.99], [-179.96, -89.96], [0.0, 0.0]])
    row, col = cell_index(lonlat, 3600, 7200)
    assert row.tolist() == [0, 3599, 0, 3599, 1800]
    assert col.tolist() == [0, 0, 7199, 0, 3600]


def test_raster_classes_at_hand_checked_pixels():
    classes = read_landcover()
    assert classes.shape == (3600, 7200) and classes.max() <= 16
    cover = LandCover(())
    points = torch.tensor([[-180.0, 90.0], [180.0, -90.0], [179.999, 0.0], [2.3522, 48.8566], [-150.0, 0.0]])
    got = cover.class_at(points).tolist()
    # Pixel [row, col] covers lon [-180 + 0.05 col, ...), lat (90 - 0.05 (row + 1), 90 - 0.05 row].
    assert got[:3] == [int(classes[0, 0]), int(classes[3599, 0]), int(classes[1800, 7199])]
    assert got[3] == 13  # central Paris: urban and built-up
    assert got[4] == 0  # mid-Pacific: water
    assert got[1] == 0  # the product has no data poleward of about 85 S: its fill reads as water
    assert int(cover.class_at(torch.tensor([[0.0, -80.0]]))[0]) == 15  # Antarctica: snow and ice


def test_bilinear_by_hand_across_the_antimeridian_and_at_the_poles():
    # A 2 x 4 grid of 90 degree cells: centres at lon -135, -45, 45, 135 and lat 45, -45.
    grid = torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]])[..., None]
    at = torch.tensor([[180.0, 45.0], [-180.0, 45.0], [-90.0, 0.0], [135.0, 90.0], [-135.0, -90.0]])
    got = bilinear(grid, at)[:, 0].tolist()
    # lon 180 lies halfway between the centres at 135 (value 3) and -135 (value 0).
    assert got == pytest.approx([1.5, 1.5, 5.5, 3.0, 10.0])


def test_class_shares_by_hand():
    classes = np.array([[0, 1, 2, 2], [1, 1, 2, 3]])
    shares = class_shares(classes, 2, num_classes=4)
    assert shares.shape == (1, 2, 4)
    assert shares[0, 0].tolist() == [0.25, 0.75, 0.0, 0.0]
    assert shares[0, 1].tolist() == [0.0, 0.0, 0.75, 0.25]
    with pytest.raises(ValueError, match="divide"):
        class_shares(classes, 3)


def test_covariate_encoding_is_rebuilt_from_its_config_without_saving_the_raster():
    encoding = create_encoding("covariates", base="wrap", share_scales_deg=[0.5])
    assert isinstance(encoding, CovariateEncoding)
    assert encoding.output_dim == 4 + 17 * 2
    points = torch.tensor([[2.3522, 48.8566], [-60.0, -3.0]])
    features = encoding(points)
    assert features[:, 4:21].sum(1).tolist() == [1.0, 1.0]  # one-hot
    assert features[:, 21:].sum(1).tolist() == pytest.approx([1.0, 1.0])  # shares
    config = {k: v for k, v in encoding.config.items() if k != "name"}
    assert torch.equal(create_encoding("covariates", **config)(points), features)
    model = LocationEncoder(
        LocationEncoderConfig(encoding="covariates", encoding_kwargs=config, num_classes=3)
    )
    assert not any("classes" in k or "shares" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="base"):
        create_encoding("covariates", base="covariates")
