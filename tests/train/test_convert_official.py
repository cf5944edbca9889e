"""``python -m train convert-official``: reference-code checkpoints -> our model directories.

The checkpoints here are written with the module layout and parameter names of the CSP
reference code (github.com/gengchenmai/csp, ``main/models.py``, ``main/module.py``,
``main/SpatialRelationEncoder.py``; its ``Trainer.save_model`` dict), with random weights. The
expected outputs are computed with the reference code's formulas, written out below in numpy
(float64), and our converted models must reproduce them to 1e-5.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import erf
from torch import nn

import csp
from csp.checkpoint import load_checkpoint
from train.cli import main
from train.convert_official import ConversionError, convert_official

PLACES = np.array(
    [[36.82, -1.29], [2.35, 48.85], [151.21, -33.87], [-179.5, 64.2], [0.0, -89.0], [-74.0, 40.7]]
)  # (lon, lat) degrees
TOL = 1e-5


# --------------------------------------------------------------------------- reference layout


class SingleFeedForwardNN(nn.Module):
    def __init__(self, i: int, o: int, layer_norm: bool) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(o) if layer_norm else None
        self.linear = nn.Linear(i, o)


class MultiLayerFeedForwardNN(nn.Module):
    def __init__(self, sizes: list[int], layer_norm: bool) -> None:
        super().__init__()
        last = len(sizes) - 2
        self.layers = nn.ModuleList(
            SingleFeedForwardNN(a, b, layer_norm and i < last)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )


class SpatialRelationEncoder(nn.Module):
    """Any of its ``*SpatialRelationEncoder`` classes: the ffn, post_linear and/or post_mat."""

    def __init__(self, ffn=None, post_linear=None, post_mat=None) -> None:
        super().__init__()
        self.ffn = ffn
        if post_mat is not None:
            self.post_mat = nn.Parameter(post_mat)
            self.register_parameter("spa_postmat", self.post_mat)
        if post_linear is not None:
            self.post_linear = post_linear


class LocationEncoder(nn.Module):
    def __init__(self, spa_enc: nn.Module, num_filts: int, num_classes: int, num_users: int) -> None:
        super().__init__()
        self.spa_enc = spa_enc
        self.class_emb = nn.Linear(num_filts, num_classes, bias=False)
        self.user_emb = nn.Linear(num_filts, num_users, bias=False)


class ResLayer(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(size, size), nn.Linear(size, size)


class FCNet(nn.Module):
    def __init__(self, num_inputs: int, num_classes: int, num_filts: int, num_users: int) -> None:
        super().__init__()
        self.class_emb = nn.Linear(num_filts, num_classes, bias=False)
        self.user_emb = nn.Linear(num_filts, num_users, bias=False)
        self.feats = nn.Sequential(
            nn.Linear(num_inputs, num_filts), nn.ReLU(), *[ResLayer(num_filts) for _ in range(4)]
        )


class LocationImageEncoder(nn.Module):
    def __init__(self, loc_enc: nn.Module, cnn_feat_dim: int, num_filts: int, geo_net: bool = False) -> None:
        super().__init__()
        self.loc_enc = loc_enc
        self.spa_enc = loc_enc if geo_net else loc_enc.spa_enc
        self.class_emb, self.user_emb = loc_enc.class_emb, loc_enc.user_emb
        self.img_dec = nn.Linear(cnn_feat_dim, num_filts)


def _randomise(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(max(tensor.shape[-1], 1)))


def official_params(spa_enc_type: str, **changes) -> dict:
    """The reference trainer's params dict (after ``update_params``), numpy scalars included."""
    params = {
        "dataset": "fmow", "spa_enc_type": spa_enc_type, "frequency_num": 4, "max_radius": 360.0,
        "min_radius": 0.1, "num_hidden_layer": 1, "hidden_dim": 24, "num_filts": 16, "spa_f_act": "leakyrelu",
        "dropout": 0.5, "use_layn": True, "skip_connection": True, "spa_enc_use_postmat": True,
        "freq_init": "geometric", "map_range": [-180, 180, -90, 90], "loc_encode": "encode_cos_sin",
        "use_date_feats": False, "unsuper_loss": "contsoftmax", "unsuper_temp_inbatch": 20.0,
        "num_classes": np.int64(5), "num_users": 3, "rbf_anchor_pt_ids": [np.int64(7), np.int64(11)],
        "device": "cpu", "unsuper_model_file_name": "../model_dir/model_fmow_UNSUPER-contsoftmax.pth.tar",
    }  # fmt: skip
    return params | changes


def write_official(path: Path, model: nn.Module, params: dict) -> Path:
    """``torch.save`` the dict of the reference ``Trainer.save_model``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.save(
        {"epoch": 3, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "params": params},
        path,
    )
    return path


# --------------------------------------------------------------------------- reference formulas


def _freq_list(params: dict) -> np.ndarray:
    S, lo, hi = params["frequency_num"], params["min_radius"], params["max_radius"]
    return 1.0 / (lo * np.exp(np.arange(S) * math.log(hi / lo) / (S - 1)))


def _gridcell(coords: np.ndarray, params: dict) -> np.ndarray:
    angles = coords[:, :, None, None] * _freq_list(params)[None, None, :, None] * np.ones(2)
    angles[..., 0], angles[..., 1] = np.sin(angles[..., 0]), np.cos(angles[..., 1])
    return angles.reshape(len(coords), -1)


def _theory_angles(coords: np.ndarray, params: dict) -> np.ndarray:
    units = np.array([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
    angle = np.repeat(coords @ units.T, 2, axis=1)  # (B, 6): a1 a1 a2 a2 a3 a3
    spr = angle[:, None, :] * _freq_list(params)[None, :, None]  # (B, S, 6)
    spr[..., 0::2], spr[..., 1::2] = np.sin(spr[..., 0::2]), np.cos(spr[..., 1::2])
    return spr


def _hexagridcell(coords: np.ndarray, params: dict) -> np.ndarray:
    S, hi = params["frequency_num"], params["max_radius"]
    angle = coords[:, :, None] / hi ** (np.arange(S) / (S - 1))  # (B, 2, S)
    return np.stack([np.sin(angle + k * 2 * math.pi / 3) for k in range(3)], -1).reshape(len(coords), -1)


def _act(name: str, x: np.ndarray) -> np.ndarray:
    return {
        "leakyrelu": lambda v: np.where(v > 0, v, 0.2 * v),
        "relu": lambda v: np.maximum(v, 0),
        "gelu": lambda v: 0.5 * v * (1 + erf(v / math.sqrt(2))),
    }[name](x)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def _ffn(x: np.ndarray, ffn: MultiLayerFeedForwardNN, params: dict) -> np.ndarray:
    for i, layer in enumerate(ffn.layers):
        hidden = i < len(ffn.layers) - 1  # the last layer has neither skip connection nor LayerNorm
        y = _act(params["spa_f_act"], x @ _np(layer.linear.weight).T + _np(layer.linear.bias))
        if params["skip_connection"] and hidden and y.shape == x.shape:
            y = y + x
        if layer.layernorm is not None:
            mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
            y = (y - mean) / np.sqrt(var + 1e-5) * _np(layer.layernorm.weight) + _np(layer.layernorm.bias)
        x = y
    return x


def reference_embedding(model: nn.Module, params: dict) -> np.ndarray:
    """The reference LocationEncoder's ``forward(x, return_feats=True)`` at PLACES."""
    kind, coords = params["spa_enc_type"], PLACES.astype(np.float64)
    if kind == "geo_net":
        x = np.concatenate([np.sin(math.pi * coords / [180, 90]), np.cos(math.pi * coords / [180, 90])], 1)
        stem = model.feats[0]
        x = np.maximum(x @ _np(stem.weight).T + _np(stem.bias), 0)
        for block in model.feats[2:]:
            y = np.maximum(x @ _np(block.w1.weight).T + _np(block.w1.bias), 0)
            x = x + np.maximum(y @ _np(block.w2.weight).T + _np(block.w2.bias), 0)
        return x
    spa = model.spa_enc
    if kind == "gridcell":
        return _ffn(_gridcell(coords, params), spa.ffn, params)
    if kind == "theorynorm":
        return _ffn(_theory_angles(coords * math.pi / 180, params).reshape(len(coords), -1), spa.ffn, params)
    if kind == "hexagridcell":
        x = _hexagridcell(coords, params) @ _np(spa.post_linear.weight).T + _np(spa.post_linear.bias)
        return _act(params["spa_f_act"], x)
    if kind == "theorydiag":
        blocks = np.einsum("bfs,fsd->bfd", _theory_angles(coords, params), _np(spa.post_mat)).reshape(
            len(coords), -1
        )
        return _act(params["spa_f_act"], blocks @ _np(spa.post_linear.weight).T + _np(spa.post_linear.bias))
    raise AssertionError(kind)


def reference_prior(model: nn.Module, embedding: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-embedding @ _np(model.class_emb.weight).T))


# --------------------------------------------------------------------------- builders


def _ffn_model(params: dict, in_dim: int) -> MultiLayerFeedForwardNN:
    hidden = [params["hidden_dim"]] * params["num_hidden_layer"]
    return MultiLayerFeedForwardNN([in_dim, *hidden, params["num_filts"]], params["use_layn"])


def build_official(params: dict, seed: int = 0) -> nn.Module:
    """A reference ``LocationEncoder`` (or ``FCNet``) of ``params['spa_enc_type']``."""
    kind, S, F = params["spa_enc_type"], params["frequency_num"], params["num_filts"]
    C, U = int(params["num_classes"]), params["num_users"]
    if kind == "geo_net":
        model = FCNet(4, C, F, U)
    elif kind == "hexagridcell":
        model = LocationEncoder(SpatialRelationEncoder(post_linear=nn.Linear(6 * S, F)), F, C, U)
    elif kind == "theorydiag":
        spa = SpatialRelationEncoder(post_linear=nn.Linear(F, F), post_mat=torch.zeros(S, 6, F // S))
        model = LocationEncoder(spa, F, C, U)
    else:
        in_dim = 4 * S if kind == "gridcell" else 6 * S
        model = LocationEncoder(SpatialRelationEncoder(ffn=_ffn_model(params, in_dim)), F, C, U)
    _randomise(model, seed)
    return model.eval()


# --------------------------------------------------------------------------- tests


def test_gridcell_image_model_round_trips_to_the_reference_formulas(tmp_path: Path) -> None:
    params = official_params("gridcell")
    loc_enc = build_official(params)
    model = LocationImageEncoder(loc_enc, cnn_feat_dim=10, num_filts=params["num_filts"])
    _randomise(model.img_dec, 1)
    path = write_official(tmp_path / "model_fmow_gridcell_contsoftmax_ratio0.050.pth.tar", model, params)
    names = [f"class {i}" for i in range(5)]
    converted = convert_official(path, tmp_path / "out", class_names=names)
    assert converted.stage == "finetune" and converted.prior is not None and converted.csp is not None

    embedding = reference_embedding(loc_enc, params)
    predictor = csp.from_pretrained(tmp_path / "out", load_image_encoder=False)
    assert predictor.class_names == names
    np.testing.assert_allclose(predictor.embed(PLACES, which="prior"), embedding, atol=TOL, rtol=0)
    np.testing.assert_allclose(predictor.embed(PLACES, which="csp"), embedding, atol=TOL, rtol=0)
    scores = reference_prior(loc_enc, embedding)
    np.testing.assert_allclose(predictor.range_scores(PLACES), scores, atol=TOL, rtol=0)
    # without a fitted prior (prior.json) p(species | x) is the range scores normalised over classes
    normalised = scores / scores.sum(1, keepdims=True)
    np.testing.assert_allclose(predictor.prior(PLACES), normalised, atol=TOL, rtol=0)
    features = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    expected = _np(features) @ _np(model.img_dec.weight).T + _np(model.img_dec.bias)
    projected = predictor.csp_model.encode_images(features).detach().numpy()
    np.testing.assert_allclose(projected, expected, atol=TOL, rtol=0)
    # The image -> location settings of the reference objective travel with the CSP model.
    assert predictor.cosine_similarity and predictor.temperature == 20.0
    config = predictor.prior_model.config
    assert config.encoding == "grid" and config.layer_norm and config.activation == "leaky_relu_0.2"
    assert config.encoding_kwargs["min_radius"] == pytest.approx(2 * math.pi * 0.1)  # lambda = 2 pi r


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("gridcell", {"num_hidden_layer": 3, "hidden_dim": 16, "spa_f_act": "gelu"}),  # skip connections
        ("theorynorm", {"spa_f_act": "relu", "use_layn": False}),
        ("hexagridcell", {}),
        ("theorydiag", {}),
        ("geo_net", {}),
    ],
)
def test_encoder_variants_match_the_reference_formulas(tmp_path: Path, kind: str, changes: dict) -> None:
    params = official_params(kind, **changes)
    loc_enc = build_official(params, seed=5)
    path = write_official(tmp_path / f"model_{kind}.pth.tar", loc_enc, params | {"unsuper_loss": "none"})
    convert_official(path, tmp_path / "out")
    prior, meta = load_checkpoint(tmp_path / "out" / "prior")
    assert meta.train["converted_from"]["spa_enc_type"] == kind
    embedding = reference_embedding(loc_enc, params)
    # In float64 the converted model must reproduce the reference formulas; float32 inference
    # rounds angles of up to 1800 rad (the finest scale, r = 0.1 degree) to about 1e-4.
    prior = prior.double()
    places = torch.tensor(PLACES, dtype=torch.float64)
    np.testing.assert_allclose(prior.embed(places).detach().numpy(), embedding, atol=TOL, rtol=0)
    probs = prior(places).detach().numpy()
    np.testing.assert_allclose(probs, reference_prior(loc_enc, embedding), atol=TOL, rtol=0)
    ours32 = prior.float().embed(places.float()).detach().numpy()
    np.testing.assert_allclose(ours32, embedding, atol=1e-3, rtol=0)
    assert not (tmp_path / "out" / "csp").exists()


def test_pretraining_checkpoint_writes_only_the_csp_model(tmp_path: Path) -> None:
    params = official_params("gridcell", unsuper_loss="contsoftmaxsym")
    model = LocationImageEncoder(build_official(params), 10, params["num_filts"])
    path = write_official(tmp_path / "model_fmow_UNSUPER-contsoftmax.pth.tar", model, params)
    assert main(["convert-official", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "csp" / "model.json").is_file() and not (tmp_path / "out" / "prior").exists()
    loaded, meta = load_checkpoint(tmp_path / "out" / "csp")
    assert loaded.objective == "mc" and meta.train["converted_from"]["stage"] == "pretrain"


def test_unmappable_checkpoints_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    params = official_params("gridcell")
    model = build_official(params)
    with pytest.raises(ConversionError, match="rbf.*anchor points"):
        convert_official(
            write_official(tmp_path / "rbf.pth.tar", model, params | {"spa_enc_type": "rbf"}), tmp_path / "a"
        )
    with pytest.raises(ConversionError, match="freq_init='random'"):
        convert_official(
            write_official(tmp_path / "r.pth.tar", model, params | {"freq_init": "random"}), tmp_path / "b"
        )
    state = model.state_dict() | {"spa_enc.extra_gate.weight": torch.zeros(2)}
    torch.save({"state_dict": state, "params": params}, tmp_path / "extra.pth.tar")
    with pytest.raises(ConversionError, match="cannot map: spa_enc.extra_gate.weight"):
        convert_official(tmp_path / "extra.pth.tar", tmp_path / "c")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.pth.tar")
    with pytest.raises(ConversionError, match="needs 'state_dict' and 'params'"):
        convert_official(tmp_path / "bare.pth.tar", tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_arbitrary_objects_are_never_unpickled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = official_params("gridcell") | {"args": argparse.Namespace(lr=0.1)}
    path = write_official(tmp_path / "namespace.pth.tar", build_official(params), params)
    with pytest.raises(ConversionError, match="refused by the safe loader.*Namespace"):
        convert_official(path, tmp_path / "out")
    assert main(["convert-official", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "refused by the safe loader" in capsys.readouterr().err
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a readable torch checkpoint|refused"):
        convert_official(tmp_path / "junk.pth.tar", tmp_path / "out")


FMOW_SCRIPT = {  # main/run-fmow-contsoftmax.sh (other values: the reference trainer's defaults)
    "frequency_num": 32, "min_radius": 0.1, "max_radius": 360.0, "num_hidden_layer": 1, "hidden_dim": 512,
    "num_filts": 256, "spa_f_act": "gelu", "dropout": 0.5, "unsuper_loss": "contsoftmax",
    "unsuper_temp_inbatch": 20.0, "unsuper_temp_negloc": 1.0, "unsuper_temp_simcse": 1.0,
    "num_neg_rand_loc": 1, "rand_sample_weight": 1.0, "simcse_weight": 1.0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "changes"), [("official-fmow", {}), ("official-inat", {"spa_f_act": "leakyrelu"})]
)
def test_presets_match_the_reference_scripts(tmp_path: Path, preset: str, changes: dict) -> None:
    from train.config import PretrainConfig, load_config
    from train.convert_official import official_loss_config

    params = official_params("gridcell", **(FMOW_SCRIPT | changes))
    model = LocationImageEncoder(build_official(params), 4, params["num_filts"])
    converted = convert_official(write_official(tmp_path / "m.pth.tar", model, params), tmp_path / "out")
    config = load_config(PretrainConfig, preset, [])
    ours = converted.csp.location_encoder.config.to_dict() | {"num_classes": 0, "num_users": 0}
    assert config.model.to_dict() == ours  # the YAML spells 2 pi r exactly
    assert config.loss == official_loss_config(params)
