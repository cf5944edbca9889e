"""``python -m train convert-official CKPT.pth.tar --out DIR``: bring a checkpoint of the CSP
reference code (github.com/gengchenmai/csp, ``main/``) into this project's format.

The reference trainer saves ``torch.save({"epoch", "state_dict", "optimizer", "params"})`` where
``params`` is its argparse dictionary and ``state_dict`` that of its ``LocationImageEncoder``
(``loc_enc.spa_enc.ffn.layers.<i>.linear|layernorm``, ``loc_enc.class_emb``, ``loc_enc.user_emb``,
``img_dec`` or ``loc_dec``, plus the same tensors again under the aliases ``spa_enc.``,
``class_emb.``, ``user_emb.``) or of a bare ``LocationEncoder`` / ``FCNet``.

Reading is safe: ``torch.load(weights_only=True)`` with an allow-list of the few non-tensor types
such files hold (numpy scalars and dtypes in ``params``); nothing else is unpickled. The mapping:

* ``spa_enc_type`` -> our encoding (see :mod:`csp.legacy_encodings` for the legacy ones), with
  the frequency convention converted: the reference code's ``omega = 1 / r`` on degrees is our
  wavelength ``lambda = 2*pi*r`` (``theorynorm``, which works in radians: ``lambda = 360*r``);
* its feed-forward network -> our MLP (``layer_norm``, ``skip_connection``, ``final_activation``),
  its ``geo_net`` (FCNet) -> our residual MLP; activations by name (its ``leakyrelu`` has slope 0.2);
* ``class_emb``/``user_emb`` -> the heads; ``img_dec`` -> ``image_projection`` (objective ``mc`` for
  ``contsoftmax*``, ``nce`` for ``imgcontloss*``), ``loc_dec`` -> ``location_decoder`` (``mse``).

Anything else is refused with a :class:`ConversionError` naming what cannot be mapped. The output
is a model directory: ``prior/`` (the location prior; left out for a pre-training checkpoint,
whose class head is untrained) and ``csp/`` (the pre-trained location-image model, when the
checkpoint has an image side), loadable with ``csp.from_pretrained(DIR)`` or usable as
``python -m train finetune --init-from DIR/csp``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csp.checkpoint import describe_model, save_checkpoint
from csp.losses import CSPLossConfig
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder
from csp.predictor import CSP_DIR, PRIOR_DIR

ACTIVATIONS = {
    "leakyrelu": "leaky_relu_0.2",
    "relu": "relu",
    "gelu": "gelu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
}
IMAGE_OBJECTIVES = {
    "contsoftmax": "mc",
    "contsoftmaxsym": "mc",
    "imgcontloss": "nce",
    "imgcontlossnolocneg": "nce",
    "imgcontlosssimcse": "nce",
    "l2regress": "mse",
}
GLOBAL_EXTENT = [-180.0, 180.0, -90.0, 90.0]
NOT_CONVERTIBLE = {
    "rbf": "its RBF anchor points are training locations, which the checkpoint does not store",
    "rff": "its planar random Fourier features (on lon/180, lat/90) have no counterpart here",
}
STAGES = ("auto", "pretrain", "finetune")


class ConversionError(ValueError):
    """The file is not a reference-code checkpoint, or holds something that cannot be mapped."""


def _numpy_globals() -> list[Any]:
    """The non-tensor types a reference checkpoint's ``params`` may hold: numpy scalars (e.g. the
    ``rbf_anchor_pt_ids`` from ``np.random.choice``) and their dtypes, under numpy 1 and 2 names."""
    core = np._core if hasattr(np, "_core") else np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    for name in ("Int64DType", "Int32DType", "Float64DType", "Float32DType", "BoolDType"):
        allowed.append(getattr(np.dtypes, name))
    return allowed


def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a reference checkpoint, allow-listing numpy scalars.

    Raises:
        ConversionError: unreadable, not a dict with ``state_dict`` and ``params``, or holding
            types outside the allow-list (the message names them; nothing is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure of the load becomes one clear message
        # The safe loader raises pickle.UnpicklingError for a type outside the allow-list (this
        # module does not import pickle: nothing here may unpickle).
        if type(err).__name__ != "UnpicklingError":
            raise ConversionError(f"{path}: not a readable torch checkpoint ({err})") from None
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|$)", str(err), re.MULTILINE)
        reason = found.group(1).strip() if found else str(err).strip().splitlines()[0]
        raise ConversionError(f"{path}: refused by the safe loader (nothing ran): {reason}") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "params"} <= set(checkpoint):
        raise ConversionError(f"{path}: not a CSP reference checkpoint (needs 'state_dict' and 'params')")
    if not isinstance(checkpoint["params"], dict):
        raise ConversionError(f"{path}: 'params' must be the reference trainer's argument dict")
    return checkpoint


def _flag(value: Any) -> bool:
    """The reference code's booleans: True/False after its ``update_params``, 'T'/'F' before."""
    return value is True or value == "T"


def _param(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise ConversionError(f"the checkpoint's params lack {name!r}")
    return params[name]


def _scales(params: dict[str, Any], per_radian: bool = False) -> dict[str, Any]:
    """Our ``(frequency_num, min_radius, max_radius)`` for its geometric ``omega_s = 1 / r_s``."""
    if params.get("freq_init", "geometric") != "geometric":
        raise ConversionError(f"freq_init={params['freq_init']!r} cannot be mapped (only 'geometric')")
    scale = 360.0 if per_radian else 2 * math.pi
    return {
        "frequency_num": int(_param(params, "frequency_num")),
        "min_radius": scale * float(_param(params, "min_radius")),
        "max_radius": scale * float(_param(params, "max_radius")),
    }


@dataclass(frozen=True)
class _Layout:
    """Our encoder config for a reference ``spa_enc_type``, and the parameter-name mapping."""

    config: LocationEncoderConfig
    encoder_prefix: str  # where the encoder's tensors sit in the reference state dict
    linears: list[str]  # reference Linear prefixes, in the order of our MLP's Linear layers
    layer_norms: list[str]  # reference LayerNorm prefixes, in our order
    extra: dict[str, str]  # reference tensor name -> our tensor name (relative to the encoder)


def _ffn_layout(state: dict[str, Tensor], prefix: str) -> tuple[list[str], list[str]]:
    linears, norms, i = [], [], 0
    while f"{prefix}layers.{i}.linear.weight" in state:
        linears.append(f"{prefix}layers.{i}.linear")
        if f"{prefix}layers.{i}.layernorm.weight" in state:
            norms.append(f"{prefix}layers.{i}.layernorm")
        i += 1
    if not linears:
        raise ConversionError(f"no feed-forward layers under {prefix}layers.*")
    return linears, norms


def _mlp_config(
    params: dict[str, Any], encoding: str, kwargs: dict, hidden_layers: int, **extra: Any
) -> dict:
    activation = _param(params, "spa_f_act")
    if activation not in ACTIVATIONS:
        raise ConversionError(f"activation {activation!r} cannot be mapped; known: {sorted(ACTIVATIONS)}")
    return {
        "encoding": encoding,
        "encoding_kwargs": kwargs,
        "hidden_dim": int(_param(params, "hidden_dim")),
        "num_hidden_layers": hidden_layers,
        "embed_dim": int(_param(params, "num_filts")),
        "activation": ACTIVATIONS[activation],
        "dropout": float(_param(params, "dropout")),
        "final_activation": True,
        **extra,
    }


def _layout(params: dict[str, Any], state: dict[str, Tensor], root: str) -> _Layout:
    """Map the reference encoder under ``root`` (``""`` or ``"loc_enc."``) onto ours."""
    kind = _param(params, "spa_enc_type")
    if kind in NOT_CONVERTIBLE:
        raise ConversionError(f"spa_enc_type {kind!r} cannot be converted: {NOT_CONVERTIBLE[kind]}")
    if kind == "geo_net":
        return _geo_net_layout(params, state, root)
    encoder = f"{root}spa_enc."
    if kind in ("hexagridcell", "theorydiag"):
        return _post_linear_layout(params, state, encoder, kind)
    encodings = {
        "gridcell": ("grid", _scales(params)),
        "gridcellnorm": ("grid", _scales(params)),
        "theory": ("theory", _scales(params)),
        "theorynorm": ("theory", _scales(params, per_radian=True)),
        "naive": ("naive", {}),
        "geo_net_fft": ("geo_net", {}),
    }
    if kind not in encodings:
        raise ConversionError(f"spa_enc_type {kind!r} is unknown; known: {sorted([*encodings, 'geo_net'])}")
    if kind == "naive" and [float(v) for v in params.get("map_range", GLOBAL_EXTENT)] != GLOBAL_EXTENT:
        raise ConversionError(f"naive with map_range={params['map_range']} cannot be mapped (only the globe)")
    linears, norms = _ffn_layout(state, f"{encoder}ffn.")
    config = _mlp_config(
        params,
        *encodings[kind],
        hidden_layers=len(linears) - 1,
        layer_norm=bool(norms),
        skip_connection=_flag(params.get("skip_connection", False)),
    )
    return _Layout(LocationEncoderConfig(**config), encoder, linears, norms, {})


def _post_linear_layout(params: dict[str, Any], state: dict[str, Tensor], encoder: str, kind: str) -> _Layout:
    """``hexagridcell`` (features -> act(drop(post_linear))) and ``theorydiag`` (block-diagonal
    ``post_mat`` -> [drop -> post_linear] -> act): our encoding + a one-layer MLP."""
    if f"{encoder}post_linear.weight" not in state:
        raise ConversionError(
            f"{kind} without post_linear (spa_enc_use_postmat=F) cannot be mapped: our location "
            "encoder always ends in a Linear layer"
        )
    extra: dict[str, str] = {}
    if kind == "hexagridcell":  # its scales run from r = 1 to max_radius
        frequencies = int(_param(params, "frequency_num"))
        kwargs = {"frequency_num": frequencies, "min_radius": 2 * math.pi}
        kwargs["max_radius"] = 2 * math.pi * float(_param(params, "max_radius"))
    else:  # the block-diagonal matrix is registered twice, as post_mat and spa_postmat
        kwargs = {**_scales(params), "out_dim": int(_param(params, "num_filts"))}
        extra = {f"{encoder}{name}": "position_encoding.post_mat" for name in ("post_mat", "spa_postmat")}
        extra = {theirs: ours for theirs, ours in extra.items() if theirs in state}
    config = _mlp_config(params, kind, kwargs, hidden_layers=0)
    return _Layout(LocationEncoderConfig(**config), encoder, [f"{encoder}post_linear"], [], extra)


def _geo_net_layout(params: dict[str, Any], state: dict[str, Tensor], root: str) -> _Layout:
    """FCNet (GeoPrior): Linear -> ReLU -> n x ResLayer, on ``encode_cos_sin`` inputs."""
    if params.get("loc_encode", "encode_cos_sin") != "encode_cos_sin" or _flag(params.get("use_date_feats")):
        raise ConversionError("geo_net converts only with loc_encode=encode_cos_sin and no date features")
    blocks = 0
    while f"{root}feats.{blocks + 2}.w1.weight" in state:
        blocks += 1
    width = int(_param(params, "num_filts"))
    config = LocationEncoderConfig(
        encoding="geo_net", hidden_dim=width, num_hidden_layers=blocks, embed_dim=width,
        activation="relu", dropout=0.5, final_activation=False, residual=True,
    )  # fmt: skip
    linears = [f"{root}feats.0"] + [f"{root}feats.{i + 2}.{w}" for i in range(blocks) for w in ("w1", "w2")]
    return _Layout(config, f"{root}feats.", linears, [], {})


def _fill(target: nn.Module, names: list[str], state: dict[str, Tensor], kind: type[nn.Module]) -> set[str]:
    """Copy ``state[name.weight/.bias]`` into the ``kind`` modules of ``target``, in order."""
    modules = [m for m in target.modules() if isinstance(m, kind)]
    if len(modules) != len(names):
        raise ConversionError(f"{len(names)} reference {kind.__name__} layers for {len(modules)} of ours")
    used = set()
    for module, name in zip(modules, names, strict=True):
        for field in ("weight", "bias"):
            ours = getattr(module, field)
            if ours is None:
                continue
            used.add(_copy(ours, state, f"{name}.{field}"))
    return used


def _copy(ours: Tensor, state: dict[str, Tensor], name: str) -> str:
    if name not in state:
        raise ConversionError(f"the checkpoint lacks {name}")
    theirs = state[name]
    if tuple(theirs.shape) != tuple(ours.shape):
        raise ConversionError(f"{name} has shape {tuple(theirs.shape)}, ours needs {tuple(ours.shape)}")
    with torch.no_grad():
        ours.copy_(theirs.to(ours.dtype))
    return name


@dataclass
class Converted:
    """The converted models: ``prior`` (None for a pre-training checkpoint), ``csp`` (None without
    an image side), the reference ``params`` and the mapped ``spa_enc_type``."""

    prior: LocationEncoder | None
    csp: LocationImageEncoder | None
    params: dict[str, Any]
    stage: str


def convert_state(checkpoint: dict[str, Any], stage: str = "finetune") -> Converted:
    """Map a reference checkpoint (from :func:`read_official_checkpoint`) onto our models.

    Raises:
        ConversionError: a tensor or setting that cannot be mapped (named in the message).
    """
    params, state = checkpoint["params"], checkpoint["state_dict"]
    root = "loc_enc." if any(k.startswith("loc_enc.") for k in state) else ""
    layout = _layout(params, state, root)
    heads = {"num_classes": "class_emb", "num_users": "user_emb"}
    sizes = {
        n: int(state[f"{root}{h}.weight"].shape[0]) if f"{root}{h}.weight" in state else 0
        for n, h in heads.items()
    }
    config = LocationEncoderConfig(**{**layout.config.to_dict(), **sizes})
    encoder = LocationEncoder(config)
    used = _fill(encoder.net, layout.linears, state, nn.Linear)
    used |= _fill(encoder.net, layout.layer_norms, state, nn.LayerNorm)
    for theirs, ours in layout.extra.items():
        used.add(_copy(encoder.get_parameter(ours), state, theirs))
    for size, head in heads.items():
        if sizes[size]:
            used.add(_copy(getattr(encoder, head).weight, state, f"{root}{head}.weight"))
    objective = IMAGE_OBJECTIVES.get(str(params.get("unsuper_loss", "none")))
    side = {"mc": "img_dec", "nce": "img_dec", "mse": "loc_dec"}.get(objective or "")
    csp_model = None
    if side is not None and f"{side}.weight" in state:
        image_dim = int(state[f"{side}.weight"].shape[1 if side == "img_dec" else 0])
        csp_model = LocationImageEncoder(config, image_dim, objective)
        csp_model.location_encoder.load_state_dict(encoder.state_dict())
        target = csp_model.image_projection if side == "img_dec" else csp_model.location_decoder
        used |= {_copy(target.weight, state, f"{side}.weight"), _copy(target.bias, state, f"{side}.bias")}
    # A reference LocationImageEncoder repeats loc_enc's tensors under these aliases.
    aliases = ("spa_enc.", "class_emb.", "user_emb.") if root else ()
    left = sorted(k for k in state if k not in used and not k.startswith(aliases))
    if left:
        raise ConversionError(f"tensors the conversion cannot map: {', '.join(left)}")
    if stage == "pretrain" and csp_model is None:
        raise ConversionError(
            "a pre-training checkpoint without an image side (img_dec/loc_dec) holds nothing to convert"
        )
    prior = encoder.eval() if stage == "finetune" and sizes["num_classes"] else None
    return Converted(prior, csp_model.eval() if csp_model is not None else None, params, stage)


def official_loss_config(params: dict[str, Any]) -> CSPLossConfig | None:
    """Our objective for the reference ``unsuper_loss`` (None for ``none``).

    ``contsoftmax`` is MC with cosine similarity (``normalize``) and its three temperatures;
    ``contsoftmaxsym`` also contrasts image -> location and adds (``sum``) the two directions.
    """
    name = str(params.get("unsuper_loss", "none"))
    if name == "none":
        return None
    if name not in IMAGE_OBJECTIVES:
        raise ConversionError(f"unsuper_loss {name!r} cannot be mapped; known: {sorted(IMAGE_OBJECTIVES)}")
    objective = IMAGE_OBJECTIVES[name]
    if objective == "mse":
        return CSPLossConfig(objective="mse")
    return CSPLossConfig(
        objective=objective,
        normalize=True,  # the reference objectives compare L2-normalised embeddings
        temperature=float(params.get("unsuper_temp_inbatch", 1.0)),
        num_random_locations=int(params.get("num_neg_rand_loc", 1)),
        random_location_weight=float(params.get("rand_sample_weight", 1.0)),
        random_location_temperature=float(params.get("unsuper_temp_negloc", 1.0)),
        simcse_weight=float(params.get("simcse_weight", 0.0)),
        simcse_temperature=float(params.get("unsuper_temp_simcse", 1.0)),
        symmetric=name == "contsoftmaxsym",
        symmetric_reduction="sum" if name == "contsoftmaxsym" else "mean",
    )


def detect_stage(path: Path, params: dict[str, Any]) -> str:
    """``pretrain`` when the file is the run's ``unsuper_model_file_name`` (the reference code
    names it ``...UNSUPER-<loss>...``), else ``finetune``."""
    pretrain_name = Path(str(params.get("unsuper_model_file_name") or "")).name
    return "pretrain" if path.name == pretrain_name or "UNSUPER-" in path.name else "finetune"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_official(
    path: str | Path, out: str | Path, *, stage: str = "auto", class_names: list[str] | None = None
) -> Converted:
    """Read ``path`` safely, convert it and write the model directory ``out``.

    Args:
        path: a reference ``.pth.tar`` checkpoint.
        out: the model directory to write (``prior/`` and/or ``csp/``).
        stage: ``pretrain`` (write only ``csp/``), ``finetune`` (also ``prior/``) or ``auto``
            (:func:`detect_stage`).
        class_names: names of the class-head rows (default ``"0"``..``"C-1"``).

    Raises:
        ConversionError: see :func:`read_official_checkpoint` and :func:`convert_state`.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    path, out = Path(path), Path(out)
    checkpoint = read_official_checkpoint(path)
    converted = convert_state(
        checkpoint, detect_stage(path, checkpoint["params"]) if stage == "auto" else stage
    )
    params = converted.params
    provenance = {
        "converted_from": {
            "file": path.name,
            "sha256": _sha256(path),
            "epoch": checkpoint.get("epoch"),
            "spa_enc_type": params.get("spa_enc_type"),
            "unsuper_loss": params.get("unsuper_loss"),
            "stage": converted.stage,
        }
    }
    out.mkdir(parents=True, exist_ok=True)
    if converted.csp is not None:
        loss = official_loss_config(params)
        config = {"loss": loss.to_dict()} if loss is not None else {}
        similarity = {"cosine_similarity": loss.normalize, "temperature": loss.temperature} if loss else {}
        meta = describe_model(converted.csp, **similarity, train={**provenance, "config": config})
        save_checkpoint(out / CSP_DIR, converted.csp, meta)
    if converted.prior is not None:
        count = converted.prior.num_classes
        names = list(class_names) if class_names is not None else [str(i) for i in range(count)]
        if len(names) != count:
            raise ConversionError(f"{len(names)} class names for a class head of {count} rows")
        save_checkpoint(
            out / PRIOR_DIR,
            converted.prior,
            describe_model(converted.prior, class_names=names, train=provenance),
        )
    return converted


def run_convert(checkpoint: str, out: str, stage: str, class_names_file: str | None) -> int:
    """The ``convert-official`` command; prints what it wrote."""
    names = None
    if class_names_file:
        names = [line.strip() for line in Path(class_names_file).read_text().splitlines() if line.strip()]
    converted = convert_official(checkpoint, out, stage=stage, class_names=names)
    written = [
        d for d, model in ((PRIOR_DIR, converted.prior), (CSP_DIR, converted.csp)) if model is not None
    ]
    kind = converted.params.get("spa_enc_type")
    print(f"converted {checkpoint} ({kind}, {converted.stage}) -> {out}: {', '.join(written)}")
    return 0
