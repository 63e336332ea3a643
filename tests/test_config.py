import pytest

from attngan.config import PRESETS, ConfigError, apply_overrides, load_config, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_dict(name):
    cfg = preset(name)
    again = type(cfg).from_dict(cfg.to_dict())
    assert again == cfg


def test_original_numbers_in_presets():
    bird, coco = preset("bird"), preset("coco")
    assert (bird.gan.gf_dim, bird.gan.df_dim, bird.gan.r_num) == (32, 64, 2)
    assert (coco.gan.gf_dim, coco.gan.df_dim, coco.gan.r_num) == (48, 96, 3)
    assert bird.damsm.gamma1 == 4.0 and bird.train.damsm_lambda == 5.0 and coco.train.damsm_lambda == 50.0
    assert preset("bird-attn1").data.branch_num == 2 and preset("bird-attn1").data.image_size == 128
    assert bird.data.image_size == 256


def test_overrides_reject_unknown_keys_and_types():
    cfg = preset("tiny")
    out = apply_overrides(cfg, {"gan": {"gf_dim": 8}, "train": {"damsm_lambda": 0}})
    assert out.gan.gf_dim == 8 and out.train.damsm_lambda == 0.0 and cfg.gan.gf_dim == 16
    with pytest.raises(ConfigError, match="gan.gf_dimm"):
        apply_overrides(cfg, {"gan": {"gf_dimm": 8}})
    with pytest.raises(ConfigError, match="must be an integer"):
        apply_overrides(cfg, {"gan": {"gf_dim": "8"}})


def test_yaml_file_on_top_of_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\ngan:\n  r_num: 2\n")
    cfg = load_config(str(f))
    assert cfg.name == "tiny" and cfg.gan.r_num == 2
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(str(tmp_path / "missing.yaml"))


def test_on_off_yes_no_stay_strings_in_config_yaml(tmp_path):
    # YAML 1.1 reads off/on/yes/no as booleans: `--set train.amp=off` used to fail with
    # "'train.amp' must be a string, got False"; only true/false are booleans now.
    from attngan.commands._common import parse_overrides
    from attngan.config import yaml_load

    assert yaml_load("a: off\nb: yes\nc: true\nd: False\ne: 2\nf: null") == {
        "a": "off", "b": "yes", "c": True, "d": False, "e": 2, "f": None}
    over = parse_overrides(["train.amp=off", "train.channels_last=true"])
    cfg = apply_overrides(preset("tiny"), over)
    assert cfg.train.amp == "off" and cfg.train.channels_last is True
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\ntrain:\n  amp: off\n")
    assert load_config(str(f)).train.amp == "off"


# Validation of a resolved config.

@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid(name):
    from attngan.config import validate

    assert validate(preset(name)) is not None
    assert load_config(name) == preset(name)


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"batch_size": 0}}, "'train.batch_size' must be at least 1, got 0"),
    ({"damsm": {"batch_size": -4}}, "'damsm.batch_size' must be at least 1, got -4"),
    ({"data": {"workers": -1}}, "'data.workers' must be 0 or more, got -1"),
    ({"data": {"base_size": 0}}, "'data.base_size' must be at least 1"),
    ({"data": {"branch_num": 0}}, "'data.branch_num' must be at least 1"),
    ({"data": {"max_bad_fraction": 1.5}}, "'data.max_bad_fraction' must be from 0 to 1"),
    ({"data": {"dataset": "imagenet"}}, "'data.dataset' must be one of birds, coco, got 'imagenet'"),
    ({"data": {"short_captions": "drop"}}, "'data.short_captions' must be one of skip, pad"),
    ({"text": {"rnn_type": "lstm"}}, "'text.rnn_type' must be one of LSTM, GRU"),
    ({"text": {"dropout": 1.0}}, "'text.dropout' must be from 0 to 1 (exclusive)"),
    ({"text": {"embedding_dim": 7}}, "'text.embedding_dim' must be even"),
    ({"damsm": {"epochs": -1}}, "'damsm.epochs' must be 0 or more, got -1"),
    ({"damsm": {"lr": 0}}, "'damsm.lr' must be greater than 0"),
    ({"damsm": {"lr_decay": 1.5}}, "'damsm.lr_decay' must be greater than 0 and at most 1"),
    ({"damsm": {"betas": [0.5, 1.0]}}, "'damsm.betas' must be two numbers"),
    ({"damsm": {"betas": ["a", "b"]}}, "'damsm.betas' must be a list of 2 numbers"),
    ({"damsm": {"betas": [True, 0.9]}}, "'damsm.betas' must be a list of 2 numbers"),
    ({"damsm": {"gamma1": float("inf")}}, "'damsm.gamma1' must be a finite number"),
    ({"gan": {"gf_dim": -16}}, "'gan.gf_dim' must be at least 1, got -16"),
    ({"gan": {"r_num": -1}}, "'gan.r_num' must be 0 or more"),
    ({"train": {"total_kimg": 0}}, "'train.total_kimg' must be greater than 0"),
    ({"train": {"lr_d": -1e-4}}, "'train.lr_d' must be greater than 0"),
    ({"train": {"minutes": -1}}, "'train.minutes' must be 0 or more"),
    ({"train": {"ema_decay": 2}}, "'train.ema_decay' must be from 0 to 1"),
    ({"train": {"lr_g": float("nan")}}, "'train.lr_g' must be a finite number"),
    ({"seed": -1}, "'seed' must be an integer from 0 to 2**63 - 1"),
    ({"seed": 2**64}, "'seed' must be an integer from 0 to 2**63 - 1"),
])
def test_validation_names_the_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(preset("tiny"), overrides)
    assert message in str(info.value) and "\n" not in str(info.value)
    # The same through a saved model's config dict (Config.from_dict).
    cfg = preset("tiny")
    with pytest.raises(ConfigError, match="must"):
        type(cfg).from_dict(_merge(cfg.to_dict(), overrides))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return out


def test_validation_of_configs_built_in_python():
    from attngan.config import validate

    cfg = preset("tiny")
    cfg.train.batch_size = 2.5
    with pytest.raises(ConfigError, match="'train.batch_size' must be an integer"):
        validate(cfg)
    cfg = preset("tiny")
    cfg.train.betas = (0.5,)
    with pytest.raises(ConfigError, match="'train.betas' must be two numbers"):
        validate(cfg)


def test_config_file_values_are_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\ntrain:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match="'train.batch_size' must be at least 1, got 0"):
        load_config(str(f))
    f.write_text("TRAIN:\n  BATCH_SIZE: 0\n")  # an original AttnGAN yml
    with pytest.raises(ConfigError, match="'train.batch_size' must be at least 1, got 0"):
        load_config(str(f))
