"""One loader for every saved thing (attngan.io.resolve / io.load): names, run folders and model
folders resolve to one folder; networks are built without a random init and equal the saved ones;
configs that ask for huge networks are refused before any is built; a pipeline loads only what
generation uses and folds BatchNorm by default."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attngan import io
from attngan.errors import AttnGANError

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a bird with black wings and a white belly", "this bird has a short pointed bill"]


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert len(text.splitlines()) == 1 and len(text) < 400, text
    return text


# resolve

@pytest.mark.parametrize("kind, name, folder", [
    ("generator", "synthbirds-tiny", "synthbirds-tiny"),
    ("generator", None, "synthbirds-128"),
    ("damsm", "synthbirds-tiny", "synthbirds-tiny"),  # a model's encoders
    ("damsm", "synthbirds-eval", "synthbirds-eval/damsm_eval"),
    ("captioner", None, "synthbirds-captioner"),
    ("oracle", "synthbirds-eval", "synthbirds-eval/oracle"),
])
def test_bundled_names_resolve_to_the_shipped_folders(kind, name, folder):
    assert io.resolve(name, kind) == io.ASSETS / folder
    loaded = io.read(name, kind)
    assert loaded.folder == io.ASSETS / folder and loaded.modules == {}


def test_unknown_names_and_missing_folders_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(AttnGANError) as e:
        io.bundled_dir("captioner", "nope")
    assert "no bundled captioner named 'nope'; bundled: synthbirds-captioner" in _one_line(e)
    for kind, what in (("generator", "model"), ("damsm", "DAMSM"), ("captioner", "captioner"), ("oracle", "oracle")):
        with pytest.raises(AttnGANError) as e:
            io.load(tmp_path / "nowhere", kind)
        assert f"{what} folder {tmp_path / 'nowhere'} does not exist" in _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AttnGANError) as e:
        io.load(tmp_path / "empty", "generator")
    assert "is not a model folder (it has no config.json)" in _one_line(e)
    # A folder of the same name as a bundled one wins.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthbirds-eval").mkdir()
    assert io.resolve("synthbirds-eval", "oracle") == Path("synthbirds-eval")
    # No bundled folder of a kind in this installation: the default is one clear line.
    monkeypatch.setattr(io, "ASSETS", tmp_path / "no-assets")
    with pytest.raises(AttnGANError) as e:
        io.resolve(None, "generator")
    assert "no bundled model in this installation" in _one_line(e)


def test_run_folders_resolve_to_their_snapshot(tiny_model_dir, tmp_path):
    from attngan.captioner import resolve_captioner

    gan_run = tmp_path / "gan"
    shutil.copytree(tiny_model_dir, gan_run / "model")
    assert io.resolve(gan_run, "generator") == gan_run / "model"
    damsm_run = tmp_path / "damsm"
    shutil.copytree(tiny_model_dir, damsm_run / "best")
    assert io.resolve(damsm_run, "damsm") == damsm_run / "best"
    assert io.load_damsm(damsm_run)[0].name == "tiny"
    # A captioner run keeps last/ beside best/ in the current layout: best/ is the one loaded.
    cap_run = tmp_path / "captioner"
    for snap in ("best", "last"):
        shutil.copytree(io.ASSETS / "synthbirds-captioner", cap_run / snap)
    assert io.resolve(cap_run, "captioner") == resolve_captioner(cap_run) == cap_run / "best"
    # A snapshot or model folder given directly is itself.
    assert io.resolve(tiny_model_dir, "generator") == tiny_model_dir


# load

def test_load_builds_the_saved_networks_without_initialising_them(tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file

    devices = []
    real = io.build_generator

    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)  # the default device the builder runs under
        return real(*args, **kwargs)

    monkeypatch.setattr(io, "build_generator", recording)
    loaded = io.load(tiny_model_dir, "generator")
    assert devices == ["meta"]
    assert sorted(loaded.modules) == ["generator", "image_encoder", "text_encoder"]
    assert loaded.config.name == "tiny" and len(loaded.vocab) == loaded.meta["n_words"]
    for name, module in loaded.modules.items():
        assert not module.training
        saved = load_file(str(tiny_model_dir / f"{name}.safetensors"))
        own = module.state_dict()
        assert own.keys() == saved.keys()
        for k, v in saved.items():
            assert torch.equal(own[k], v), (name, k)
        assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])
        assert all(p.requires_grad for p in module.parameters())


def test_loaded_networks_compute_what_the_initialised_and_filled_ones_compute(tiny_model_dir):
    # The bi-LSTM keeps its own list of weight tensors: taking the saved tensors as its own must
    # reach it, or the text encoder would run on something else.
    from attngan.networks import build_generator, build_text_encoder
    from attngan.pipeline import AttnGANPipeline

    loaded = io.load(tiny_model_dir, "generator")
    cfg, n = loaded.config, len(loaded.vocab)
    te, g = build_text_encoder(cfg, n), build_generator(cfg, cfg.text.embedding_dim)
    io.load_state(te, io.load_safetensors(tiny_model_dir / "text_encoder.safetensors"), "te")
    io.load_state(g, io.load_safetensors(tiny_model_dir / "generator.safetensors"), "g")
    classic = AttnGANPipeline(cfg, loaded.vocab, te, g)
    new = AttnGANPipeline(cfg, loaded.vocab, loaded.modules["text_encoder"], loaded.modules["generator"])
    a, b = classic(PROMPTS, seed=1), new(PROMPTS, seed=1)
    for x, y in zip(a.images + a.attention, b.images + b.attention):
        assert torch.equal(x, y)


def test_building_skips_the_random_init(tiny_model_dir):
    # On the meta device some fills (normal_, clamp_) are Python code that imports torch's
    # compiler stack: seconds and ~100 MB for nothing, since the saved weights replace them.
    script = (
        "import sys\n"
        "import torch\n"
        "if 'torch._dynamo' in sys.modules:\n"
        "    print('imported with torch'); sys.exit(0)\n"
        "from attngan import io\n"
        "for name, kind in ((sys.argv[1], 'generator'), ('synthbirds-captioner', 'captioner'),\n"
        "                   ('synthbirds-eval', 'oracle'), ('synthbirds-eval', 'damsm')):\n"
        "    io.load(name, kind)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tiny_model_dir)], capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] in ("False", "imported with torch")
    with torch.device("meta"), io._SkipFills():
        emb = torch.nn.Embedding(5, 3).requires_grad_(False)
    assert emb.weight.is_meta and not emb.weight.requires_grad  # what a tensor is stays changeable


def test_parts_choose_what_is_built(tiny_model_dir, tmp_path):
    from attngan.networks import build_discriminators

    only = io.load(tiny_model_dir, "generator", parts=("text_encoder",))
    assert list(only.modules) == ["text_encoder"]
    image_encoder = only.build("image_encoder")
    assert only.modules["image_encoder"] is image_encoder and not image_encoder.training
    # Discriminators are a part of a model folder that has them, built only when asked for.
    folder = tmp_path / "with_d"
    shutil.copytree(tiny_model_dir, folder)
    ds = build_discriminators(only.config)
    io.atomic_save_safetensors(ds.state_dict(), folder / io.DISCRIMINATORS_FILE)
    assert "discriminators" not in io.load(folder, "generator").modules
    both = io.load(folder, "generator", parts=("generator", "discriminators"))
    assert sorted(both.modules) == ["discriminators", "generator"]
    loaded_d = both.modules["discriminators"].state_dict()
    assert loaded_d.keys() == ds.state_dict().keys()
    assert all(torch.equal(loaded_d[k], v) for k, v in ds.state_dict().items())
    assert list(io.load(tiny_model_dir, "generator", parts=("discriminators",)).modules) == []
    later = io.read(tiny_model_dir, "generator")  # no vocabulary read yet: build reads it first
    assert later.vocab is None and later.build("text_encoder").state_dict().keys() == only.modules[
        "text_encoder"].state_dict().keys() and len(later.vocab) == len(only.vocab)
    with pytest.raises(ValueError, match="no part 'decoder'"):
        io.load(tiny_model_dir, "generator", parts=("decoder",))


def test_a_vocabulary_that_does_not_match_the_model_is_one_line(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["n_words"] = meta["n_words"] + 1
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AttnGANError) as e:
        io.load(folder, "generator")
    assert "vocab.json has" in _one_line(e) and "the model was built for" in str(e.value)


# Architecture limits: refused before any network is built.

BAD_CONFIGS = [
    ({"gan": {"gf_dim": 1024}}, "'gan.gf_dim' must be at most 256"),
    ({"gan": {"r_num": 10 ** 6}}, "'gan.r_num' must be at most 16"),
    ({"gan": {"df_dim": 4096}}, "'gan.df_dim' must be at most"),
    ({"gan": {"z_dim": 10 ** 9}}, "'gan.z_dim' must be at most"),
    ({"gan": {"condition_dim": 10 ** 6}}, "'gan.condition_dim' must be at most"),
    ({"data": {"branch_num": 50}}, "'data.branch_num' must be at most"),
    ({"data": {"words_num": 10 ** 9}}, "'data.words_num' must be at most"),
    ({"data": {"base_size": 2 ** 20}}, "'data.base_size' must be at most"),
    ({"data": {"base_size": 256, "branch_num": 4}}, "the last stage's image size"),
    ({"text": {"embedding_dim": 10 ** 6}}, "'text.embedding_dim' must be at most"),
    ({"text": {"word_dim": 10 ** 6}}, "'text.word_dim' must be at most"),
    ({"damsm": {"image_size": 100000}}, "'damsm.image_size' must be at most"),
    ({"damsm": {"small_width": 10 ** 5}}, "'damsm.small_width' must be at most"),
    ({"damsm": {"words_num": 10 ** 9}}, "'damsm.words_num' must be at most"),
    ({"gan": {"gf_dim": 1e300}}, "'gan.gf_dim' must be an integer"),
]


def _model_with_config(src: Path, dst: Path, change: dict) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    for section, values in change.items():
        meta["config"][section].update(values)
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("change, message", BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_a_model_config_asking_for_huge_networks_is_refused_before_building(
        change, message, tiny_model_dir, tmp_path, monkeypatch):
    from attngan.pipeline import AttnGANPipeline

    def never(*args, **kwargs):
        raise AssertionError("a network was built")

    for name in ("build_generator", "build_text_encoder", "build_image_encoder", "build_discriminators"):
        monkeypatch.setattr(io, name, never)
    folder = _model_with_config(tiny_model_dir, tmp_path / "m", change)
    for load in (lambda: AttnGANPipeline.from_pretrained(folder, device="cpu"), lambda: io.load_damsm(folder)):
        with pytest.raises(AttnGANError) as e:
            load()
        assert message in _one_line(e) and str(folder) in str(e.value)


@pytest.mark.parametrize("key, value", [("width", 10 ** 6), ("hidden_dim", 10 ** 7), ("embed_dim", 10 ** 6),
                                        ("attention_dim", 10 ** 6), ("image_size", 2 ** 20), ("max_len", 10 ** 9)])
def test_a_captioner_config_asking_for_huge_networks_is_refused(key, value, tmp_path):
    folder = tmp_path / "c"
    shutil.copytree(io.ASSETS / "synthbirds-captioner", folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"][key] = value
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AttnGANError) as e:
        io.load(folder, "captioner")
    assert f"'{key}' must be at most" in _one_line(e)


def test_the_original_releases_sizes_pass_the_limits():
    from attngan.config import apply_overrides, preset

    for name in ("bird", "bird-attn1", "bird-dcgan", "coco", "tiny", "synthbirds-128"):
        preset(name)  # validated when built into a config
    # The original's own defaults (code/miscc/config.py): GF_DIM 128, DF_DIM 64; its DAMSM at 299 px.
    apply_overrides(preset("bird"), {"gan": {"gf_dim": 128, "df_dim": 96, "r_num": 3},
                                     "damsm": {"image_size": 299, "words_num": 25}})


def test_a_refused_config_costs_little_memory(tiny_model_dir, tmp_path):
    # Peak resident memory of the process around the refusal (after torch and attngan are
    # imported): without the limits, gf_dim 1024 allocates gigabytes before anything fails.
    folder = _model_with_config(tiny_model_dir, tmp_path / "m", {"gan": {"gf_dim": 1024, "r_num": 10 ** 6}})
    script = (
        "import resource, sys\n"
        "from attngan.errors import AttnGANError\n"
        "from attngan.pipeline import AttnGANPipeline\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    AttnGANPipeline.from_pretrained(sys.argv[1], device='cpu')\n"
        "except AttnGANError as e:\n"
        "    print('refused:', e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused:") and "gan.gf_dim" in lines[0]
    assert float(lines[-1]) < 100  # MB above the imports' peak


# The pipeline: only what generation uses, BatchNorm folded.

def test_from_pretrained_builds_the_image_encoder_only_when_asked(tiny_model_dir):
    from safetensors.torch import load_file

    from attngan.pipeline import AttnGANPipeline

    pipe = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    assert "image_encoder" not in pipe.source.modules
    pipe(PROMPTS[:1], seed=0)
    assert "image_encoder" not in pipe.source.modules  # generation never needs it
    encoder = pipe.image_encoder  # evaluation and localisation do: built on first use
    assert encoder is pipe.image_encoder and not encoder.training
    saved = load_file(str(tiny_model_dir / "image_encoder.safetensors"))
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in saved.items())
    eager = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", image_encoder=True)
    assert "image_encoder" in eager.source.modules and eager.image_encoder is eager.source.modules["image_encoder"]


def test_generate_never_builds_the_image_encoder(tiny_model_dir, tmp_path, monkeypatch):
    from attngan import cli

    def refuse(*args, **kwargs):
        raise AssertionError("the DAMSM image encoder was built")

    monkeypatch.setattr(io, "build_image_encoder", refuse)
    out = tmp_path / "g"
    assert cli.main(["generate", "--model", str(tiny_model_dir), "--out", str(out), "a bird with black wings"]) == 0
    assert len(list(out.glob("*_stage*.png"))) == 2
    with pytest.raises(AssertionError, match="image encoder was built"):  # the check can fail
        io.load(tiny_model_dir, "generator", "cpu", ("generator", "image_encoder"))


def test_from_pretrained_folds_batchnorm_by_default_and_draws_the_same_images(tiny_model_dir, tmp_path):
    from attngan.pipeline import AttnGANPipeline

    fused = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    plain = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", fuse=False)
    assert getattr(fused.generator, "is_fused", False) and not getattr(plain.generator, "is_fused", False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.generator.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.generator.modules())
    a, b = plain(PROMPTS, seed=3), fused(PROMPTS, seed=3)
    for x, y in zip(a.images + a.attention, b.images + b.attention):
        assert float((x - y).abs().max()) < 1e-5
    with pytest.raises(AttnGANError, match="load it with fuse=False"):  # a folded G is for inference only
        io.save_model_folder(tmp_path / "m", fused.config, fused.vocab, fused.generator, fused.text_encoder,
                             fused.image_encoder)
    assert not (tmp_path / "m").exists()
