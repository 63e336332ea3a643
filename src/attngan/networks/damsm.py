"""DAMSM encoders (paper Sec. 3.2): a bi-LSTM text encoder and an image encoder.

The image encoder has two backbones behind one interface: `inception` is the paper's frozen
Inception-v3 trunk (regions from Mixed_6e, 17x17 at 299 px), `small` is a compact CNN that trains
from scratch on a CPU (8x8 regions at 64 px). Parameter registration order follows the original
RNN_ENCODER / CNN_ENCODER so that state-dict shapes line up 1:1 with the original checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attngan.config import Config
from attngan.errors import AttnGANError


class ShapeError(AttnGANError, ValueError):
    """A tensor reached a module boundary with the wrong shape or dtype."""


def check_shape(x: torch.Tensor, shape: Sequence[int | None], name: str) -> None:
    """Raise ShapeError unless `x` has len(shape) dims and matches every non-None entry."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name}: expected a tensor, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = " x ".join("*" if s is None else str(s) for s in shape)
        got = " x ".join(str(d) for d in x.shape) or "scalar"
        raise ShapeError(f"{name}: expected shape {want}, got {got}")


def check_lengths(cap_lens: torch.Tensor, batch: int, max_len: int, name: str = "cap_lens") -> None:
    """Every caption needs 1..max_len words; a zero-length caption would give NaN attention."""
    check_shape(cap_lens, (batch,), name)
    if batch == 0:
        raise ShapeError(f"{name}: empty batch")
    lo, hi = int(cap_lens.min()), int(cap_lens.max())
    if lo < 1:
        raise AttnGANError(f"{name}: every caption needs at least one word (got a length of {lo})")
    if hi > max_len:
        raise ShapeError(f"{name}: length {hi} exceeds the caption tensor width {max_len}")


# --- Text encoder ---------------------------------------------------------------------------


# How the sentence feature is read off the bi-LSTM. `last` is the paper's and the original code's
# (final forward state | final backward state). `mean` averages the word features: on SynthBirds a
# small LSTM's final state learns to carry all of a caption's (part, colour) pairs far more slowly
# than the word features do (measured with perfect image features: 34% vs 63% R-precision after
# the same 35 epochs), so the CPU preset uses it. Both give B x nef; checkpoints are unchanged.
SENTENCE_POOLING = ("last", "mean")


# Text encoder of DAMSM (Sec. 3.2): bi-LSTM, word features e (D x T) and sentence feature e-bar.
class TextEncoder(nn.Module):
    def __init__(
        self,
        n_words: int,                # vocabulary size incl. id 0 = <end>/padding
        word_dim: int = 300,         # token embedding size
        nef: int = 256,              # feature size; nef/2 hidden units per direction
        rnn_type: str = "LSTM",      # LSTM | GRU
        dropout: float = 0.5,        # on the token embeddings, train mode only
        sentence: str = "last",      # last (original: final states) | mean (of the word features)
    ) -> None:
        super().__init__()
        if sentence not in SENTENCE_POOLING:
            raise AttnGANError(f"text sentence pooling must be one of {', '.join(SENTENCE_POOLING)}, "
                               f"got '{sentence}'")
        if nef % 2:
            raise AttnGANError(f"text embedding_dim must be even (two directions), got {nef}")
        if rnn_type not in ("LSTM", "GRU"):
            raise AttnGANError(f"rnn_type must be LSTM or GRU, got '{rnn_type}'")
        self.n_words, self.word_dim, self.nef, self.rnn_type = n_words, word_dim, nef, rnn_type
        self.sentence = sentence
        # Registration order (embedding, rnn) mirrors RNN_ENCODER (encoder, rnn).
        self.embedding = nn.Embedding(n_words, word_dim)
        self.dropout = nn.Dropout(dropout)
        rnn_cls = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn_cls(word_dim, nef // 2, num_layers=1, batch_first=True, bidirectional=True)
        # A one-direction twin of self.rnn for the CPU path (see _rnn_unpacked). Kept in a tuple so
        # that it is not registered: it has no weights of its own in the state dict or optimizer.
        # On the meta device: it draws no random numbers (seeded runs build the same weights as
        # without it) and holds no memory.
        self._one_way = (rnn_cls(word_dim, nef // 2, num_layers=1, batch_first=True, device="meta"),)
        # The original initialises only the embedding (U(-0.1, 0.1)); the RNN keeps torch's default.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def forward(self, captions: torch.Tensor, cap_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """captions B x T (ids, 0 = padding), cap_lens B -> words B x nef x T_max, sent B x nef."""
        check_shape(captions, (None, None), "TextEncoder captions")
        batch, width = captions.shape
        check_lengths(cap_lens, batch, width)
        if captions.dtype not in (torch.int64, torch.int32):
            raise ShapeError(f"TextEncoder captions: expected integer word ids, got {captions.dtype}")
        if int(captions.max()) >= self.n_words or int(captions.min()) < 0:
            raise AttnGANError(
                f"caption word id out of range 0..{self.n_words - 1} (vocabulary/encoder mismatch?)"
            )
        emb = self.dropout(self.embedding(captions))
        lengths = cap_lens.detach().to("cpu", torch.int64)
        run = self._rnn_unpacked if emb.device.type == "cpu" else self._rnn_packed
        out, h_n = run(emb, lengths)
        words = out.transpose(1, 2).contiguous()  # B x nef x T, channels [forward | backward]
        if self.sentence == "mean":
            # Padding positions are exact zeros, so a sum over T divided by the length is the
            # mean over the caption's own words, whatever the batch's padding.
            sent = words.sum(2) / cap_lens.to(words.device, words.dtype)[:, None]
        else:
            sent = torch.cat([h_n[0], h_n[1]], dim=1)  # [h_n forward, h_n backward]
        return words, sent

    def _rnn_packed(self, emb: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emb B x T x word_dim, lengths B (CPU) -> outputs B x T_max x nef, final states 2 x B x nef/2."""
        # enforce_sorted=False: torch sorts internally and restores the order of both the outputs
        # and h_n, so unsorted batches give exactly what the sorted original gives per caption.
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)  # zero initial state (the original's init_hidden)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM returns (h_n, c_n)
        # Padding positions come back as exact zeros; T_max = the longest caption in the batch.
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=int(lengths.max()))
        return out, h_n

    def _rnn_unpacked(self, emb: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed bi-RNN's outputs (zeros at padding) and final states, without packing.

        On the CPU a packed sequence is stepped through batch slice by batch slice, which made the
        tiny preset's text encoder about half as fast as one plain pass per direction. Here the
        forward direction runs over the padded batch (padding comes after each caption's words, so
        it cannot reach them), and the backward direction runs forwards over each caption reversed
        within its own length, then is reversed back. Equal to the packed path (tested, with
        gradients); the extra steps over padding are masked out.
        """
        t_max = int(lengths.max())
        emb = emb[:, :t_max]
        steps = torch.arange(t_max)
        valid = steps[None] < lengths[:, None]                                      # B x T
        # Caption i's position k read backwards is position len_i - 1 - k; padding stays in place.
        # The map is its own inverse, so the same gather reverses and restores.
        rev = torch.where(valid, lengths[:, None] - 1 - steps[None], steps[None])
        valid, rev = valid.to(emb.device), rev.to(emb.device)
        one_way = self._one_way[0]
        names = [n for n, _ in one_way.named_parameters()]  # weight_ih_l0, weight_hh_l0, (biases)

        def run(x: torch.Tensor, suffix: str) -> torch.Tensor:
            weights = {n: getattr(self.rnn, n + suffix) for n in names}
            return functional_call(one_way, weights, (x,))[0]                     # B x T x H

        fwd = run(emb, "")
        pick = rev[..., None].expand(-1, -1, emb.size(2))
        bwd_rev = run(emb.gather(1, pick), "_reverse")
        bwd = bwd_rev.gather(1, rev[..., None].expand(-1, -1, bwd_rev.size(2)))
        out = torch.cat([fwd, bwd], 2) * valid[..., None]
        last = (lengths - 1).to(emb.device)
        h_forward = fwd[torch.arange(fwd.size(0), device=emb.device), last]       # after the last word
        h_backward = bwd[:, 0]                                                    # after the first word
        return out, torch.stack([h_forward, h_backward])


# --- Image encoder --------------------------------------------------------------------------

_INCEPTION_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


# Inception-v3 trunk (Szegedy et al.) up to Mixed_7c, as CNN_ENCODER keeps it: no AuxLogits, no fc.
class InceptionTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # Imported here: torchvision takes about a second and pulls torch's compiler stack, which
        # loading a generator or a small-CNN DAMSM never needs.
        from torchvision.models import inception_v3

        # init_weights=False: torch's default init is fast; real weights are loaded afterwards.
        net = inception_v3(weights=None, aux_logits=False, init_weights=False)
        for name in _INCEPTION_TRUNK:
            self.add_module(name, getattr(net, name))
        self.region_channels, self.global_channels = 768, 2048

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x B x 3 x 299 x 299 in [-1, 1] -> (Mixed_6e B x 768 x 17 x 17, pooled B x 2048)."""
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        regions = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        # avg_pool(8) on the 8x8 map at 299 px; adaptive pooling is the same there and still
        # works for other input sizes.
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return regions, pooled


def _small_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    # BatchNorm: trained from scratch with the contrastive DAMSM losses, per-image normalisation
    # (GroupNorm) left every image's global code nearly identical and training stalled at chance
    # (loss = log B); batch statistics remove the shared component. In eval mode (R-precision,
    # GAN training, metrics) the running statistics make each image's features batch-independent.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


# Compact CNN backbone for CPU presets (ours, not in the paper): regions at 1/8 of the input size.
# 3x3 convs that halve the resolution from the first layer on: about 50 MFLOP per 64 px image,
# a fifth of a full-resolution stem, which is what makes DAMSM pretraining fit minutes on a CPU.
class SmallTrunk(nn.Module):
    def __init__(self, width: int = 64, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise AttnGANError(f"small image encoder pool must be avg or avgmax, got '{pool}'")
        w = width
        self.stem = _small_block(3, w, 2)            # S/2
        self.down1 = _small_block(w, 2 * w, 2)       # S/4
        self.down2 = _small_block(2 * w, 4 * w, 2)   # S/8: the region grid (8x8 at 64 px)
        self.mix = _small_block(4 * w, 4 * w, 1)     # context within the grid
        self.down3 = _small_block(4 * w, 8 * w, 2)   # S/16, pooled into the global code
        self.pool = pool
        # avgmax: the max half says "some region is red" even when the red part is small (a crown,
        # a throat) and the mean dilutes it; it learned the sentence match faster on SynthBirds.
        self.region_channels, self.global_channels = 4 * w, (16 if pool == "avgmax" else 8) * w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self.mix(self.down2(self.down1(self.stem(x))))
        top = self.down3(regions)
        pooled = top.mean((2, 3))
        if self.pool == "avgmax":
            pooled = torch.cat([pooled, top.amax((2, 3))], 1)
        return regions, pooled


# Image encoder of DAMSM (Sec. 3.2): local features f (D x 289) and global feature f-bar.
class ImageEncoder(nn.Module):
    def __init__(
        self,
        nef: int = 256,                 # feature size shared with the text encoder
        backbone: str = "inception",    # inception (paper, frozen trunk) | small (all trainable)
        image_size: int = 299,          # inputs are bilinearly resized to this
        small_width: int = 64,          # channels of the small CNN's first block
        small_pool: str = "avg",        # small CNN's global code: avg | avgmax
        align_corners: bool = False,    # True reproduces the published encoders' resize
        trunk_bn_eval: bool = False,    # keep the frozen Inception BN in eval mode under train()
    ) -> None:
        super().__init__()
        if backbone not in ("inception", "small"):
            raise AttnGANError(f"image encoder backbone must be inception or small, got '{backbone}'")
        if backbone == "small" and image_size % 16:
            raise AttnGANError(f"the small image encoder needs a multiple of 16 px, got {image_size}")
        self.nef, self.backbone, self.image_size = nef, backbone, image_size
        self.align_corners, self.trunk_bn_eval = align_corners, trunk_bn_eval
        # Registration order (trunk, regions, global) mirrors CNN_ENCODER's state_dict
        # (Inception modules, emb_features, emb_cnn_code).
        self.trunk: nn.Module = (InceptionTrunk() if backbone == "inception"
                                  else SmallTrunk(small_width, small_pool))
        self.region_proj = nn.Conv2d(self.trunk.region_channels, nef, 1, bias=False)
        self.global_proj = nn.Linear(self.trunk.global_channels, nef)
        # The original initialises both projection weights U(-0.1, 0.1); the Linear bias keeps
        # torch's default.
        nn.init.uniform_(self.region_proj.weight, -0.1, 0.1)
        nn.init.uniform_(self.global_proj.weight, -0.1, 0.1)
        if backbone == "inception":
            self.trunk.requires_grad_(False)

    @property
    def region_size(self) -> int:
        """Side of the region grid: 17 for Inception at 299 px, image_size / 8 for `small`."""
        if self.backbone == "small":
            return self.image_size // 8
        s = (self.image_size - 3) // 2 + 1 - 2          # Conv2d_1a (s2), Conv2d_2a
        s = (s - 3) // 2 + 1 - 2                        # maxpool, Conv2d_4a
        s = (s - 3) // 2 + 1                            # maxpool
        return (s - 3) // 2 + 1                         # Mixed_6a (s2)

    def projection_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters DAMSM pretraining updates: the projections (inception) or all (small)."""
        if self.backbone == "small":
            yield from self.parameters()
        else:
            yield from self.region_proj.parameters()
            yield from self.global_proj.parameters()

    def train(self, mode: bool = True) -> "ImageEncoder":
        # Faithful default: the original ran the frozen Inception trunk in train mode during DAMSM
        # pretraining, so its BN normalised with batch statistics and its running statistics
        # drifted (the published image_encoder files carry those drifted buffers). With
        # trunk_bn_eval=True the trunk stays in eval mode and keeps Google's statistics.
        super().train(mode)
        if mode and self.trunk_bn_eval and self.backbone == "inception":
            self.trunk.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images B x 3 x H x W in [-1, 1] -> regions B x nef x h x w, global B x nef."""
        check_shape(images, (None, 3, None, None), "ImageEncoder images")
        size = self.image_size
        if images.shape[-2:] != (size, size):
            # No ImageNet normalisation: Google's Inception weights expect [-1, 1] already.
            images = F.interpolate(images, size=(size, size), mode="bilinear",
                                   align_corners=self.align_corners)
        regions, pooled = self.trunk(images)
        return self.region_proj(regions), self.global_proj(pooled)

    def load_inception_weights(self, path: str | Path) -> None:
        """Load a local torchvision `inception_v3_google-*.pth` into the frozen trunk."""
        if self.backbone != "inception":
            raise AttnGANError("load_inception_weights needs backbone='inception'")
        path = Path(path)
        if not path.is_file():
            raise AttnGANError(
                f"Inception weights not found: '{path}' (a local torchvision "
                "inception_v3_google-*.pth; it is never downloaded)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise AttnGANError(f"cannot read Inception weights '{path}': {e}".splitlines()[0]) from None
        if not isinstance(state, dict):
            raise AttnGANError(f"'{path}' is not a state dict")
        state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
        own = self.trunk.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            bad = (missing or unexpected or wrong)[0]
            raise AttnGANError(
                f"'{path}' is not a torchvision Inception-v3 state dict "
                f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped keys, "
                f"e.g. '{bad}')"
            )
        self.trunk.load_state_dict(state, strict=False)


# --- Builders -------------------------------------------------------------------------------


def build_text_encoder(cfg: Config, n_words: int) -> TextEncoder:
    """The DAMSM text encoder from `cfg.text` for a vocabulary of `n_words` (incl. padding id 0)."""
    t = cfg.text
    return TextEncoder(n_words, word_dim=t.word_dim, nef=t.embedding_dim, rnn_type=t.rnn_type,
                       dropout=t.dropout, sentence=t.sentence)


def build_image_encoder(cfg: Config) -> ImageEncoder:
    """The DAMSM image encoder from `cfg.damsm`; Inception weights are loaded separately
    (`load_inception_weights(cfg.damsm.inception_weights)`, or a DAMSM checkpoint over it)."""
    d = cfg.damsm
    return ImageEncoder(nef=cfg.text.embedding_dim, backbone=d.backbone, image_size=d.image_size,
                        small_width=d.small_width, small_pool=d.small_pool, align_corners=d.align_corners)
