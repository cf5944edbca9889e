"""train/config.py: typed configs from presets and ``--set`` overrides (the CLI edge)."""

import pytest
import yaml

from csp.encodings import encoding_defaults
from csp.losses import CSPLossConfig
from train.cli import main
from train.config import (
    CONFIG_DIR,
    FinetuneConfig,
    PretrainConfig,
    load_config,
    preset_path,
    to_dict,
)


def test_config_rejects_unknown_keys_and_cli_reports_errors(capsys):
    with pytest.raises(ValueError, match="unknown key"):
        load_config(PretrainConfig, "csp-mc-bld", ["loss.temprature=0.5"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(PretrainConfig, "no-such-preset")
    config = load_config(PretrainConfig, "csp-mc-bl", ["loss.temperature=0.5"])
    assert config.loss.simcse_weight == 0.0 and config.loss.temperature == 0.5
    assert main(["pretrain", "--preset", "csp-mc-bld"]) == 2
    assert "--features" in capsys.readouterr().err


def test_overrides_are_converted_to_the_field_types():
    config = load_config(
        PretrainConfig,
        "csp-mc-bld",
        ["optim.lr=3e-4", "runtime.out_dir=on", "optim.epochs=1e2", "loss.symmetric=true"],
        encoding="spherical_harmonics",
    )
    assert config.optim.lr == 3e-4 and config.runtime.out_dir == "on" and config.optim.epochs == 100
    assert config.loss.symmetric is True
    assert config.model.encoding_kwargs == {"max_degree": 10}
    finetune = load_config(FinetuneConfig, "finetune", ["init_from=null", "pos_weight=2"])
    assert finetune.init_from is None and finetune.pos_weight == 2.0
    with pytest.raises(ValueError, match="not a valid int"):
        load_config(PretrainConfig, "csp-mc-bld", ["optim.epochs=1.5"])
    with pytest.raises(ValueError, match="unknown position encoding .hexagons."):
        load_config(PretrainConfig, "csp-mc-bld", encoding="hexagons")


def test_no_preset_gives_the_dataclass_defaults():
    # ... with the encoding's arguments written out from the registry (the config says what it is).
    defaults = FinetuneConfig()
    defaults.model.encoding_kwargs = encoding_defaults(defaults.model.encoding)
    assert load_config(FinetuneConfig) == defaults
    assert load_config(PretrainConfig).loss == CSPLossConfig()


def test_a_preset_chains_its_base_and_overrides_win(tmp_path):
    base = yaml.safe_load((CONFIG_DIR / "csp-mc-bld.yaml").read_text())
    child = tmp_path / "child.yaml"
    child.write_text("base: csp-mc-bld\noptim:\n  lr: 0.5\n")
    config = load_config(PretrainConfig, str(child), ["optim.epochs=3"])
    assert config.optim.lr == 0.5 and config.optim.epochs == 3
    assert config.optim.batch_size == load_config(PretrainConfig, "csp-mc-bld").optim.batch_size
    assert config.loss == load_config(PretrainConfig, "csp-mc-bld").loss
    assert "base" not in to_dict(config) and base  # the chain key is not a field
    assert preset_path(str(child)) == child


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr"], "expects key.path=value"),
        (["optim.lr.deeper=1"], "lr is not a section"),
        (["runtime.amp=maybe"], "runtime.amp: 'maybe' is not a valid bool"),
        (["optim.lr=fast"], "optim.lr: 'fast' is not a valid float"),
        (["optim.epochs=true"], "not a valid int"),
        (["optim=3"], "expected a mapping"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(FinetuneConfig, "finetune", overrides)


def test_optional_fields_take_null_and_yaml_values_keep_their_types(tmp_path):
    config = load_config(FinetuneConfig, "finetune", ["data.native_ranges=null", "pos_weight=~"])
    assert config.data.native_ranges is None and config.pos_weight is None
    preset = tmp_path / "typed.yaml"
    preset.write_text("optim:\n  epochs: 2.5\n")
    with pytest.raises(ValueError, match="optim.epochs"):
        load_config(FinetuneConfig, str(preset))
    preset.write_text("data:\n  csv: 12\n")
    with pytest.raises(ValueError, match="data.csv: 12 is not a valid str"):
        load_config(FinetuneConfig, str(preset))


def test_to_dict_round_trips_through_yaml_and_the_loader(tmp_path):
    config = load_config(FinetuneConfig, "finetune", ["optim.lr=0.01", "data.label_fraction=0.2"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    assert load_config(FinetuneConfig, str(path)) == config
    assert config.optim.lr == 0.01 and config.data.label_fraction == 0.2
