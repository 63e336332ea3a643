"""Losses (paper Sec. 2.2 and 3.2): DAMSM word/sentence matching, the GAN terms and the CA KL.

Everything matches the original's numbers,
with three deliberate changes that never alter a well-formed batch's values: `words_loss` scores
all captions against all images in one tensor program instead of a Python loop, batch size 1 works,
and a zero-length caption raises AttnGANError instead of producing NaN.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from attngan.errors import AttnGANError
from attngan.networks.damsm import ShapeError, check_lengths, check_shape

if TYPE_CHECKING:
    from attngan.config import Config

_EPS = 1e-8  # the original clamps the product of the two norms, not each norm


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 (autocast outputs) as float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _class_mask(class_ids, batch: int, device: torch.device) -> torch.Tensor | None:
    """B x B, True where a different item of the same class would be a false negative."""
    if class_ids is None:
        return None
    ids = torch.as_tensor(class_ids, device=device).reshape(-1)
    if ids.numel() != batch:
        raise ShapeError(f"class_ids: expected {batch} ids, got {ids.numel()}")
    same = ids[:, None] == ids[None, :]
    return same & ~torch.eye(batch, dtype=torch.bool, device=device)


def _matching_losses(scores: torch.Tensor, class_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11-13: CE over captions for each image (loss0) and over images for each caption."""
    batch = scores.size(0)
    mask = _class_mask(class_ids, batch, scores.device)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(batch, device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


# --- DAMSM ----------------------------------------------------------------------------------


# DAMSM word-region attention (Eq. 8-9): softmax over words, then gamma1, softmax over regions.
def damsm_attention(
    words: torch.Tensor, regions: torch.Tensor, gamma1: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """words B x nef x T, regions B x nef x h x w (paired by row), mask B x T (True = padding)
    -> region context per word B x nef x T, attention over regions B x T x h x w."""
    check_shape(regions, (None, None, None, None), "damsm_attention regions")
    b, nef, h, w = regions.shape
    check_shape(words, (b, nef, None), "damsm_attention words")
    t = words.size(2)
    r = regions.reshape(b, nef, h * w)
    logits = torch.bmm(r.transpose(1, 2), words)                  # B x HW x T
    if mask is not None:
        check_shape(mask, (b, t), "damsm_attention mask")
        if bool(mask.all(dim=1).any()):
            raise AttnGANError("damsm_attention: a caption has no words (its mask row is all padding)")
        logits = logits.masked_fill(mask[:, None, :], float("-inf"))
    attn = torch.softmax(logits, dim=2)                           # Eq. 8: over words, per region
    attn = torch.softmax(gamma1 * attn.transpose(1, 2), dim=2)    # Eq. 9: over regions, per word
    if mask is not None:
        attn = attn.masked_fill(mask[:, :, None], 0.0)            # padding words attend nowhere
    context = torch.bmm(r, attn.transpose(1, 2))                  # B x nef x T
    return context, attn.reshape(b, t, h, w)


# DAMSM word-level matching loss (Eq. 10-13), all B captions x B images at once.
def words_loss(
    regions: torch.Tensor,                  # B x nef x h x w, image region features
    words: torch.Tensor,                    # B x nef x T, word features (padding beyond cap_lens)
    cap_lens: torch.Tensor,                 # B
    class_ids: torch.Tensor | Sequence[int] | None = None,  # same-class pairs are not negatives
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    context: str = "auto",                  # auto | gram | direct: how |c| and c.e are computed
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """-> (loss0 over captions per image, loss1 over images per caption, attention maps).

    maps[i] is image i's attention for caption i, 1 x cap_len_i x h x w (detached, for display).
    Scores are R(Q, D) = log sum_k exp(gamma2 * cos(c_k, e_k)) times gamma3, as the original
    (the paper's outer 1/gamma2 exponent is not applied).
    """
    check_shape(regions, (None, None, None, None), "words_loss regions")
    b, nef, h, w = regions.shape
    check_shape(words, (b, nef, None), "words_loss words")
    t, hw = words.size(2), h * w
    check_lengths(cap_lens, b, t)
    pad = torch.arange(t, device=words.device)[None, :] >= cap_lens.to(words.device)[:, None]  # B x T
    # Index convention below: image b, region q, caption i, word k.
    r = regions.reshape(b, nef, hw)
    e = words.permute(1, 0, 2).reshape(nef, b * t)                 # nef x (i, k)
    # One matmul for all pairs, the loss's largest (b*hw x nef x b*t). It alone follows autocast
    # (DAMSM pretraining with damsm.amp runs it in bf16, ~3x faster on CPUs with native bf16);
    # from its result on, softmaxes, norms and cosines are float32.
    raw = torch.matmul(r.transpose(1, 2), e).float().view(b, hw, b, t)
    # Padding words get -inf: the same softmax as over only the first cap_len words (Eq. 8).
    logits = raw.masked_fill(pad[None, None], float("-inf"))
    attn = torch.softmax(logits, dim=3)
    attn = torch.softmax(gamma1 * attn, dim=1)                     # Eq. 9: over regions
    a = attn.reshape(b, hw, b * t)
    if context not in ("auto", "gram", "direct"):
        raise AttnGANError(f"words_loss context must be auto, gram or direct, got '{context}'")
    if context == "gram" or (context == "auto" and hw < nef):
        # Fewer regions than channels (the small CNN's 8x8 grid): the region context c = r @ attn
        # (b x nef x (i, k)) is never built. c.e = sum_p attn * (r^T e) reuses the logits, and
        # |c|^2 = attn^T (r^T r) attn comes from the hw x hw Gram matrix: 4x fewer multiply-adds
        # at 64 regions and nef 256. Float32 even under autocast: |c|^2 sums terms of both signs.
        with torch.autocast(device_type=r.device.type, enabled=False):
            a32, r32 = a.float(), r.float()
            dot = (a32 * raw.reshape(b, hw, b * t).float()).sum(dim=1)          # b x (i, k)
            gram = torch.bmm(r32.transpose(1, 2), r32)                          # b x hw x hw
            ctx_norm = (a32 * torch.bmm(gram, a32)).sum(dim=1).clamp(min=1e-30).sqrt()
    else:  # Inception's 17x17 = 289 regions >= nef 256: building c is cheaper
        with torch.autocast(device_type=r.device.type, enabled=False):
            c = torch.bmm(r.float(), a.float())                     # b x nef x (i, k)
            dot = (c * e[None].float()).sum(dim=1)
            ctx_norm = c.norm(dim=1)
    # cos(c, e) with the norm product clamped at 1e-8, as the original's cosine_similarity.
    norms = ctx_norm * e.float().norm(dim=0)[None]
    cos = (dot / norms.clamp(min=_EPS)).view(b, b, t)
    cos = cos.masked_fill(pad[None], float("-inf"))                # padding words drop out of the sum
    scores = torch.logsumexp(gamma2 * cos, dim=2) * gamma3        # Eq. 10-11, b (image) x i (caption)
    loss0, loss1 = _matching_losses(scores, class_ids)
    lens = cap_lens.tolist()
    with torch.no_grad():
        maps = [attn[i, :, i, : lens[i]].t().reshape(1, lens[i], h, w) for i in range(b)]
    return loss0, loss1, maps


# DAMSM sentence-level matching loss (Eq. 12-13 with the global cosine in place of R).
def sent_loss(
    img_code: torch.Tensor,                 # B x nef, global image feature
    sent: torch.Tensor,                     # B x nef, sentence feature
    class_ids: torch.Tensor | Sequence[int] | None = None,
    gamma3: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (loss0 over captions per image, loss1 over images per caption)."""
    check_shape(img_code, (None, None), "sent_loss image code")
    check_shape(sent, tuple(img_code.shape), "sent_loss sentence")
    # Cosines in float32 even when called under autocast (the matmul would otherwise run in bf16).
    with torch.autocast(device_type=img_code.device.type, enabled=False):
        img_code, sent = _wide(img_code), _wide(sent)
        norms = img_code.norm(dim=1)[:, None] * sent.norm(dim=1)[None, :]
        scores = img_code @ sent.t() / norms.clamp(min=_EPS) * gamma3  # image x caption
        return _matching_losses(scores, class_ids)


# --- GAN ------------------------------------------------------------------------------------


def _bce(prob: torch.Tensor, target: float) -> torch.Tensor:
    # D outputs probabilities (sigmoid inside), so this is BCELoss as the original. Always float32
    # and outside autocast: the D step runs inside one autocast (see gan_step), where CUDA refuses
    # binary_cross_entropy.
    with torch.autocast(prob.device.type, enabled=False):
        return F.binary_cross_entropy(prob.float(), torch.full_like(prob, target, dtype=torch.float32))


# Discriminator loss (Eq. 6-7, StackGAN++ joint uncond + cond terms, plus mismatched pairs).
def discriminator_loss(
    D,                                      # Discriminator: forward(x) -> code, logits(code, sent)
    real: torch.Tensor,                     # B x 3 x S x S
    fake: torch.Tensor,                     # B x 3 x S x S (detached here)
    sent: torch.Tensor,                     # B x nef, the raw sentence vector (not the CA code)
    reuse_real_code: bool = True,           # wrong pairs from D(real)[:-1] instead of D(real[:-1])
) -> dict[str, torch.Tensor]:
    """Named terms and their weighted sum `loss`:
    uncond + cond D: (uncond_real + cond_real) / 2 + (uncond_fake + cond_fake + cond_wrong) / 3;
    cond-only D (AttnDCGAN): cond_real + (cond_fake + cond_wrong) / 2.
    The wrong pair is image k with sentence k + 1 of the batch (B - 1 pairs; none at B = 1, where
    cond_wrong is 0). Real and fake go through D as two batches of one call (`D(x, batches=2)`):
    in train mode each has its own BN batch statistics, as in the original's two calls.
    reuse_real_code=True is what the original does (the cond head sees real_code[:-1]); False runs
    D again on real[:-1], which equals it in eval mode but not under train-mode BN (statistics over
    B - 1 images)."""
    check_shape(fake, tuple(real.shape), "discriminator_loss fake")
    check_shape(sent, (real.size(0), None), "discriminator_loss sentence")
    real_code, fake_code = D(torch.cat([real, fake.detach()]), batches=2).chunk(2)
    uncond_real, cond_real = D.logits(real_code, sent)
    uncond_fake, cond_fake = D.logits(fake_code, sent)
    terms = {"cond_real": _bce(cond_real, 1.0), "cond_fake": _bce(cond_fake, 0.0)}
    if real.size(0) > 1:
        wrong_code = real_code[:-1] if reuse_real_code else D(real[:-1])
        _, cond_wrong = D.logits(wrong_code, sent[1:])
        terms["cond_wrong"] = _bce(cond_wrong, 0.0)
    else:
        terms["cond_wrong"] = cond_real.new_zeros(())
    if uncond_real is not None:
        terms["uncond_real"] = _bce(uncond_real, 1.0)
        terms["uncond_fake"] = _bce(uncond_fake, 0.0)
        terms["loss"] = (terms["uncond_real"] + terms["cond_real"]) / 2 + (
            terms["uncond_fake"] + terms["cond_fake"] + terms["cond_wrong"]
        ) / 3
    else:
        terms["loss"] = terms["cond_real"] + (terms["cond_fake"] + terms["cond_wrong"]) / 2
    # Mean probabilities for logging only.
    terms["prob_real"] = cond_real.detach().mean()
    terms["prob_fake"] = cond_fake.detach().mean()
    return terms


# Generator adversarial loss for one stage (Eq. 4): BCE(uncond, 1) + BCE(cond, 1).
def generator_adv_loss(D, fake: torch.Tensor, sent: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named terms (`cond`, `uncond` when D has that head) and their sum `loss`."""
    check_shape(sent, (fake.size(0), None), "generator_adv_loss sentence")
    uncond, cond = D.logits(D(fake), sent)
    terms = {"cond": _bce(cond, 1.0)}
    if uncond is not None:
        terms["uncond"] = _bce(uncond, 1.0)
    terms["loss"] = sum(terms.values())
    return terms


# KL(N(mu, sigma) || N(0, I)) of the conditioning augmentation (Sec. 2.2), a mean over elements.
def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    check_shape(logvar, tuple(mu.shape), "kl_loss logvar")
    mu, logvar = _wide(mu), _wide(logvar)  # float32 whatever the generator ran in
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


# --- The objective as the training loop calls it --------------------------------------------


class Judge:
    """A discriminator as the losses call it: `judge(x)` runs the training wrapper (DDP /
    compiled: gradient all-reduce, compiled kernels) and `judge.logits(...)` the plain module's
    heads, which the wrappers do not expose. Both run under autocast when amp is on and hand the
    losses float32 (BCE is computed in float32, outside autocast)."""

    def __init__(self, wrapped: torch.nn.Module, plain: torch.nn.Module, amp):
        self.wrapped, self.plain, self.amp = wrapped, plain, amp

    def __call__(self, x: torch.Tensor, batches: int = 1) -> torch.Tensor:
        with self.amp():
            return self.wrapped(x, batches)

    def logits(self, code: torch.Tensor, sent: torch.Tensor | None = None):
        with self.amp():
            out = self.plain.logits(code, sent)
        return tuple(o.float() if o is not None else None for o in out)


class GANLoss:
    """The D and G phases of the AttnGAN objective; returns named terms, the loop steps.

    The precision is not the loss's to choose: the step hands its models' autocast to `g_phase`
    (the frozen image encoder must run as G did, or a bf16 image meets float32 weights), and the
    Judges carry the same one. The D heads' sigmoid, BCE, G's conditioning augmentation and KL, the
    word-attention softmax and the DAMSM similarities run in float32 (the networks and losses cast
    autocast outputs up themselves)."""

    def __init__(self, cfg: "Config", image_encoder: torch.nn.Module):
        self.cfg = cfg
        self.image_encoder = image_encoder
        # The frozen image encoder is stored channels-last (in place) on the CPU, and wherever
        # train.channels_last asks: its convolutions and pools then skip oneDNN's layout reorders,
        # and since it never trains, BatchNorm's slow channels-last backward never runs. Bird
        # preset, batch 4, one thread, forward + the fakes' gradient: 1.19-1.25 -> 0.91-0.95 s in
        # float32, 0.84-0.88 -> 0.40-0.42 s in bf16; the same numbers to float rounding.
        weight = next(image_encoder.parameters(), None)
        if cfg.train.channels_last or (weight is not None and weight.device.type == "cpu"):
            image_encoder.to(memory_format=torch.channels_last)

    def d_phase(self, D, real, fake, sent) -> dict[str, torch.Tensor]:
        return discriminator_loss(D, real, fake, sent, reuse_real_code=self.cfg.train.reuse_real_features)

    def g_phase(self, Ds, fakes, words, sent, cap_lens, class_ids, mu, logvar, *, amp) -> dict[str, torch.Tensor]:
        d = self.cfg.damsm
        terms: dict[str, torch.Tensor] = {}
        stages = fakes[-len(Ds):]  # DCGAN: one D on the last image
        for i, (D, fake) in enumerate(zip(Ds, stages)):
            terms[f"g_adv{i}"] = generator_adv_loss(D, fake, sent)["loss"]
        with amp():
            regions, code = self.image_encoder(fakes[-1])
        regions, code = regions.float(), code.float()
        w0, w1, _ = words_loss(regions, words.float(), cap_lens, class_ids, d.gamma1, d.gamma2, d.gamma3)
        s0, s1 = sent_loss(code, sent.float(), class_ids, d.gamma3)
        lam = self.cfg.train.damsm_lambda
        terms["damsm_words"] = lam * (w0 + w1)
        terms["damsm_sent"] = lam * (s0 + s1)
        terms["kl"] = self.cfg.train.kl_weight * kl_loss(mu.float(), logvar.float())
        return terms
