"""Image captioner: Show, Attend and Tell (Xu et al., ICML 2015) at CPU size.

A small CNN turns the image into a grid of region features a_1..a_L; an LSTM writes the caption one
word at a time, attending over the regions at every step (soft attention, Sec. 4.2). Chosen over a
transformer decoder because it is the smaller model for the same job at this scale: SynthBirds
captions are short (median 16 tokens), the grid has 64 regions, and a one-layer LSTM with additive
attention trains in minutes on one CPU thread; its per-step attention maps also show *where* each
colour word was read, like the generator's word attention.

The captioner never reads generated images in training: it learns from real images only, so that
it can judge a generator's samples (the captioning round trip of AttnGAN's last slide).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attngan.config import CaptionerConfig
from attngan.errors import AttnGANError
from attngan.networks.damsm import _small_block, check_shape


# Region encoder: the DAMSM `small` trunk's first four blocks (regions at 1/8 of the input), with a
# learned embedding per grid cell so that attention can also use *where* a region is ("the belly
# is below the wing"), which 3x3 convolutions see only within their receptive field.
class RegionEncoder(nn.Module):
    def __init__(
        self,
        image_size: int = 64,        # inputs are bilinearly resized to this (a multiple of 8)
        width: int = 32,             # channels of the first block; regions have 4 * width
    ) -> None:
        super().__init__()
        if image_size % 8:
            raise AttnGANError(f"the captioner's image_size must be a multiple of 8, got {image_size}")
        w = width
        self.image_size = image_size
        self.stem = _small_block(3, w, 2)            # S/2
        self.down1 = _small_block(w, 2 * w, 2)       # S/4
        self.down2 = _small_block(2 * w, 4 * w, 2)   # S/8: the region grid
        self.mix = _small_block(4 * w, 4 * w, 1)     # context within the grid
        self.channels = 4 * w
        self.grid = image_size // 8
        self.position = nn.Parameter(torch.zeros(1, 4 * w, self.grid, self.grid))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images B x 3 x H x W in [-1, 1] -> regions B x L x D (L = grid^2, D = 4 * width)."""
        check_shape(images, (None, 3, None, None), "RegionEncoder images")
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > s)
        x = self.mix(self.down2(self.down1(self.stem(images)))) + self.position
        return x.flatten(2).transpose(1, 2)


# Soft attention f_att (Sec. 4.2, Eq. 4-5): e_ti = w^T tanh(W_a a_i + W_h h_{t-1}), alpha = softmax(e).
class SoftAttention(nn.Module):
    def __init__(self, region_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.region = nn.Linear(region_dim, attention_dim)
        self.hidden = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, regions_proj: torch.Tensor, regions: torch.Tensor,
                h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """regions_proj B x L x A (W_a a, computed once per image), regions B x L x D, h B x H
        -> context z B x D, alpha B x L."""
        e = self.score(torch.tanh(regions_proj + self.hidden(h)[:, None])).squeeze(2)
        alpha = torch.softmax(e, dim=1)
        return torch.bmm(alpha[:, None], regions).squeeze(1), alpha


# The decoder (Sec. 3.1.2 and 4.2.1): LSTM over [E y_{t-1}; beta_t z_t], initial state from the
# mean region (Eq. 5 of 3.1.2), a gate beta_t = sigmoid(f_beta(h_{t-1})) per region channel (the paper's is
# one scalar), and the deep output
# layer p(y_t) ~ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)) (Eq. 7).
class CaptionDecoder(nn.Module):
    def __init__(
        self,
        n_words: int,                # output vocabulary incl. id 0 = <end>
        region_dim: int = 128,       # D of the region features
        embed_dim: int = 128,        # word embedding size
        hidden_dim: int = 256,       # LSTM units
        attention_dim: int = 128,    # hidden size of f_att
        dropout: float = 0.3,        # on the output layer's input, train mode only
    ) -> None:
        super().__init__()
        self.n_words = n_words
        self.start_id = n_words      # the input-only <start> token has the last embedding row
        self.embedding = nn.Embedding(n_words + 1, embed_dim)
        self.attention = SoftAttention(region_dim, hidden_dim, attention_dim)
        self.init_h = nn.Linear(region_dim, hidden_dim)
        self.init_c = nn.Linear(region_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, region_dim)
        self.cell = nn.LSTMCell(embed_dim + region_dim, hidden_dim)
        self.out_h = nn.Linear(hidden_dim, embed_dim)
        self.out_z = nn.Linear(region_dim, embed_dim)
        self.out = nn.Linear(embed_dim, n_words)
        self.dropout = nn.Dropout(dropout)

    def init_state(self, regions: torch.Tensor):
        """Initial (h, c) from the mean region, and W_a a for the attention (once per image)."""
        mean = regions.mean(1)
        return (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)),
                self.attention.region(regions))

    def step(self, prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor, regions: torch.Tensor,
             regions_proj: torch.Tensor):
        """One word: previous ids B -> (logits B x n_words, h, c, alpha B x L)."""
        emb = self.embedding(prev)
        z, alpha = self.attention(regions_proj, regions, h)
        z = torch.sigmoid(self.gate(h)) * z
        h, c = self.cell(torch.cat([emb, z], 1), (h, c))
        logits = self.out(self.dropout(emb + self.out_h(h) + self.out_z(z)))
        return logits, h, c, alpha

    def forward(self, regions: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: inputs B x T (<start> then the caption's words) -> logits B x T x V,
        alpha B x T x L."""
        check_shape(regions, (None, None, None), "CaptionDecoder regions")
        check_shape(inputs, (regions.shape[0], None), "CaptionDecoder inputs")
        h, c, proj = self.init_state(regions)
        logits, alphas = [], []
        for t in range(inputs.shape[1]):
            lg, h, c, alpha = self.step(inputs[:, t], h, c, regions, proj)
            logits.append(lg)
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1)


class ShowAttendTell(nn.Module):
    """Region encoder + attention LSTM decoder; one module so one state dict holds both."""

    def __init__(self, n_words: int, image_size: int = 64, width: int = 32, embed_dim: int = 128,
                 hidden_dim: int = 256, attention_dim: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = RegionEncoder(image_size, width)
        self.decoder = CaptionDecoder(n_words, self.encoder.channels, embed_dim, hidden_dim,
                                      attention_dim, dropout)

    def forward(self, images: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encoder(images), inputs)


def build_captioner(cfg: CaptionerConfig, n_words: int) -> ShowAttendTell:
    """The captioner network of a CaptionerConfig for a vocabulary of `n_words` (incl. <end>)."""
    return ShowAttendTell(n_words, image_size=cfg.image_size, width=cfg.width, embed_dim=cfg.embed_dim,
                          hidden_dim=cfg.hidden_dim, attention_dim=cfg.attention_dim, dropout=cfg.dropout)
