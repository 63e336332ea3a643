import json

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
    with pytest.raises(AttnGANError, match="no word"):
        pipe(["zebra giraffe"])
    out = pipe(["a zebra bird"], seed=0)
    assert out.dropped == [["zebra"]] and out.tokens == [["a", "bird"]]
    long = " ".join(["bird"] * 40)
    out = pipe([long], seed=0)
    assert len(out.tokens[0]) == pipe.words_num
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
    meta["format_version"] = 99
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AttnGANError, match="format version 99"):
        AttnGANPipeline.from_pretrained(old)
    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_model_dir, trunc)
    data = (trunc / "generator.safetensors").read_bytes()
    (trunc / "generator.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AttnGANError, match="cannot read weights"):
        AttnGANPipeline.from_pretrained(trunc)
