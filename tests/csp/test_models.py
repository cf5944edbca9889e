"""csp/models.py: the location encoder (position encoding + MLP + heads), its dropout, and the
location-image model of CSP pre-training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csp.encodings import create_encoding
from csp.models import Dropout, LocationEncoder, LocationEncoderConfig, LocationImageEncoder, build_mlp

SMALL = {"encoding": "grid", "encoding_kwargs": {"frequency_num": 4}, "hidden_dim": 16, "embed_dim": 8}
PLACES = torch.tensor([[2.35, 48.85], [139.65, 35.68], [-180.0, -90.0], [180.0, 90.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish"}, "unknown activation"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"dropout": -0.1}, "dropout must be in"),
        ({"hidden_dim": 0}, "hidden_dim must be positive"),
        ({"embed_dim": 0}, "embed_dim must be positive"),
        ({"num_classes": -1}, "must be >= 0"),
        ({"residual": True, "skip_connection": True}, "plain MLP"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocationEncoderConfig(**kwargs)


def test_config_round_trips_through_its_dict():
    config = LocationEncoderConfig(**SMALL, num_classes=3, residual=True)
    assert LocationEncoderConfig(**config.to_dict()) == config


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_dropout_masks_are_independent_bernoulli(p):
    """Keep rate within 4 standard errors of 1 - p, everywhere in the tensor (the bit path packs
    31 elements per draw: no bit position may be biased), no correlation between neighbours or
    between the 31-element words, expectation kept, and the mask is what multiplies x."""
    torch.manual_seed(1)
    dropout = Dropout(p)
    x = torch.randn(3000, 310)
    mask = dropout.mask(x)
    assert mask.shape == x.shape and mask.dtype == x.dtype
    torch.testing.assert_close(torch.unique(mask), torch.tensor([0.0, 1 / (1 - p)]))
    kept = (mask > 0).double()
    n, q = kept.numel(), 1 - p
    assert abs(kept.mean().item() - q) < 4 * (q * p / n) ** 0.5
    per_position = kept.view(-1, 31).mean(dim=0)  # each bit of the 31-bit words
    assert (per_position - q).abs().max().item() < 4.5 * (q * p / (n / 31)) ** 0.5
    flat = kept.view(-1) - q
    for lag in (1, 31, 310):  # neighbours, the next word, the next row
        corr = (flat[:-lag] * flat[lag:]).mean().item() / (q * p)
        assert abs(corr) < 4 / n**0.5, lag
    torch.manual_seed(2)
    y = dropout(x)
    torch.manual_seed(2)
    assert torch.equal(y, x * dropout.mask(x))


def test_dropout_is_inverted_and_off_in_eval():
    torch.manual_seed(0)
    dropout = Dropout(0.25)
    x = torch.ones(200_000)
    y = dropout(x)
    torch.testing.assert_close(torch.unique(y), torch.tensor([0.0, 1 / 0.75]))
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    dropout.eval()
    assert torch.equal(dropout(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_plain_and_residual_layouts():
    config = LocationEncoderConfig(**SMALL, num_hidden_layers=2)
    plain = build_mlp(12, config)
    names = [type(m).__name__ for m in plain]
    assert names == [
        "Linear",
        "LeakyReLU",
        "Dropout",
        "Linear",
        "LeakyReLU",
        "Dropout",
        "Linear",
        "LeakyReLU",
        "Dropout",
    ]
    assert plain[0].in_features == 12 and plain[-3].out_features == 8
    no_tail = build_mlp(12, LocationEncoderConfig(**SMALL, final_activation=False, dropout=0.0))
    assert [type(m).__name__ for m in no_tail] == ["Linear", "LeakyReLU", "Linear"]
    residual = build_mlp(12, LocationEncoderConfig(**SMALL, residual=True, num_hidden_layers=3))
    assert [type(m).__name__ for m in residual].count("ResidualBlock") == 3
    assert residual[0].out_features == 8  # the stem goes straight to the embedding width


def test_mlp_options_leave_the_default_layout_alone() -> None:
    plain = LocationEncoder(LocationEncoderConfig())
    assert list(plain.state_dict()) == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"]
    config = LocationEncoderConfig(
        hidden_dim=8, embed_dim=4, num_hidden_layers=2, layer_norm=True, skip_connection=True
    )
    model = LocationEncoder(config).eval()
    names = [type(m).__name__ for m in model.net]
    assert names[:4] == ["Linear", "LeakyReLU", "Dropout", "LayerNorm"]  # 128 -> 8: no skip
    assert names[4:6] == ["SkipConnection", "LayerNorm"]  # 8 -> 8: skip, then LayerNorm
    with pytest.raises(ValueError, match="plain MLP"):
        LocationEncoderConfig(residual=True, layer_norm=True)


def test_residual_block_adds_the_activated_branch() -> None:
    config = LocationEncoderConfig(
        encoding="wrap",
        residual=True,
        num_hidden_layers=1,
        hidden_dim=3,
        embed_dim=3,
        dropout=0.0,
        activation="relu",
    )
    block = LocationEncoder(config).net[-1]
    x = torch.tensor([[1.0, -2.0, 0.5]])
    expected = x + torch.relu(block.body(x))
    torch.testing.assert_close(block(x), expected)


def test_location_encoder_outputs_and_heads():
    torch.manual_seed(0)
    model = LocationEncoder(LocationEncoderConfig(**SMALL, num_classes=5, num_users=2)).eval()
    feats = model(PLACES, return_feats=True)
    assert feats.shape == (4, 8) and torch.equal(feats, model.embed(PLACES))
    probs = model(PLACES)
    assert probs.shape == (4, 5) and ((probs > 0) & (probs < 1)).all()
    torch.testing.assert_close(probs, torch.sigmoid(model.class_logits(PLACES)))
    torch.testing.assert_close(model(PLACES, class_of_interest=3), probs[:, 3])
    torch.testing.assert_close(model.eval_single_class(feats, 3), probs[:, 3])
    assert model.user_logits(PLACES).shape == (4, 2)
    expected = model.net(create_encoding("grid", frequency_num=4)(PLACES))
    torch.testing.assert_close(feats, expected)  # e(x) = NN(PE(x))
    assert model.class_emb.bias is None and model.user_emb.bias is None


def test_a_model_without_heads_says_so():
    model = LocationEncoder(LocationEncoderConfig(**SMALL))
    assert model.class_emb is None and model.embed(PLACES).shape == (4, 8)
    with pytest.raises(RuntimeError, match="no class head"):
        model(PLACES)
    with pytest.raises(RuntimeError, match="no user head"):
        model.user_logits(PLACES)


def test_embeddings_are_batch_independent_in_eval_and_keep_leading_dims():
    model = LocationEncoder(LocationEncoderConfig(**SMALL)).eval()
    together = model.embed(PLACES)
    alone = torch.cat([model.embed(PLACES[i : i + 1]) for i in range(len(PLACES))])
    torch.testing.assert_close(together, alone)
    assert model.embed(PLACES.view(2, 2, 2)).shape == (2, 2, 8)


@pytest.mark.parametrize("objective", ["mc", "nce"])
def test_contrastive_objectives_project_images_into_the_location_space(objective):
    model = LocationImageEncoder(LocationEncoderConfig(**SMALL), image_dim=6, objective=objective)
    assert model.encode_images(torch.randn(3, 6)).shape == (3, 8)
    assert model.encode_locations(PLACES).shape == (4, 8) and model.location_decoder is None
    with pytest.raises(RuntimeError, match="no location decoder"):
        model.decode_locations(torch.randn(3, 8))


def test_mse_objective_decodes_locations_into_image_features():
    model = LocationImageEncoder(LocationEncoderConfig(**SMALL), image_dim=6, objective="mse")
    assert model.decode_locations(model.encode_locations(PLACES)).shape == (4, 6)
    assert model.image_projection is None
    with pytest.raises(RuntimeError, match="no image projection"):
        model.encode_images(torch.randn(3, 6))
    with pytest.raises(ValueError, match="unknown objective"):
        LocationImageEncoder(LocationEncoderConfig(**SMALL), image_dim=6, objective="triplet")
    with pytest.raises(ValueError, match="image_dim must be positive"):
        LocationImageEncoder(LocationEncoderConfig(**SMALL), image_dim=0, objective="mc")


def test_only_the_image_side_and_the_location_encoder_hold_parameters():
    model = LocationImageEncoder(LocationEncoderConfig(**SMALL), image_dim=6, objective="mc")
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert names == {"location_encoder", "image_projection"}
    assert isinstance(model.image_projection, nn.Linear)
