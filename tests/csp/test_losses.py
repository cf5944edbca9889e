"""CSP objectives against hand computations on tiny tensors, and gradient routing."""

import math

import pytest
import torch
import torch.nn.functional as F

from csp.geo import haversine_km
from csp.losses import (
    CSPLossConfig,
    PretrainBatch,
    binary_nce,
    csp_loss,
    in_batch_binary_nce,
    info_nce,
    nearby_locations,
    presence_only_loss,
    random_location_loss,
    sampled_presence_only_loss,
)
from csp.models import LocationEncoderConfig, LocationImageEncoder
from csp.samplers import sample_sphere


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    # logits / tau=0.5: row0 = [2, 1], row1 = [4, 0]
    expected = 0.5 * (-(2 - math.log(math.exp(2) + math.exp(1))) - (0 - math.log(math.exp(4) + math.exp(0))))
    assert info_nce(q, k, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # symmetric: columns of logits are [2, 4] and [1, 0]
    column = 0.5 * (-(2 - math.log(math.exp(2) + math.exp(4))) - (0 - math.log(math.exp(1) + math.exp(0))))
    assert info_nce(q, k, 0.5, symmetric=True).item() == pytest.approx(0.5 * (expected + column), rel=1e-6)


def test_random_location_loss_and_binary_nce():
    pos = torch.tensor([1.0, -1.0])
    neg = torch.tensor([[0.0, 2.0], [1.0, -3.0]])
    expected = 0.5 * sum(
        -(p - math.log(math.exp(p) + sum(math.exp(v) for v in n)))
        for p, n in zip(pos.tolist(), neg.tolist(), strict=True)
    )
    assert random_location_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)

    def log_sig(x):
        return -math.log1p(math.exp(-x))

    nce = 0.5 * sum(
        -log_sig(p) - 0.5 * sum(log_sig(-v) for v in n)
        for p, n in zip(pos.tolist(), neg.tolist(), strict=True)
    )
    assert binary_nce(pos, neg).item() == pytest.approx(nce, rel=1e-6)


def test_presence_only_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([0])
    random_logits = torch.tensor([[0.0, 1.0, -2.0]])
    sig = torch.sigmoid
    observed = (
        -3.0 * torch.log(sig(torch.tensor(2.0)))
        - torch.log(1 - sig(torch.tensor(-1.0)))
        - torch.log(1 - sig(torch.tensor(0.5)))
    ) / 3
    background = -torch.log(1 - sig(random_logits)).mean()
    loss = presence_only_loss(logits, labels, random_logits)
    assert loss.item() == pytest.approx((observed + background).item(), rel=1e-6)
    weighted = presence_only_loss(logits, labels, random_logits, pos_weight=1.0)
    assert weighted.item() < loss.item()


def _model(objective: str, dropout: float = 0.5) -> LocationImageEncoder:
    config = LocationEncoderConfig(
        encoding="grid",
        encoding_kwargs={"frequency_num": 4},
        hidden_dim=16,
        embed_dim=8,
        dropout=dropout,
    )
    return LocationImageEncoder(config, image_dim=12, objective=objective)


def _batch(n: int = 6) -> PretrainBatch:
    g = torch.Generator().manual_seed(0)
    lonlat = torch.stack([torch.rand(n, generator=g) * 360 - 180, torch.rand(n, generator=g) * 180 - 90], -1)
    return PretrainBatch(lonlat=lonlat, image_features=torch.randn(n, 12, generator=g))


def test_mc_loss_is_sum_of_weighted_terms_in_eval_mode():
    torch.manual_seed(0)
    model = _model("mc").eval()  # no dropout: both SimCSE views coincide
    batch = _batch()
    negatives = torch.rand(6, 3, 2) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    config = CSPLossConfig(random_location_weight=0.5, simcse_weight=0.1, num_random_locations=3)
    total, terms = csp_loss(model, batch, config, negatives)
    loc = model.encode_locations(batch.lonlat)
    img = model.encode_images(batch.image_features)
    in_batch = F.cross_entropy(loc @ img.T, torch.arange(6))
    neg = torch.einsum("bke,be->bk", model.encode_locations(negatives), img)
    rand = -F.log_softmax(torch.cat([(loc * img).sum(-1, keepdim=True), neg], 1), 1)[:, 0].mean()
    simcse = F.cross_entropy(loc @ loc.T, torch.arange(6))
    assert terms["in_batch"].item() == pytest.approx(in_batch.item(), rel=1e-5)
    assert terms["random_location"].item() == pytest.approx(rand.item(), rel=1e-5)
    assert terms["simcse"].item() == pytest.approx(simcse.item(), rel=1e-5)
    assert total.item() == pytest.approx((in_batch + 0.5 * rand + 0.1 * simcse).item(), rel=1e-5)


@pytest.mark.parametrize("objective", ["mc", "nce", "mse"])
def test_gradients_reach_only_the_trainable_parts(objective):
    torch.manual_seed(0)
    model = _model(objective)
    model.location_encoder.class_emb = torch.nn.Linear(8, 3, bias=False)  # must stay untouched
    total, _ = csp_loss(model, _batch(), CSPLossConfig(objective=objective), torch.zeros(6, 1, 2))
    total.backward()
    assert torch.isfinite(total)
    side = model.location_decoder if objective == "mse" else model.image_projection
    assert side.weight.grad is not None and side.weight.grad.abs().sum() > 0
    for param in model.location_encoder.net.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.location_encoder.class_emb.weight.grad is None


def test_objective_mismatch_and_missing_negatives_are_errors():
    with pytest.raises(ValueError, match="objective"):
        csp_loss(_model("mc"), _batch(), CSPLossConfig(objective="nce"))
    with pytest.raises(ValueError, match="random_lonlat"):
        csp_loss(_model("mc"), _batch(), CSPLossConfig())


def test_pretrain_batch_has_no_label_field():
    assert set(PretrainBatch.__dataclass_fields__) == {"lonlat", "image_features"}
    with pytest.raises(TypeError):
        PretrainBatch(lonlat=torch.zeros(1, 2), image_features=torch.zeros(1, 3), labels=None)


def test_simcse_views_differ_in_train_mode_and_coincide_in_eval():
    model = _model("mc")
    lonlat = _batch().lonlat
    model.train()
    assert not torch.allclose(model.encode_locations(lonlat), model.encode_locations(lonlat))
    model.eval()
    assert torch.equal(model.encode_locations(lonlat), model.encode_locations(lonlat))


def test_in_batch_binary_nce_equals_binary_nce_on_the_off_diagonal():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    logits = q @ k.T / 0.5
    off = logits[~torch.eye(5, dtype=torch.bool)].view(5, 4)
    expected = binary_nce(logits.diagonal(), off)
    assert in_batch_binary_nce(q, k, 0.5).item() == pytest.approx(expected.item(), rel=1e-6)


def test_nce_objective_uses_binary_terms_and_its_own_random_temperature():
    torch.manual_seed(0)
    model = _model("nce").eval()
    batch = _batch()
    negatives = torch.zeros(6, 1, 2)
    config = CSPLossConfig(objective="nce", random_location_temperature=0.5)
    _, terms = csp_loss(model, batch, config, negatives)
    loc = model.encode_locations(batch.lonlat)
    img = model.encode_images(batch.image_features)
    assert terms["simcse"].item() == pytest.approx(in_batch_binary_nce(loc, loc, 1.0).item(), rel=1e-5)
    neg = model.encode_locations(negatives.view(-1, 2)) @ img.T
    random = binary_nce((loc * img).sum(-1) / 0.5, neg.diagonal()[:, None] / 0.5)
    assert terms["random_location"].item() == pytest.approx(random.item(), rel=1e-5)


def test_dropout_keeps_the_expected_fraction_and_scale():
    from csp.models import Dropout

    layer = Dropout(0.5)
    torch.manual_seed(0)
    out = layer(torch.ones(200_000))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the mean
    layer.eval()
    assert torch.equal(layer(torch.ones(5)), torch.ones(5))
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_sampled_presence_only_loss_is_an_unbiased_estimate_of_the_full_loss():
    generator = torch.Generator().manual_seed(0)
    embeddings, random_embeddings = (
        torch.randn(16, 8, generator=generator),
        torch.randn(16, 8, generator=generator),
    )
    head = torch.randn(300, 8, generator=generator) * 0.5
    labels = torch.randint(0, 300, (16,), generator=generator)
    full = presence_only_loss(embeddings @ head.T, labels, random_embeddings @ head.T)
    draws = torch.stack(
        [
            sampled_presence_only_loss(embeddings, labels, random_embeddings, head, 20, generator)
            for _ in range(400)
        ]
    )
    standard_error = draws.std() / len(draws) ** 0.5
    assert abs(draws.mean() - full) < 4 * standard_error
    assert draws.std() > 0  # it is an estimate, not the full loss


def test_sampled_presence_only_loss_trains_the_head_and_the_encoder():
    embeddings = torch.randn(4, 3, requires_grad=True)
    head = torch.randn(50, 3, requires_grad=True)
    loss = sampled_presence_only_loss(embeddings, torch.tensor([0, 1, 2, 49]), torch.randn(4, 3), head, 5)
    loss.backward()
    assert embeddings.grad.abs().sum() > 0 and head.grad[[0, 1, 2, 49]].abs().sum() > 0
    with pytest.raises(ValueError, match="num_sampled"):
        sampled_presence_only_loss(embeddings, torch.tensor([0]), torch.randn(1, 3), head, 0)


def test_nearby_locations_hand_checked_cases():
    # From (0E, 0N) towards the north pole (90 degrees away): half of the 1,000 km budget, due north.
    x = torch.tensor([[0.0, 0.0]])
    near = nearby_locations(x, torch.tensor([[[0.0, 90.0], [90.0, 0.0], [180.0, 0.0]]]), 1000.0)
    km = 500.0 / 6371.0088 * 180.0 / math.pi  # degrees of arc
    assert near[0, 0].tolist() == pytest.approx([0.0, km], abs=1e-4)
    assert near[0, 1].tolist() == pytest.approx([km, 0.0], abs=1e-4)  # due east
    # The antipode: every direction is as good; the point is 1,000 km away.
    assert haversine_km(near[0, 2].numpy(), x[0].numpy()) == pytest.approx(1000.0, rel=1e-3)


def test_nearby_locations_stay_within_the_budget_with_their_mean_at_half():
    g = torch.Generator().manual_seed(0)
    x = sample_sphere(200, generator=g)
    near = nearby_locations(x, sample_sphere((200, 20), generator=g), 400.0)
    km = haversine_km(near.numpy().astype("float64"), x[:, None, :].numpy().astype("float64"))
    assert km.max() <= 400.0 + 1e-3
    assert km.mean() == pytest.approx(200.0, rel=0.05)


def test_nearby_negatives_replace_the_last_random_ones():
    torch.manual_seed(0)
    model = _model("mc").eval()
    batch = _batch()
    negatives = sample_sphere((6, 3), generator=torch.Generator().manual_seed(1))
    config = CSPLossConfig(num_random_locations=3, num_nearby_locations=2, nearby_km=300.0, simcse_weight=0.0)
    _, terms = csp_loss(model, batch, config, negatives)
    mixed = torch.cat([negatives[:, :1], nearby_locations(batch.lonlat, negatives[:, 1:], 300.0)], 1)
    plain = CSPLossConfig(num_random_locations=3, simcse_weight=0.0)
    _, expected = csp_loss(model, batch, plain, mixed)
    assert terms["random_location"].item() == pytest.approx(expected["random_location"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="num_nearby_locations"):
        CSPLossConfig(num_random_locations=2, num_nearby_locations=3)
