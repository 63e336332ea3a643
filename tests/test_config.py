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
