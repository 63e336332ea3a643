"""Attentional generator and discriminators (paper Sec. 2, Fig. 2, Eq. 1-3, 6-7).

Module registration order mirrors the original G_NET / G_DCGAN / D_NET* state dicts, so our
state-dict tensors have the original's shapes in the original's order (legacy.py maps the names).
Deliberate difference from the original: the word-attention padding mask is applied per sample
(the original tiles it with the wrong layout, so its batched outputs depend on the batch).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from attngan.config import Config
from attngan.errors import AttnGANError
from attngan.networks.damsm import ShapeError, check_shape


# --- Building blocks ------------------------------------------------------------------------


# Gated linear unit: every G activation (the original's "relu" in CA_NET is a GLU too).
class GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) % 2:
            raise ShapeError(f"GLU: channel count must be even, got {x.size(1)}")
        # first half * sigmoid(second half), as torch's one-pass kernel: in float32 the same values
        # bit for bit as the two-op form, without its sigmoid temporary; for the backward pass
        # autograd keeps only the input instead of both halves' operands.
        return F.glu(x, dim=1)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 (autocast outputs) as float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    # Every generator convolution is bias-free (BN follows, or tanh for the image head).
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def _doublings_from_4(size: int, min_k: int, what: str) -> int:
    """k with size == 4 * 2^k (4x4 is where G starts and where D's logits are taken)."""
    k = int(round(math.log2(size / 4))) if size >= 4 else -1
    if k < min_k or size != 4 * 2**k:
        raise AttnGANError(f"{what} must be 4 * 2^k with k >= {min_k}, got {size}")
    return k


# Upsampling block of F_i (Fig. 2): nearest x2, conv3x3 to 2*out, BN, GLU.
class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv3x3(cin, 2 * cout)
        self.bn = nn.BatchNorm2d(2 * cout)
        self.glu = GLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.size(2) * x.size(3) >= FOLDED_UPSAMPLE_PIXELS:
            y = upsample_conv3x3(x, self.conv)
        else:
            y = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.glu(self.bn(y))


# Input pixels per image from which an UpBlock on the CPU runs as one transposed convolution
# (upsample_conv3x3). Below it the plain path is faster: there the cost is in the weights, not in
# the pixels (bird preset, batch 4, one thread, forward and backward, float32 / bf16: 8x8 maps
# 1.8x / 5x slower, 16x16 ones 1.5x faster / even, 128x128 ones 1.8x / 2.4x faster).
FOLDED_UPSAMPLE_PIXELS = 256


def upsampled_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A conv3x3 weight (Cout x Cin x 3 x 3) applied after nearest x2 upsampling -> the 4x4 kernel
    K (Cout x Cin x 4 x 4) whose taps K[:, :, dy::2, dx::2] are the 2x2 kernel that gives output
    phase (row parity dy, column parity dx) from the input itself.

    In the upsampled image, output row 2i+dy reads input rows i-1, i (dy = 0: kernel row 0, and
    rows 1 and 2 summed) or i, i+1 (dy = 1: rows 0 and 1 summed, and row 2); columns likewise. Per
    axis the taps [w0, w0+w1, w1+w2, w2] are the sums of neighbouring taps of the zero-padded
    kernel. Only differentiable additions: the 3x3 weight gets its gradient through them."""
    p = F.pad(weight, (1, 1, 1, 1))
    rows = p[:, :, :-1] + p[:, :, 1:]
    return rows[..., :-1] + rows[..., 1:]


def upsample_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(nearest x2 upsampled x) for a 3x3, stride 1, padding 1 convolution, equal to float
    rounding, as one stride-2 transposed convolution of x itself: output pixel (2i+dy, 2j+dx)
    is input pixels (i-1+dy..i+dy, j-1+dx..j+dx) times phase (dy, dx)'s 2x2 kernel (see
    upsampled_kernel), so 16 multiply-adds per output pixel and input channel instead of 36, and
    neither the 4x larger upsampled input nor its gradient is ever made or kept for the backward
    pass. The transposed convolution writes the phases interleaved itself.

    It runs channels-last inside, the layout oneDNN computes it in (NCHW in and out took 2-3x as
    long, mostly in conversions it made itself); the output and x's gradient keep x's layout."""
    fmt = _layout(x)
    y = F.conv_transpose2d(_as_layout(x, torch.channels_last), transposed_upsampled_kernel(conv.weight),
                           conv.bias, stride=2, padding=1)
    return _as_layout(y, fmt)


def transposed_upsampled_kernel(weight: torch.Tensor) -> torch.Tensor:
    """upsampled_kernel(weight) as conv_transpose2d's weight (Cin x Cout x 4 x 4, stride 2,
    padding 1): a transposed convolution's tap k takes output pixel o from input (o + 1 - k) / 2,
    so the kernel is flipped."""
    return upsampled_kernel(weight).flip(2, 3).transpose(0, 1)


def _layout(x: torch.Tensor) -> torch.memory_format:
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _as_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """x in memory format `fmt`, its gradient handed back in x's own layout. (Autograd's copy
    hands the gradient back in `fmt`: the layers before then ran their backward pass on mixed
    layouts, a BatchNorm's 7x slower.)"""
    return x if x.is_contiguous(memory_format=fmt) else _Relayout.apply(x, fmt)


class _Relayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
        ctx.fmt = _layout(x)
        return _relayout(x, fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _relayout(grad, ctx.fmt), None


def _relayout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """x copied into memory format `fmt`. Channels-last to NCHW on the CPU as one 2-D transpose
    per sample, which torch copies in cache-sized tiles: its general copy took 3x as long for it
    (float32 4 x 64 x 256 x 256, one thread: 141 against 49 ms)."""
    if (fmt != torch.contiguous_format or x.device.type != "cpu"
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return x.contiguous(memory_format=fmt)
    b, c, h, w = x.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    src = x.permute(0, 2, 3, 1).reshape(b, h * w, c)   # a view: x is channels-last
    for i, dst in enumerate(out.view(b, c, h * w)):
        dst.copy_(src[i].t())
    return out


# Residual block of F_i (Fig. 2): conv-BN-GLU-conv-BN plus identity, no activation after the add.
class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, 2 * channels)
        self.bn1 = nn.BatchNorm2d(2 * channels)
        self.glu = GLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.glu(self.bn1(self.conv1(x)))))


# --- Generator ------------------------------------------------------------------------------


# Conditioning augmentation F^ca (Sec. 2.1, Eq. 1): c = mu + sigma * eps from the sentence vector.
class CondAugment(nn.Module):
    def __init__(self, nef: int, ncf: int) -> None:
        super().__init__()
        self.nef, self.ncf = nef, ncf
        self.fc = nn.Linear(nef, 4 * ncf)
        self.glu = GLU()

    def forward(
        self, sent: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """sent B x nef -> (c, mu, logvar), each B x ncf."""
        check_shape(sent, (None, self.nef), "CondAugment sentence")
        # Outside autocast, in the weights' dtype: mu and logvar feed the KL term and exp(logvar/2),
        # which bf16's 8-bit significand would coarsen, and this one small layer costs nothing in float32.
        with torch.autocast(device_type=sent.device.type, enabled=False):
            h = self.glu(self.fc(sent.to(self.fc.weight.dtype)))
            mu, logvar = h[:, : self.ncf], h[:, self.ncf :]
            if noise is None:
                # Drawn on every call, eval included: the original never uses mu alone at test time.
                noise = torch.randn_like(mu)
            else:
                check_shape(noise, tuple(mu.shape), "ca_noise")
            return noise.to(mu.dtype) * torch.exp(0.5 * logvar) + mu, mu, logvar


# Initial stage F_0 (Eq. 1): h_0 = F_0([c, z]) -> ngf x base_size x base_size.
class InitStage(nn.Module):
    def __init__(self, ngf: int, in_dim: int, base_size: int = 64) -> None:
        super().__init__()
        n_up = _doublings_from_4(base_size, 1, "generator base_size (8, 16, 32, 64, ...)")
        # 64 px: 16ngf x 4x4 and four upBlocks, as the original. Other sizes keep the channel
        # halving per upBlock and end at ngf, so 32 px starts at 8ngf.
        self.in_dim, self.ngf, self.start = in_dim, ngf, ngf * 2**n_up
        self.fc = nn.Linear(in_dim, self.start * 4 * 4 * 2, bias=False)
        self.bn = nn.BatchNorm1d(self.start * 4 * 4 * 2)
        self.glu = GLU()
        self.up = nn.ModuleList(UpBlock(self.start // 2**i, self.start // 2 ** (i + 1)) for i in range(n_up))

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = torch.cat([c, z], dim=1)  # the original's order: [c_code, z]
        check_shape(x, (None, self.in_dim), "InitStage [c, z]")
        x = self.glu(self.bn(self.fc(x))).view(-1, self.start, 4, 4)
        for block in self.up:
            x = block(x)
        return x


# Word attention F^attn (Sec. 2.1, Eq. 2): c_j = sum_i beta_{j,i} e'_i, softmax over the words.
class WordAttention(nn.Module):
    def __init__(self, ngf: int, nef: int) -> None:
        super().__init__()
        self.ngf, self.nef = ngf, nef
        self.proj = nn.Conv2d(nef, ngf, 1, bias=False)  # e' = U e: words into the image space

    def forward(
        self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h B x ngf x H x W, words B x nef x T, mask B x T (True = padding)
        -> context B x ngf x H x W, attention B x T x H x W."""
        check_shape(h, (None, self.ngf, None, None), "WordAttention image features")
        b, _, hh, ww = h.shape
        check_shape(words, (b, self.nef, None), "WordAttention words")
        t = words.size(2)
        e = self.proj(words.unsqueeze(3)).squeeze(3)                 # B x ngf x T
        query = h.flatten(2).transpose(1, 2)                          # B x HW x ngf
        logits = torch.bmm(query, e)                                  # B x HW x T, raw dot product
        if mask is not None:
            check_shape(mask, (b, t), "WordAttention mask")
            # Per-sample mask, broadcast over pixels: padding words get exactly zero attention,
            # whatever else is in the batch (the original's repeat(HW, 1) tiling got this wrong).
            logits = logits.masked_fill(mask.unsqueeze(1), float("-inf"))
        # The softmax in float32 even under autocast (where the two matmuls run in bf16): CPU
        # autocast would otherwise run it in bf16. The context matmul takes e's dtype again.
        beta = torch.softmax(_wide(logits), dim=2)                    # over words, per pixel
        context = torch.bmm(e, beta.to(e.dtype).transpose(1, 2)).view(b, self.ngf, hh, ww)
        return context, beta.transpose(1, 2).reshape(b, t, hh, ww)


# Refinement stage F_i (Eq. 2): [h, F^attn(e, h)] -> r_num residual blocks -> upBlock.
class NextStage(nn.Module):
    def __init__(self, ngf: int, nef: int, r_num: int) -> None:
        super().__init__()
        self.attn = WordAttention(ngf, nef)
        self.res = nn.ModuleList(ResBlock(2 * ngf) for _ in range(r_num))
        self.up = UpBlock(2 * ngf, ngf)

    def forward(
        self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context, attn = self.attn(h, words, mask)
        x = torch.cat([h, context], dim=1)  # the original's order: [h, context]
        for block in self.res:
            x = block(x)
        return self.up(x), attn  # attention at the pre-upsample resolution, as the original


# Image generator G_i (Eq. 3): x_i = tanh(conv3x3(h_i)).
class ImageHead(nn.Module):
    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.conv = conv3x3(ngf, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(h))


# Attentional generative network (Fig. 2): F^ca, F_0, F_1..F_{m-1} with G_0..G_{m-1}.
class Generator(nn.Module):
    def __init__(
        self,
        gf_dim: int,            # ngf: channels of every stage's hidden features
        z_dim: int,             # noise size
        condition_dim: int,     # ncf: CA output size
        nef: int,               # word / sentence feature size
        r_num: int,             # residual blocks per refinement stage
        branch_num: int,        # number of stages (1..3 in the presets)
        dcgan: bool = False,    # AttnDCGAN: one shared image head on the last stage only
        base_size: int = 64,    # first stage resolution (ours: the original is fixed at 64)
    ) -> None:
        super().__init__()
        if branch_num < 1:
            raise AttnGANError(f"branch_num must be at least 1, got {branch_num}")
        self.gf_dim, self.z_dim, self.condition_dim, self.nef = gf_dim, z_dim, condition_dim, nef
        self.branch_num, self.dcgan, self.base_size = branch_num, dcgan, base_size
        # Attribute order = the original state-dict order: ca_net, h_net1, img_net1, h_net2, ...
        # (G_DCGAN: ca_net, h_net1, h_net2, h_net3, img_net).
        self.ca = CondAugment(nef, condition_dim)
        for i in range(branch_num):
            stage = InitStage(gf_dim, condition_dim + z_dim, base_size) if i == 0 \
                else NextStage(gf_dim, nef, r_num)
            self.add_module(f"stage{i}", stage)
            if not dcgan:
                self.add_module(f"head{i}", ImageHead(gf_dim))
        if dcgan:
            self.head = ImageHead(gf_dim)

    @property
    def image_sizes(self) -> list[int]:
        return [self.base_size * 2**i for i in range(self.branch_num)]

    def forward(
        self,
        z: torch.Tensor,                        # B x z_dim
        sent: torch.Tensor,                     # B x nef
        words: torch.Tensor,                    # B x nef x T
        mask: torch.Tensor | None,              # B x T, True on padding (None: no padding)
        ca_noise: torch.Tensor | None = None,   # B x condition_dim; None draws fresh noise
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """-> (images per stage (one for DCGAN), attention per refinement stage, mu, logvar)."""
        check_shape(sent, (None, self.nef), "Generator sentence")
        b = sent.size(0)
        check_shape(z, (b, self.z_dim), "Generator z")
        check_shape(words, (b, self.nef, None), "Generator words")
        if mask is not None:
            check_shape(mask, (b, words.size(2)), "Generator mask")
            if mask.dtype != torch.bool:
                raise ShapeError(f"Generator mask: expected a bool tensor, got {mask.dtype}")
            if bool(mask.all(dim=1).any()):
                raise AttnGANError("Generator: a caption has no words (its mask row is all padding)")
        c, mu, logvar = self.ca(sent, ca_noise)
        h = self.stage0(c, z)
        images, attention = [], []
        if not self.dcgan:
            images.append(self.head0(h))
        for i in range(1, self.branch_num):
            h, attn = getattr(self, f"stage{i}")(h, words, mask)
            attention.append(attn)
            if not self.dcgan:
                images.append(getattr(self, f"head{i}")(h))
        if self.dcgan:
            images.append(self.head(h))
        return images, attention, mu, logvar


# --- Discriminators -------------------------------------------------------------------------



# Output pixels per image up to which a D convolution runs as one matrix product (small_map_conv).
SMALL_MAP_PIXELS = 64


def small_map_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x); on the CPU, where the output map has at most SMALL_MAP_PIXELS pixels, computed as
    the matrix product it is (the weight matrix times the unfolded input patches), equal to the
    convolution to float rounding.

    D's last convolutions map 8x8 and 4x4 features with 1024-2048 channels through up to 34M
    weights: there oneDNN's direct convolution ran forward and backward at a third of the speed of
    that product (bird D_256 at batch 4, float32: 0.50 s -> 0.17 s for its 1024 -> 2048 layer; under
    bf16 autocast the convolution was slower still)."""
    if not as_product(conv, x):
        return conv(x)
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    b, (ho, wo) = x.size(0), _out_size(conv, x)
    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))   # B x cin*kh*kw x ho*wo
    # One 2-D product (the patches of the whole batch x the weight matrix): a product per sample
    # would repeat the weights per sample (under bf16 autocast it also ran 2x slower).
    y = _PatchProduct.apply(cols.transpose(1, 2).reshape(b * ho * wo, -1), conv.weight)
    if conv.bias is not None:
        y = y + conv.bias.to(y.dtype)
    return y.view(b, ho, wo, conv.out_channels).permute(0, 3, 1, 2)   # channels-last, no copy


def _out_size(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return (x.size(2) + 2 * ph - kh) // sh + 1, (x.size(3) + 2 * pw - kw) // sw + 1


def as_product(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether small_map_conv computes conv(x) as one matrix product."""
    ho, wo = _out_size(conv, x)
    return (x.device.type == "cpu" and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and ho * wo <= SMALL_MAP_PIXELS)


def norm_per_batch(bn: nn.Module, x: torch.Tensor, batches: int) -> torch.Tensor:
    """bn(x) where x is `batches` equal batches stacked: each normalised by its own statistics and
    the running statistics updated once per batch in order, exactly as separate calls."""
    if batches == 1:
        return bn(x)
    return torch.cat([bn(part) for part in x.chunk(batches)])


class _PatchProduct(torch.autograd.Function):
    """patches (N x cin*kh*kw) times a conv weight (cout x cin x kh x kw) flattened -> N x cout.

    As F.linear with weight.flatten(1), except:
    * the weight's gradient is made in the weight's own shape and storage instead of as a view of
      a 2-D product. The live tensors of the D step peak the same either way, but the process's
      peak RSS did not: bird preset, batch 4, one thread, float32, two runs each: 3.65-3.72 GB
      against 3.96-4.03 GB (the heap reuses the freed gradient buffers better);
    * under autocast the weight is cast once (see `weight_casts`) and the backward pass reuses the
      forward's cast: autocast itself re-casts a view of a weight at every call, forward and
      backward, and these weights are D's largest (up to 34M numbers)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, patches: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.flatten(1)
        if torch.is_autocast_enabled("cpu"):
            low = torch.get_autocast_dtype("cpu")
            w = _cast_once(weight, low)
            patches = patches.to(low)
        ctx.weight_shape, ctx.weight_dtype, ctx.patches_dtype = weight.shape, weight.dtype, patches.dtype
        ctx.save_for_backward(patches, w)
        return torch.mm(patches, w.t())

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad: torch.Tensor):
        patches, w = ctx.saved_tensors
        grad = grad.to(w.dtype)
        grad_patches = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_patches = torch.mm(grad, w).to(ctx.patches_dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty(ctx.weight_shape, dtype=ctx.weight_dtype, device=grad.device)
            matrix = grad_weight.view(ctx.weight_shape[0], -1)
            if grad.dtype == ctx.weight_dtype:
                torch.mm(grad.t(), patches, out=matrix)
            else:  # bf16 under autocast: the gradient of a float32 weight is float32
                matrix.copy_(torch.mm(grad.t(), patches))
        return grad_patches, grad_weight


# Inside `weight_casts()`: id(weight) -> its flattened low-precision copy.
_CASTS: dict[int, torch.Tensor] | None = None


@contextlib.contextmanager
def weight_casts():
    """Within this context each small-map weight is cast to the autocast dtype once: D(real) and
    D(fake) share the cast. The weights must not change inside it (the training step opens one
    per D step and one for the G step, around the optimiser's step, never across it)."""
    global _CASTS
    outer = _CASTS
    if outer is None:
        _CASTS = {}
    try:
        yield
    finally:
        if outer is None:
            _CASTS = None


def _cast_once(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if weight.dtype == dtype:
        return weight.flatten(1)
    hit = _CASTS.get(id(weight)) if _CASTS is not None else None
    if hit is None or hit.dtype != dtype:
        hit = weight.detach().flatten(1).to(dtype)
        if _CASTS is not None:
            _CASTS[id(weight)] = hit
    return hit


# Strided 4x4 conv, BN, LeakyReLU 0.2: one halving step of D (the original's downBlock).
class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if norm else None  # the very first D conv has no BN
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor, batches: int = 1) -> torch.Tensor:
        x = small_map_conv(self.conv, x)
        return self.act(norm_per_batch(self.bn, x, batches) if self.bn is not None else x)


# conv3x3, BN, LeakyReLU 0.2 (the original's Block3x3_leakRelu).
class Block3x3(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor, batches: int = 1) -> torch.Tensor:
        return self.act(norm_per_batch(self.bn, small_map_conv(self.conv, x), batches))


# Unconditional / conditional logits of D_i (Eq. 6-7, StackGAN++ joint loss); outputs sigmoid.
class DiscriminatorHead(nn.Module):
    def __init__(self, ndf: int, nef: int, conditional: bool) -> None:
        super().__init__()
        self.nef = nef if conditional else 0
        # Conditional: the raw sentence vector tiled 4x4, joined to the code by conv3x3+BN+LReLU.
        self.joint = Block3x3(8 * ndf + nef, 8 * ndf) if conditional else None
        self.out = nn.Conv2d(8 * ndf, 1, kernel_size=4, stride=4)  # the only D conv with a bias

    def forward(self, code: torch.Tensor, sent: torch.Tensor | None = None) -> torch.Tensor:
        if self.joint is not None:
            if sent is None:
                raise ShapeError("conditional D head needs the sentence vector")
            check_shape(sent, (code.size(0), self.nef), "D sentence")
            tiled = sent.view(sent.size(0), self.nef, 1, 1).expand(-1, -1, 4, 4)
            code = self.joint(torch.cat([code, tiled], dim=1))
        # Sigmoid in float32 under autocast too: BCE on bf16 probabilities would round p near 1 to
        # exactly 1 (steps of 2^-8) and saturate the loss.
        return torch.sigmoid(_wide(self.out(code))).view(-1)


# Discriminator D_i for one stage (Sec. 2.1): image -> 8ndf x 4 x 4 code -> uncond / cond probability.
class Discriminator(nn.Module):
    def __init__(
        self,
        image_size: int,        # this stage's resolution: 4 * 2^k, k >= 3 (32, 64, 128, 256, ...)
        df_dim: int,            # ndf
        nef: int,               # sentence feature size
        uncond: bool = True,    # False: AttnDCGAN's D, conditional head only
    ) -> None:
        super().__init__()
        k = _doublings_from_4(image_size, 3, "discriminator image size (32, 64, 128, 256, ...)")
        ndf = df_dim
        self.image_size, self.ndf, self.nef = image_size, ndf, nef
        # encode_image_by_16times: 3 -> ndf (no BN) -> 2ndf -> 4ndf -> 8ndf, each halving.
        # At 32 px (ours) the fourth halving would go below 4x4, so the code stops at 4ndf x 4x4
        # and one Block3x3 lifts it to 8ndf (as the original's Block3x3 also changes width).
        n_enc = min(k, 4)
        widths = [ndf * 2**i for i in range(n_enc)]
        self.encoder = nn.ModuleList(
            DownBlock(3 if i == 0 else widths[i - 1], widths[i], norm=i > 0) for i in range(n_enc)
        )
        # 128 / 256 px: downBlocks doubling channels to 4x4, then Block3x3s halving back to 8ndf
        # (D_NET128: 8->16ndf, 16->8ndf; D_NET256: 8->16->32ndf, 32->16->8ndf); k - 4 of each.
        n_down = max(k - 4, 0)
        self.down = nn.ModuleList(DownBlock(8 * ndf * 2**i, 8 * ndf * 2 ** (i + 1)) for i in range(n_down))
        if k == 3:
            self.blocks = nn.ModuleList([Block3x3(4 * ndf, 8 * ndf)])
        else:
            self.blocks = nn.ModuleList(
                Block3x3(8 * ndf * 2 ** (i + 1), 8 * ndf * 2**i) for i in reversed(range(n_down))
            )
        # Original order: UNCOND_DNET before COND_DNET.
        self.uncond_head = DiscriminatorHead(ndf, nef, conditional=False) if uncond else None
        self.cond_head = DiscriminatorHead(ndf, nef, conditional=True)

    def forward(self, x: torch.Tensor, batches: int = 1) -> torch.Tensor:
        """x B x 3 x S x S -> code B x 8ndf x 4 x 4.

        `batches` > 1: x is that many equal batches stacked (the D step's real and fake images),
        each with its own BatchNorm statistics, so the codes equal separate calls' (to float
        rounding). The large maps run batch by batch; from the first layer that small_map_conv
        computes as a matrix product the batches run joined: one product reads D's largest
        weights once for all of them, with twice the rows, and the weight's gradient is one
        product instead of two and their sum (bird preset, batch 4, one thread: D_256's update
        1.80-1.87 -> 1.62-1.71 s in float32, 0.94-0.96 -> 0.72-0.78 s in bf16, 120-190 MB less
        peak memory in bf16)."""
        check_shape(x, (None, 3, self.image_size, self.image_size), f"D{self.image_size} images")
        if batches < 1 or x.size(0) % batches:
            raise ShapeError(f"D{self.image_size}: {x.size(0)} images do not split into {batches} batches")
        parts = list(x.chunk(batches))
        for layer in [*self.encoder, *self.down, *self.blocks]:
            if len(parts) > 1 and as_product(layer.conv, parts[0]):
                parts = [torch.cat(parts)]  # joined from here on: the maps only get smaller
            parts = [layer(parts[0], batches)] if len(parts) == 1 else [layer(p) for p in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def logits(
        self, code: torch.Tensor, sent: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """code B x 8ndf x 4 x 4 -> (uncond prob B or None, cond prob B or None if sent is None).
        Probabilities (after the sigmoid), as the original; the name follows its D_GET_LOGITS."""
        check_shape(code, (None, 8 * self.ndf, 4, 4), "D code")
        uncond = self.uncond_head(code) if self.uncond_head is not None else None
        cond = self.cond_head(code, sent) if sent is not None else None
        return uncond, cond


# --- Initialisation and builders ------------------------------------------------------------


def init_weights(module: nn.Module) -> nn.Module:
    """The original weights_init for G and D: orthogonal (gain 1) conv/linear weights, linear
    bias 0, BN weight N(1, 0.02) and bias 0. Conv biases keep torch's default, as there."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.orthogonal_(m.weight, 1.0)
        elif isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def build_generator(cfg: Config, nef: int, init: bool = True) -> Generator:
    """G from `cfg.gan` and `cfg.data`; init=False skips weights_init (before loading weights)."""
    g = cfg.gan
    net = Generator(g.gf_dim, g.z_dim, g.condition_dim, nef, g.r_num, cfg.data.branch_num,
                    dcgan=g.dcgan, base_size=cfg.data.base_size)
    return init_weights(net) if init else net


def build_discriminators(cfg: Config, init: bool = True) -> nn.ModuleList:
    """One D per stage (64, 128, 256 for bird), or a single conditional D on the last stage (DCGAN)."""
    nef = cfg.text.embedding_dim
    sizes = [cfg.data.base_size * 2**i for i in range(cfg.data.branch_num)]
    if cfg.gan.dcgan:
        nets = [Discriminator(sizes[-1], cfg.gan.df_dim, nef, uncond=False)]
    else:
        nets = [Discriminator(s, cfg.gan.df_dim, nef, uncond=True) for s in sizes]
    out = nn.ModuleList(nets)
    return init_weights(out) if init else out
