"""The generator's blocks in their inference form: BatchNorm folded into the convolutions, the
nearest-neighbour upsampling folded into the convolution after it, GLUs in one pass.

`perf.fuse_generator` swaps these in for UpBlock and ResBlock. They compute the eval-mode function
of the blocks they replace (to float rounding, about 1e-6) with fewer operations and less memory:

* FoldedUpBlock: nearest x2 then conv3x3 equals four 2x2 convolutions of the input itself, one
  per output phase (row parity dy, column parity dx; `upsampled_kernel` in networks/attngan.py
  derives them), and those four are one stride-2 transposed convolution with a 4x4 kernel, as in
  training: 16 multiply-adds per output pixel and input channel instead of 36, the 4x larger
  upsampled copy never made, the phases written interleaved by the convolution itself.
* FoldedNextStage: word attention computed in the image features' own memory layout (pixels
  x channels when they are channels-last, so neither the query nor the context is copied), the
  context freed once joined to the features.
* FoldedResBlock: conv(+bias) -> GLU -> conv(+bias), the identity added in place into the fresh
  convolution output (inference only: nothing keeps that output for a backward pass).
* GLU as torch's fused `glu` kernel: the same values as a * sigmoid(b), bit for bit, without the
  sigmoid's temporary.

Only ever built from a trained, eval-mode block; they have no BatchNorm and cannot train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attngan.networks.attngan import _wide, transposed_upsampled_kernel

class FoldedUpBlock(nn.Module):
    """UpBlock (nearest x2, conv3x3, BN, GLU) with BN folded into `weight`/`bias` (conv3x3 shape),
    the upsampling folded too: one stride-2 transposed convolution of the input (the training
    path's `upsample_conv3x3`, its kernel made once here, summed in float64)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        k = transposed_upsampled_kernel(weight.double()).to(weight.dtype)
        self.weight = nn.Parameter(k.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(F.conv_transpose2d(x, self.weight, self.bias, stride=2, padding=1), dim=1)


class FoldedResBlock(nn.Module):
    """ResBlock (conv-BN-GLU-conv-BN plus identity) with both BNs folded into the convolutions."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.glu(self.conv1(x), dim=1)).add_(x)


class FoldedNextStage(nn.Module):
    """NextStage ([h, attention context] -> residual blocks -> UpBlock) with folded blocks."""

    def __init__(self, attn: nn.Module, res: nn.ModuleList, up: nn.Module) -> None:
        super().__init__()
        self.attn, self.res, self.up = attn, res, up

    def forward(self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        context, attn = attend(self.attn.proj, h, words, mask)
        x = torch.cat([h, context], dim=1)
        del context  # not needed past the join: the blocks below run with one less buffer alive
        for block in self.res:
            x = block(x)
        return self.up(x), attn


def attend(proj: nn.Module, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """WordAttention's forward (c_j = sum_i beta_{j,i} e'_i, softmax over the words) with the context
    in h's memory layout: h B x C x H x W, words B x nef x T, mask B x T (True = padding)
    -> context B x C x H x W, attention B x T x H x W."""
    b, c, hh, ww = h.shape
    t = words.size(2)
    e = proj(words.unsqueeze(3)).squeeze(3)                      # B x C x T
    query = h.flatten(2).transpose(1, 2)                          # B x HW x C
    logits = torch.bmm(query, e)                                  # B x HW x T
    if mask is not None:
        logits.masked_fill_(mask.unsqueeze(1), float("-inf"))
    beta = torch.softmax(_wide(logits), dim=2)                    # float32 under autocast too
    context = torch.bmm(beta.to(e.dtype), e.transpose(1, 2))      # B x HW x C: pixels x channels
    context = context.view(b, hh, ww, c).permute(0, 3, 1, 2)      # channels-last
    if not h.is_contiguous(memory_format=torch.channels_last) or h.is_contiguous():
        context = context.contiguous()
    return context, beta.transpose(1, 2).reshape(b, t, hh, ww)
