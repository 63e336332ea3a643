import json
from pathlib import Path

import pytest
import torch

from attngan.errors import AttnGANError
from attngan.pipeline import AttnGANPipeline

PROMPT = "a bird with wings that are black and a white belly"


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")


def test_outputs_every_stage_and_attention(pipe):
    out = pipe([PROMPT, "a blue bird"], seed=0)
    cfg = pipe.config
    assert [x.shape[-1] for x in out.images] == [cfg.data.base_size * 2**i for i in range(cfg.data.branch_num)]
    assert all(x.shape[:2] == (2, 3) and x.min() >= -1 and x.max() <= 1 for x in out.images)
    T = max(len(t) for t in out.tokens)
    assert len(out.attention) == cfg.data.branch_num - 1
    att = out.attention[0]
    assert att.shape[:2] == (2, T)
    # Attention sums to 1 over real words and is exactly 0 on padding (sample 1 is shorter).
    n1 = len(out.tokens[1])
    assert torch.allclose(att[1, :n1].sum(0), torch.ones_like(att[1, 0]), atol=1e-5)
    assert att[1, n1:].abs().max() == 0
    assert out.tokens[1] == ["a", "blue", "bird"]
    assert out.to_pil()[0].size == (cfg.data.image_size, cfg.data.image_size)


def test_seed_reproducible_and_batch_independent(pipe):
    a = pipe([PROMPT], seed=3)
    b = pipe([PROMPT], seed=3)
    assert torch.equal(a.images[-1], b.images[-1])
    c = pipe([PROMPT], seed=4)
    assert not torch.equal(a.images[-1], c.images[-1])
    # The same caption with the same noise gives the same image inside a mixed-length batch.
    z, eps = pipe.sample_noise(3, seed=7)
    solo = pipe([PROMPT], noise=z[:1], ca_noise=eps[:1])
    mixed = pipe([PROMPT, "a red bird", "this bird has a short pointed bill"], noise=z, ca_noise=eps)
    for s in range(len(solo.images)):
        assert torch.allclose(solo.images[s][0], mixed.images[s][0], atol=1e-5)
    # Chunked generation equals one batch.
    chunked = pipe([PROMPT, "a red bird", "this bird has a short pointed bill"], noise=z, ca_noise=eps,
                   batch_size=1)
    assert torch.allclose(chunked.images[-1], mixed.images[-1], atol=1e-5)


def test_bad_captions_give_clear_errors(pipe):
    with pytest.raises(AttnGANError, match="empty"):
        pipe(["   "])
    with pytest.raises(AttnGANError, match="none of the caption's words is in the model's vocabulary") as e:
        pipe(["zebra giraffe"])
    assert e.value.dropped == ["zebra", "giraffe"]
    with pytest.raises(AttnGANError, match="has no words"):
        pipe(["!!! ???"])
    out = pipe(["a zebra bird"], seed=0)
    assert out.dropped == [["zebra"]] and out.tokens == [["a", "bird"]]
    long = " ".join(["bird"] * 40)
    out = pipe([long], seed=0)
    assert len(out.tokens[0]) == pipe.words_num
    enc = pipe.encode_caption("a zebra bird " + long)  # what serve answers with, too
    assert enc.dropped == ["zebra"] and len(enc.ids) == pipe.words_num
    assert enc.tokens[:2] == ["a", "bird"] and enc.truncated == ["bird"] * (42 - pipe.words_num)
    with pytest.raises(AttnGANError, match="noise must be"):
        pipe([PROMPT], noise=torch.zeros(1, 5))


def test_model_folder_errors(tiny_model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "generator.safetensors").unlink()
    with pytest.raises(AttnGANError, match="missing generator.safetensors"):
        AttnGANPipeline.from_pretrained(broken)
    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    meta = json.loads((old / "config.json").read_text())
    meta["version"] = 99
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AttnGANError, match="format version 99"):
        AttnGANPipeline.from_pretrained(old)
    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_model_dir, trunc)
    data = (trunc / "generator.safetensors").read_bytes()
    (trunc / "generator.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AttnGANError, match="cannot read weights"):
        AttnGANPipeline.from_pretrained(trunc)


@pytest.mark.parametrize("name, stages, size", [(None, 3, 128), ("synthbirds-128", 3, 128),
                                                 ("synthbirds-tiny", 2, 64)])
def test_bundled_models_load_generate_and_carry_their_cards(name, stages, size):
    # The shipped folders: `generate` and `serve` use the default without --model, the other by name.
    from attngan.pipeline import bundled_model_dir

    bundle = AttnGANPipeline.from_pretrained(name, device="cpu")
    out = bundle([PROMPT], seed=0)
    assert len(out.images) == stages and len(out.attention) == stages - 1
    assert out.images[-1].shape == (1, 3, size, size) and torch.isfinite(out.images[-1]).all()
    assert all(a.shape[1] == len(out.tokens[0]) for a in out.attention)
    meta = json.loads((bundled_model_dir(name) / "config.json").read_text(encoding="utf-8"))
    card = meta["model_card"]
    assert card["name"] == (name or "synthbirds-128") and any("attngan" in c for c in card["commands"])
    binding = next(m for m in card["metrics"] if m["name"] == "binding")
    assert {"wing", "belly"} <= set(binding["per_attribute"])


SCENES_BUNDLE = Path(__file__).resolve().parents[1] / "src/attngan/assets/synthscenes-128"


@pytest.mark.skipif(not (SCENES_BUNDLE / "config.json").is_file(),
                    reason="the synthscenes-128 bundle is not in src/attngan/assets")
def test_the_bundled_scene_model_draws_like_the_bird_one(tmp_path, capsys):
    """`from_pretrained("synthscenes-128")` and `generate --model synthscenes-128`: every stage (as
    many as its config has), every attentional stage's map of every word; the birds stay the default."""
    from attngan.cli import main
    from attngan.pipeline import bundled_model_dir, bundled_model_names

    caption = "a red bus is floating on a lake"
    assert bundled_model_names()[0] == "synthbirds-128" and "synthscenes-128" in bundled_model_names()
    assert bundled_model_dir() == bundled_model_dir("synthbirds-128")
    scenes = AttnGANPipeline.from_pretrained("synthscenes-128", device="cpu")
    cfg = scenes.config
    assert cfg.data.dataset == "coco"
    out = scenes([caption, "two yellow kites flying over the beach"], seed=0)
    sizes = [cfg.data.base_size * 2**s for s in range(cfg.data.branch_num)]
    assert [x.shape[-1] for x in out.images] == sizes and all(torch.isfinite(x).all() for x in out.images)
    assert len(out.attention) == cfg.data.branch_num - 1 >= 1
    assert out.tokens[0] == caption.split() and out.dropped == [[], []]
    for att in out.attention:
        n = len(out.tokens[0])
        assert torch.allclose(att[0, :n].sum(0), torch.ones_like(att[0, 0]), atol=1e-4)

    assert main(["generate", "--model", "synthscenes-128", caption, "--out", str(tmp_path), "--seed", "0"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"000_s0_stage{s}_{px}px.png" for s, px in enumerate(sizes)] + ["000_s0_attention.png"])
    assert f"000_s0: {caption}" in capsys.readouterr().out


def test_an_unknown_bundled_name_is_one_clear_error(tmp_path, monkeypatch):
    from attngan.pipeline import bundled_model_dir, resolve_model

    with pytest.raises(AttnGANError, match="no bundled model named 'nope'"):
        bundled_model_dir("nope")
    # A folder of the same name as a bundled model wins over the bundled one.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthbirds-tiny").mkdir()
    assert resolve_model("synthbirds-tiny").resolve() == (tmp_path / "synthbirds-tiny").resolve()


def test_export_bundle_writes_half_precision_with_card(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from attngan.model_card import export_bundle

    metrics = [{"name": "r_precision", "value": 12.5, "std": 1.0, "n": 8}]
    folder = export_bundle(tiny_model_dir, tmp_path / "bundle", metrics, ["attngan demo"], 3, {"total": 1.0})
    weights = load_file(str(folder / "generator.safetensors"))
    assert any(v.dtype == torch.float16 for v in weights.values())
    assert all(v.dtype != torch.float16 for k, v in weights.items() if "running_" in k)
    again = AttnGANPipeline.from_pretrained(folder, device="cpu")
    assert torch.isfinite(again([PROMPT], seed=0).images[-1]).all()
    card = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_card"]
    assert card["seed"] == 3 and card["metrics"][0]["value"] == 12.5 and card["commands"] == ["attngan demo"]


def test_a_bundled_name_serves_as_damsm_and_as_init():
    # `train --damsm synthbirds-tiny --init synthbirds-tiny` is how the default model was grown.
    from attngan.pipeline import bundled_model_dir
    from attngan.io import load_damsm

    cfg, vocab, te, ie = load_damsm("synthbirds-tiny")
    tiny = AttnGANPipeline.from_pretrained("synthbirds-tiny", device="cpu")
    assert len(vocab) == len(tiny.vocab) and cfg.damsm.image_size == tiny.config.damsm.image_size
    for a, b in zip(te.state_dict().values(), tiny.text_encoder.state_dict().values()):
        assert torch.equal(a, b)
    assert (bundled_model_dir("synthbirds-tiny") / "generator.safetensors").is_file()
