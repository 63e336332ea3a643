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


# One loader and one validator for every config: limits are field metadata (config_io.param).

import dataclasses  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from attngan.config_io import param  # noqa: E402


@dataclass
class _Toy:
    size: int = param(4, at_least=1, at_most=64, multiple_of=2, why="split in halves")
    rate: float = param(0.5, range=(0.0, 1.0), open="high")
    decay: float = param(0.9, range=(0.0, 1.0), open="low")
    step: float = param(1.0, above=0)
    mode: str = param("a", choices=("a", "b"))
    pair: tuple[float, float] = param((0.1, 0.2), range=(0.0, 1.0))
    on: bool = False


@dataclass
class _ToyConfig:
    name: str = "toy"
    seed: int = param(0, seed=True)
    toy: _Toy = field(default_factory=_Toy)


@pytest.mark.parametrize("overrides, message", [
    ({"toy": {"size": 0}}, "'toy.size' must be at least 1, got 0"),
    ({"toy": {"size": 66}}, "'toy.size' must be at most 64, got 66"),
    ({"toy": {"size": 3}}, "'toy.size' must be even (split in halves), got 3"),
    ({"toy": {"rate": 1}}, "'toy.rate' must be from 0 to 1 (exclusive), got 1.0"),
    ({"toy": {"decay": 0}}, "'toy.decay' must be greater than 0 and at most 1, got 0.0"),
    ({"toy": {"step": 0}}, "'toy.step' must be greater than 0, got 0.0"),
    ({"toy": {"mode": "c"}}, "'toy.mode' must be one of a, b, got 'c'"),
    ({"toy": {"pair": [0.1, 2]}}, "'toy.pair' must be two numbers, each from 0 to 1, got (0.1, 2.0)"),
    ({"toy": {"pair": [0.1]}}, "'toy.pair' must be a list of 2 numbers, got [0.1]"),
    ({"toy": {"on": "yes"}}, "'toy.on' must be true or false, got 'yes'"),
    ({"toy": {"sizes": 4}}, "unknown config key 'toy.sizes'"),
    ({"toy": 4}, "'toy' must be a mapping, got int"),
    ({"seed": -1}, "'seed' must be an integer from 0 to 2**63 - 1, got -1"),
])
def test_the_generic_validator_reads_limits_from_field_metadata(overrides, message):
    # A config the machinery has never seen: every check comes from what its fields declare.
    from attngan.config_io import apply_overrides

    with pytest.raises(ConfigError) as info:
        apply_overrides(_ToyConfig(), overrides)
    assert str(info.value) == message
    good = apply_overrides(_ToyConfig(), {"toy": {"size": 64, "rate": 0, "decay": 1, "pair": [0, 1]}})
    assert (good.toy.size, good.toy.rate, good.toy.decay, good.toy.pair) == (64, 0.0, 1.0, (0.0, 1.0))


def test_the_generic_loader_reads_presets_and_files(tmp_path):
    from attngan.config_io import load

    presets = {"small": _ToyConfig, "big": lambda: _ToyConfig(name="big", toy=_Toy(size=32))}
    assert load("big", presets, default="small").toy.size == 32
    f = tmp_path / "t.yaml"
    f.write_text("preset: big\ntoy:\n  mode: b\n")
    cfg = load(str(f), presets, {"toy": {"rate": 0.25}}, default="small")
    assert (cfg.name, cfg.toy.size, cfg.toy.mode, cfg.toy.rate) == ("big", 32, "b", 0.25)
    f.write_text("preset: huge\n")
    with pytest.raises(ConfigError, match="unknown toy preset 'huge'; choose one of small, big"):
        load(str(f), presets, default="small", what="toy preset")
    f.write_text("toy: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse config"):
        load(str(f), presets, default="small")


def test_param_refuses_a_limit_it_does_not_know():
    with pytest.raises(TypeError, match="unknown limits"):
        param(1, at_lest=0)
    with pytest.raises(TypeError, match="open="):
        param(1.0, open="high")


def _all_value_fields(cls, path=""):
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            yield from _all_value_fields(type(f.default_factory()), f"{path}{f.name}.")
        else:
            yield f"{path}{f.name}", f


def test_every_number_in_a_config_declares_its_limits():
    from attngan.config import CaptionerConfig, Config

    for cls in (Config, CaptionerConfig):
        for key, f in _all_value_fields(cls):
            if isinstance(f.default, (int, float, tuple)) and not isinstance(f.default, bool):
                assert {"at_least", "above", "range", "seed"} & set(f.metadata), f"{cls.__name__}: {key}"


def test_an_attribute_that_is_no_field_is_an_error():
    # A preset that sets a misspelt or moved field would otherwise be ignored without a word.
    from attngan.config import validate

    cfg = preset("tiny")
    cfg.damsm.epoch = 5
    with pytest.raises(ConfigError, match="unknown config key 'damsm.epoch'"):
        validate(cfg)


# The DAMSM's two jobs: the encoders (DAMSMConfig) and their pretraining (DAMSMTrainConfig), kept
# under the one key `damsm` that every saved config and `--set damsm.X` use.

# A `damsm` section as configs saved before the split have it (every key flat under `damsm`).
OLD_DAMSM_SECTION = {
    "backbone": "small", "image_size": 64, "small_width": 32, "small_pool": "avgmax",
    "inception_weights": "", "align_corners": False, "gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0,
    "words_num": 24, "batch_size": 32, "lr": 0.002, "betas": [0.5, 0.999], "lr_decay": 0.98,
    "min_lr": 0.0002, "reset_optimizer": False, "amp": "auto", "channels_last": True,
    "rnn_grad_clip": 0.25, "epochs": 40, "snapshot_epochs": 5, "max_bad_steps": 20,
}


def test_damsm_fields_are_split_by_job():
    from attngan.config import DAMSMConfig, DAMSMSection, DAMSMTrainConfig

    encoders = [f.name for f in dataclasses.fields(DAMSMConfig)]
    training = [f.name for f in dataclasses.fields(DAMSMTrainConfig)]
    assert not set(encoders) & set(training)
    assert [f.name for f in dataclasses.fields(DAMSMSection)] == encoders + training
    assert sorted(encoders + training) == sorted(OLD_DAMSM_SECTION)
    assert {"backbone", "image_size", "gamma1", "words_num"} <= set(encoders)
    assert {"lr", "epochs", "batch_size", "amp"} <= set(training)
    assert isinstance(preset("tiny").damsm, DAMSMConfig) and isinstance(preset("tiny").damsm, DAMSMTrainConfig)


def test_a_config_saved_before_the_split_loads_unchanged():
    from attngan.config import Config

    old = json.loads(preset("tiny").to_json())
    old["damsm"] = dict(OLD_DAMSM_SECTION, lr=0.001, epochs=7)
    cfg = Config.from_dict(old)
    assert (cfg.damsm.lr, cfg.damsm.epochs, cfg.damsm.backbone) == (0.001, 7, "small")
    assert json.loads(cfg.to_json()) == old


def test_damsm_overrides_keep_their_keys():
    from attngan.commands._common import parse_overrides

    cfg = load_config("tiny", parse_overrides(["damsm.lr=0.001", "damsm.betas=[0.9, 0.99]",
                                               "damsm.image_size=32", "damsm.amp=off"]))
    assert (cfg.damsm.lr, cfg.damsm.betas, cfg.damsm.image_size, cfg.damsm.amp) == (0.001, (0.9, 0.99), 32, "off")
    with pytest.raises(ConfigError, match="'damsm.lr' must be greater than 0"):
        load_config("tiny", parse_overrides(["damsm.lr=0"]))


def test_every_bundled_config_loads_to_the_same_values():
    from attngan import io
    from attngan.config import CaptionerConfig, Config

    seen = 0
    for path in sorted(io.ASSETS.rglob("config.json")):
        meta = json.loads(path.read_text())
        if "config" not in meta:
            continue  # the oracle keeps its few settings at the top level
        cls = CaptionerConfig if meta["kind"] == "captioner" else Config
        loaded = json.loads(json.dumps(cls.from_dict(meta["config"]).to_dict()))
        # Every saved key keeps its value and its place (keys added since take their defaults).
        assert _subset(meta["config"], loaded), path
        seen += 1
    assert seen >= 4


def _subset(saved: dict, loaded: dict) -> bool:
    return all(k in loaded and (_subset(v, loaded[k]) if isinstance(v, dict) else v == loaded[k])
               for k, v in saved.items())


def test_the_captioner_config_goes_through_the_same_loader(tmp_path):
    from attngan.config import load_captioner_config

    f = tmp_path / "c.yaml"
    f.write_text("preset: synthbirds-captioner\nepochs: 2\ndata:\n  workers: 1\n")
    cfg = load_captioner_config(str(f), {"lr": 0.01})
    assert (cfg.name, cfg.epochs, cfg.data.workers, cfg.lr, cfg.batch_size) == (
        "synthbirds-captioner", 2, 1, 0.01, 128)
    # Its data section is a DataConfig, checked as the text-to-image model's is.
    with pytest.raises(ConfigError, match="'data.base_size' must be at least 1, got 0"):
        load_captioner_config("captioner", {"data": {"base_size": 0}})
    with pytest.raises(ConfigError, match="'image_size' must be a multiple of 8"):
        load_captioner_config("captioner", {"image_size": 60})
    f.write_text("preset: bird\n")
    with pytest.raises(ConfigError, match="unknown captioner preset 'bird'"):
        load_captioner_config(str(f))
    with pytest.raises(ConfigError, match="neither a captioner preset"):
        load_captioner_config(str(tmp_path / "missing.yaml"))


def test_grown_presets_keep_their_two_stage_shapes():
    # A three-stage CPU preset is grown from a trained two-stage model (`train --init`): everything
    # but the number of stages must be the two-stage preset's, else the weights would not load.
    for grown, base in (("synthbirds-128", "tiny"), ("synthscenes-128", "coco-tiny")):
        g, b = preset(grown).to_dict(), preset(base).to_dict()
        assert g["data"].pop("branch_num") == 3 and b["data"].pop("branch_num") == 2
        for section in ("gan", "text", "damsm", "data"):
            assert g[section] == b[section], (grown, section)
    assert preset("synthscenes-128").data.captions_per_image == 5
