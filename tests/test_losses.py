"""Losses: the vectorised DAMSM word loss against a per-caption reference that mirrors the original
loop, class masking, batch size 1, GAN term weighting by hand, KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from attngan.errors import AttnGANError
from attngan.losses import (
    damsm_attention,
    discriminator_loss,
    generator_adv_loss,
    kl_loss,
    sent_loss,
    words_loss,
)
from attngan.networks import Discriminator


# --- Reference: the original's per-caption loop (code/miscc/losses.py), written out plainly ---


def reference_cosine(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return (x1 * x2).sum(1) / (x1.norm(dim=1) * x2.norm(dim=1)).clamp(min=1e-8)


def reference_attention(query: torch.Tensor, context: torch.Tensor, gamma1: float):
    """func_attention: query B x nef x T (real words only), context B x nef x h x w."""
    b, nef, h, w = context.shape
    t = query.size(2)
    ctx = context.view(b, nef, h * w)
    attn = torch.bmm(ctx.transpose(1, 2), query).view(b * h * w, t)  # (B*HW) x T
    attn = torch.softmax(attn, dim=1).view(b, h * w, t).transpose(1, 2).reshape(b * t, h * w)
    attn = torch.softmax(attn * gamma1, dim=1).view(b, t, h * w)
    weighted = torch.bmm(ctx, attn.transpose(1, 2))                  # B x nef x T
    return weighted, attn.view(b, t, h, w)


def reference_words_loss(regions, words, cap_lens, class_ids, gamma1, gamma2, gamma3):
    b = regions.size(0)
    sims, maps, masks = [], [], []
    for i in range(b):
        if class_ids is not None:
            m = class_ids == class_ids[i]
            m[i] = False
            masks.append(m)
        n = int(cap_lens[i])
        word = words[i : i + 1, :, :n].repeat(b, 1, 1)  # caption i against every image
        context, attn = reference_attention(word, regions, gamma1)
        maps.append(attn[i : i + 1])
        cos = reference_cosine(word.transpose(1, 2).reshape(b * n, -1),
                               context.transpose(1, 2).reshape(b * n, -1)).view(b, n)
        sims.append(torch.log(torch.exp(cos * gamma2).sum(dim=1, keepdim=True)))
    scores = torch.cat(sims, dim=1) * gamma3  # image x caption
    if class_ids is not None:
        scores = scores.masked_fill(torch.stack(masks), float("-inf"))
    labels = torch.arange(b)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels), maps


def reference_sent_loss(img_code, sent, class_ids, gamma3):
    scores = torch.zeros(img_code.size(0), sent.size(0))
    for b in range(img_code.size(0)):
        for i in range(sent.size(0)):
            scores[b, i] = reference_cosine(img_code[b : b + 1], sent[i : i + 1])[0] * gamma3
            if class_ids is not None and b != i and class_ids[b] == class_ids[i]:
                scores[b, i] = float("-inf")
    labels = torch.arange(img_code.size(0))
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def make_batch(b=6, nef=16, t=7, hw=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(b, nef, hw, hw, generator=g, dtype=dtype)
    words = torch.randn(b, nef, t, generator=g, dtype=dtype)
    cap_lens = torch.randint(1, t + 1, (b,), generator=g)
    cap_lens[0] = t
    # Padding positions hold junk on purpose: the loss must ignore them completely.
    return regions, words, cap_lens


# --- DAMSM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_classes,nef", [(False, 16), (True, 16), (True, 64)])
def test_words_loss_matches_reference_values_and_grads(with_classes, nef):
    # nef 16 < 25 regions builds the region context; nef 64 takes the Gram-matrix path.
    regions, words, cap_lens = make_batch(nef=nef)
    class_ids = torch.tensor([1, 2, 1, 3, 2, 4]) if with_classes else None
    inputs = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    refs = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    l0, l1, maps = words_loss(*inputs, cap_lens, class_ids, gamma1=4.0, gamma2=5.0, gamma3=10.0)
    r0, r1, ref_maps = reference_words_loss(*refs, cap_lens, class_ids, 4.0, 5.0, 10.0)
    assert torch.allclose(l0, r0, atol=1e-5) and torch.allclose(l1, r1, atol=1e-5)
    (l0 + 2 * l1).backward()
    (r0 + 2 * r1).backward()
    for a, b in zip(inputs, refs):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    assert (inputs[1].grad[5, :, int(cap_lens[5]):] == 0).all()  # no gradient into padding words
    for m, r, n in zip(maps, ref_maps, cap_lens.tolist()):
        assert m.shape == (1, n, 5, 5) and torch.allclose(m, r.detach(), atol=1e-6)


@pytest.mark.parametrize("nef", [16, 64])
def test_words_loss_gram_and_direct_context_agree(nef):
    # The two ways of computing cos(c, e) on the same inputs, values and gradients.
    regions, words, cap_lens = make_batch(nef=nef)
    grads = []
    for path in ("gram", "direct"):
        r, w = regions.clone().requires_grad_(), words.clone().requires_grad_()
        l0, l1, _ = words_loss(r, w, cap_lens, None, 4.0, 5.0, 10.0, context=path)
        (l0 + 2 * l1).backward()
        grads.append((l0.detach(), l1.detach(), r.grad, w.grad))
    for x, y in zip(*grads):
        assert torch.allclose(x, y, atol=1e-5)
    with pytest.raises(AttnGANError, match="auto, gram or direct"):
        words_loss(regions, words, cap_lens, context="fast")


@pytest.mark.parametrize("path", ["gram", "direct"])
def test_words_loss_under_autocast_runs_only_the_big_matmul_in_bf16(path):
    # damsm.amp: the region-word products in bf16, everything after them float32; the result stays
    # close to the float32 loss and differs from it (so the matmul did follow autocast).
    regions, words, cap_lens = make_batch(b=8, nef=32, t=9, hw=4)
    out = []
    for amp in (False, True):
        r, w = regions.clone().requires_grad_(), words.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            l0, l1, maps = words_loss(r, w, cap_lens, None, 4.0, 5.0, 10.0, context=path)
        (l0 + l1).backward()
        assert l0.dtype == l1.dtype == maps[0].dtype == r.grad.dtype == torch.float32
        out.append((l0.detach(), l1.detach(), r.grad, w.grad))
    (f0, f1, fr, fw), (b0, b1, br, bw) = out
    assert not torch.equal(f0, b0)
    torch.testing.assert_close(b0, f0, rtol=2e-2, atol=0)
    torch.testing.assert_close(b1, f1, rtol=2e-2, atol=0)
    assert (br - fr).norm() < 0.05 * fr.norm() and (bw - fw).norm() < 0.05 * fw.norm()


def test_damsm_attention_matches_reference_and_masks_padding():
    regions, words, cap_lens = make_batch(b=3)
    mask = torch.arange(7)[None, :] >= cap_lens[:, None]
    context, attn = damsm_attention(words, regions, 4.0, mask)
    assert context.shape == (3, 16, 7) and attn.shape == (3, 7, 5, 5)
    for i, n in enumerate(cap_lens.tolist()):
        ref_ctx, ref_attn = reference_attention(words[i : i + 1, :, :n], regions[i : i + 1], 4.0)
        assert torch.allclose(context[i : i + 1, :, :n], ref_ctx, atol=1e-5)
        assert torch.allclose(attn[i : i + 1, :n], ref_attn, atol=1e-6)
        assert torch.allclose(attn[i, :n].sum((1, 2)), torch.ones(n))  # sums to 1 over regions
        assert (attn[i, n:] == 0).all()


def test_class_masking_removes_same_class_negatives():
    regions, words, cap_lens = make_batch()
    img_code, sent = torch.randn(6, 16), torch.randn(6, 16)
    # Distinct ids mask nothing: identical to no class information (coco).
    assert torch.allclose(words_loss(regions, words, cap_lens, torch.arange(6))[0],
                          words_loss(regions, words, cap_lens, None)[0])
    # One class for everyone: every off-diagonal pair is masked, each CE sees only its positive.
    same = [7] * 6
    for loss in (*words_loss(regions, words, cap_lens, same)[:2], *sent_loss(img_code, sent, same)):
        assert float(loss) == 0.0
    # A partial mask changes the result, and both implementations agree on it.
    ids = torch.tensor([0, 0, 1, 1, 2, 3])
    s0, s1 = sent_loss(img_code, sent, ids)
    r0, r1 = reference_sent_loss(img_code, sent, ids, 10.0)
    assert torch.allclose(s0, r0, atol=1e-5) and torch.allclose(s1, r1, atol=1e-5)
    assert not torch.allclose(s0, sent_loss(img_code, sent, None)[0])


def test_sent_loss_matches_reference_and_grads():
    torch.manual_seed(0)
    a, s = torch.randn(5, 16, requires_grad=True), torch.randn(5, 16, requires_grad=True)
    a2, s2 = a.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    l0, l1 = sent_loss(a, s, None, gamma3=10.0)
    r0, r1 = reference_sent_loss(a2, s2, None, 10.0)
    assert torch.allclose(l0, r0, atol=1e-5) and torch.allclose(l1, r1, atol=1e-5)
    (l0 + l1).backward()
    (r0 + r1).backward()
    assert torch.allclose(a.grad, a2.grad, atol=1e-5) and torch.allclose(s.grad, s2.grad, atol=1e-5)


def test_batch_size_one_is_finite():
    regions, words, cap_lens = make_batch(b=1)
    regions.requires_grad_()
    l0, l1, maps = words_loss(regions, words, cap_lens, [3])
    s0, s1 = sent_loss(torch.randn(1, 16), torch.randn(1, 16), [3])
    for loss in (l0, l1, s0, s1):
        assert torch.isfinite(loss) and float(loss.detach()) == 0.0  # one candidate: CE is log(1)
    (l0 + l1).backward()
    assert torch.isfinite(regions.grad).all() and len(maps) == 1


def test_zero_vectors_and_empty_captions():
    regions, words, cap_lens = make_batch(b=3)
    zero = words_loss(torch.zeros_like(regions), words, cap_lens)[0]  # norm clamp: finite
    assert torch.isfinite(zero)
    assert torch.isfinite(sent_loss(torch.zeros(3, 16), torch.randn(3, 16))[0])
    with pytest.raises(AttnGANError, match="at least one word"):
        words_loss(regions, words, torch.tensor([3, 0, 2]))
    with pytest.raises(AttnGANError, match="no words"):
        damsm_attention(words, regions, 4.0, torch.ones(3, 7, dtype=torch.bool))
    with pytest.raises(AttnGANError, match="words_loss words"):
        words_loss(regions, words[:2], cap_lens[:2])


# --- GAN ------------------------------------------------------------------------------------


class TableD:
    """A stand-in D whose probabilities are fixed per image, to check the weighting by hand."""

    def __init__(self, uncond: bool = True):
        self.uncond = uncond
        self.calls = []

    def __call__(self, x, batches=1):
        self.calls.append(batches)
        return x[:, 0, 0, 0]  # the "code" is a number per image

    def logits(self, code, sent=None):
        p_u = torch.sigmoid(code) if self.uncond else None
        p_c = torch.sigmoid(code + sent[:, 0]) if sent is not None else None
        return p_u, p_c


def _bce_by_hand(p: torch.Tensor, y: float) -> float:
    return -sum(math.log(v) if y == 1 else math.log(1 - v) for v in p.tolist()) / p.numel()


@pytest.mark.parametrize("uncond", [True, False])
def test_discriminator_loss_weighting_by_hand(uncond):
    real = torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    fake = torch.tensor([-0.3, 0.1, 1.2]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    sent = torch.tensor([[0.2], [-0.4], [1.0]])
    d = TableD(uncond)
    terms = discriminator_loss(d, real, fake, sent)
    assert d.calls == [2]  # real and fake as two batches of one call; the wrong pairs reuse the real code
    r, f, s = real[:, 0, 0, 0], fake[:, 0, 0, 0], sent[:, 0]
    cond_real = _bce_by_hand(torch.sigmoid(r + s), 1)
    cond_fake = _bce_by_hand(torch.sigmoid(f + s), 0)
    cond_wrong = _bce_by_hand(torch.sigmoid(r[:2] + s[1:]), 0)  # image k with sentence k + 1
    if uncond:
        uncond_real, uncond_fake = _bce_by_hand(torch.sigmoid(r), 1), _bce_by_hand(torch.sigmoid(f), 0)
        expected = (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3
        assert float(terms["uncond_real"]) == pytest.approx(uncond_real, rel=1e-6)
    else:
        expected = cond_real + (cond_fake + cond_wrong) / 2
        assert "uncond_real" not in terms
    assert float(terms["cond_wrong"]) == pytest.approx(cond_wrong, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)
    d2 = TableD(uncond)
    again = discriminator_loss(d2, real, fake, sent, reuse_real_code=False)
    assert d2.calls == [2, 1] and float(again["loss"]) == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_real_network_and_options():
    torch.manual_seed(0)
    d = Discriminator(32, 4, 8)
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_()
    sent = torch.randn(4, 8)
    d.eval()  # in eval mode the reused code equals a second forward exactly
    a = discriminator_loss(d, real, fake, sent, reuse_real_code=True)
    b = discriminator_loss(d, real, fake, sent, reuse_real_code=False)
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6)
    d.train()
    terms = discriminator_loss(d, real, fake, sent)
    terms["loss"].backward()
    assert fake.grad is None  # fakes are detached for the D step
    assert all(p.grad is not None for p in d.parameters())
    one = discriminator_loss(d.eval(), real[:1], fake[:1], sent[:1])  # no wrong pair at B = 1
    assert float(one["cond_wrong"]) == 0.0 and torch.isfinite(one["loss"])


def test_generator_adv_loss_terms():
    real = torch.tensor([0.5, -1.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    sent = torch.tensor([[0.2], [-0.4]])
    terms = generator_adv_loss(TableD(True), real, sent)
    r, s = real[:, 0, 0, 0], sent[:, 0]
    expected = _bce_by_hand(torch.sigmoid(r), 1) + _bce_by_hand(torch.sigmoid(r + s), 1)
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)
    only_cond = generator_adv_loss(TableD(False), real, sent)
    assert set(only_cond) == {"cond", "loss"}


def test_kl_loss_is_a_mean_over_elements():
    mu, logvar = torch.tensor([[1.0, 0.0], [0.5, -0.5]]), torch.tensor([[0.0, 1.0], [-1.0, 0.2]])
    by_hand = sum(
        -0.5 * (1 + lv - m**2 - math.exp(lv))
        for m, lv in zip(mu.flatten().tolist(), logvar.flatten().tolist())
    ) / 4
    assert float(kl_loss(mu, logvar)) == pytest.approx(by_hand, rel=1e-6)
    assert float(kl_loss(torch.zeros(3, 5), torch.zeros(3, 5))) == 0.0


def test_words_loss_matches_reference_at_paper_shapes():
    # 17x17 regions and 18 words as the paper's DAMSM; a narrower nef keeps the test fast.
    torch.manual_seed(1)
    regions, words = torch.randn(8, 64, 17, 17) * 0.3, torch.randn(8, 64, 18)
    cap_lens, class_ids = torch.tensor([18, 18, 15, 12, 9, 9, 5, 2]), torch.tensor([1, 2, 1, 3, 4, 2, 5, 6])
    ours = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    refs = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    l0, l1, _ = words_loss(*ours, cap_lens, class_ids)
    r0, r1, _ = reference_words_loss(*refs, cap_lens, class_ids, 4.0, 5.0, 10.0)
    assert torch.allclose(l0, r0, atol=1e-5) and torch.allclose(l1, r1, atol=1e-5)
    (l0 + l1).backward()
    (r0 + r1).backward()
    for a, b in zip(ours, refs):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_gan_loss_stores_a_cpu_image_encoder_channels_last():
    import copy

    from attngan.config import preset
    from attngan.losses import GANLoss
    from attngan.networks import build_image_encoder

    torch.manual_seed(0)
    cfg = preset("tiny")
    enc = build_image_encoder(cfg).eval().requires_grad_(False)
    plain = copy.deepcopy(enc)
    GANLoss(cfg, enc)
    spatial = [m.weight for m in enc.modules() if isinstance(m, torch.nn.Conv2d) and m.weight[0, 0].numel() > 1]
    assert spatial and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                           for w in spatial)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    for a, b in zip(enc(x), plain(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
