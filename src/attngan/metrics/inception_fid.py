"""Inception-v3 feature extractors for FID and IS, loaded from local weight files only.

Two networks share torchvision's Inception-v3 trunk names (so their state dicts load directly):

* `FIDInception3`: the network behind pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`,
  a port of the TensorFlow graph from 2015-12-05 that the original TTUR FID code uses. It differs
  from torchvision's Inception-v3 in four blocks (the TF graph computes them differently):
  the 3x3 average pools of Mixed_5b/5c/5d (A), Mixed_6b..6e (C) and Mixed_7b (E_1) do not count
  the zero padding, Mixed_7c (E_2) uses a 3x3 max pool in its pool branch, and the classifier has
  1008 outputs. Input: [-1, 1], resized to 299 as pytorch-fid does (F.interpolate bilinear,
  align_corners=False), or as the TF graph itself does (`tf1_input`: TensorFlow 1's bilinear
  resize, which improved-gan's IS and torch-fidelity run; set as `input_fn`).
* `TorchvisionInception3`: torchvision's ImageNet Inception-v3 (`inception_v3_google-*.pth`, 1000
  classes) or any state dict of that architecture with N classes (e.g. a fine-tuned CUB model).
  The Google weights expect [-1, 1] input (torchvision's `transform_input` only converts ImageNet
  normalisation back to that range), so images go in unnormalised.

Both return (pool3 features B x 2048, logits B x classes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from attngan.errors import AttnGANError

FID_NUM_CLASSES = 1008   # the TF graph's softmax layer: 1000 ImageNet classes + 8 unused
INCEPTION_SIZE = 299


def _pool_no_pad(x: Tensor) -> Tensor:
    # TF's avg_pool with SAME padding averages only the in-image values.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(InceptionA):
    """Mixed_5b/5c/5d of the 2015 TF graph: InceptionA with a padding-excluding average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_pool_no_pad(x))
        return [b1, b5, b3, bp]


class FIDInceptionC(InceptionC):
    """Mixed_6b..6e of the 2015 TF graph: InceptionC with a padding-excluding average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(d))))
        bp = self.branch_pool(_pool_no_pad(x))
        return [b1, b7, d, bp]


class FIDInceptionE(InceptionE):
    """Mixed_7b (pool="avg", padding-excluding) and Mixed_7c (pool="max") of the 2015 TF graph."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: Tensor) -> list[Tensor]:
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _pool_no_pad(x)
        return [b1, b3, bd, self.branch_pool(pooled)]


class _InceptionFeatures(Inception3):
    """Inception3 trunk + fc, returning (pool3 features, logits); no aux head, no dropout use."""

    def __init__(self, num_classes: int, align_corners: bool) -> None:
        super().__init__(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False)
        self.align_corners = align_corners
        # Another input mapping (x in [-1, 1], size) -> 299 x 299 network input, replacing the resize.
        self.input_fn = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W images, got {tuple(x.shape)}")
        if self.input_fn is not None:
            x = self.input_fn(x, INCEPTION_SIZE)
        elif x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                              align_corners=self.align_corners)
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        pool = torch.flatten(self.avgpool(x), 1)   # pool3: B x 2048
        return pool, self.fc(pool)


class FIDInception3(_InceptionFeatures):
    """pytorch-fid's FID Inception (TF 2015-12-05 graph), Heusel et al. 2017 / mseitzer/pytorch-fid."""

    def __init__(self, num_classes: int = FID_NUM_CLASSES, last_pool: str = "max") -> None:
        super().__init__(num_classes=num_classes, align_corners=False)
        # The TF graph's mixed blocks: 3x3 average pools that exclude the padding (TF SAME).
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool=last_pool)


class SlimInception3(FIDInception3):
    """The TF-slim Inception-v3 of StackGAN's fine-tuned CUB classifier (`inception/slim/
    inception_model.py`), in torchvision's layer names: every 3x3 average pool of the mixed blocks
    excludes the padding (TF SAME), Mixed_7c included (slim pools it by average, unlike the 2015
    graph's max); `num_classes` logits (51 for CUB: 50 species + background)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes=num_classes, last_pool="avg")


class TorchvisionInception3(_InceptionFeatures):
    """torchvision's Inception-v3 (ImageNet or an N-class fine-tune); resize mode is a protocol choice."""


def tf1_bilinear_matrix(n_in: int, n_out: int) -> Tensor:
    """n_out x n_in weights of TensorFlow 1's bilinear resize along one axis (align_corners=False,
    no half-pixel centres): output i reads input x = i * (n_in / n_out), the scale in float32 as
    TF computes it, between floor(x) and the next sample (the last one repeated at the edge)."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo.float()).double()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w


def tf1_resize(x: Tensor, size: int) -> Tensor:
    """B x C x H x W -> B x C x size x size with TensorFlow 1's bilinear resize (tf1_bilinear_matrix)."""
    rows = tf1_bilinear_matrix(x.shape[-2], size).to(x.device, torch.float32)
    cols = tf1_bilinear_matrix(x.shape[-1], size).to(x.device, torch.float32)
    return rows @ x.float() @ cols.T


def tf1_input(x: Tensor, size: int) -> Tensor:
    """[-1, 1] images -> the TF graph's network input: the 0..255 values resized by TF1's bilinear
    resize inside the graph, then (v - 128) / 128, as improved-gan's IS and torch-fidelity feed it."""
    return (tf1_resize((x.float() + 1) * 127.5, size) - 128) / 128


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local .pth/.pt (tensors only, weights_only) or .safetensors file."""
    p = Path(path)
    if not p.is_file():
        raise AttnGANError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, a pickle with code, wrong format
        raise AttnGANError(f"cannot read weights {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    # Some checkpoints wrap the weights ({"state_dict": ...}) or carry a DataParallel prefix.
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise AttnGANError(f"{p} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def weights_digest(path: str | Path) -> str:
    """First 16 hex digits of the file's sha256: identifies the extractor in cache keys."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _load_strict(net: nn.Module, sd: dict[str, Tensor], path: str | Path, what: str) -> None:
    # Files saved by torch <= 0.3 lack num_batches_tracked; it is a counter with no effect in eval.
    expected = net.state_dict()
    sd = {k: v for k, v in sd.items() if k in expected or not k.endswith("num_batches_tracked")}
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise AttnGANError(
            f"{path} is not {what}: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise AttnGANError(
            f"{path} is not {what}: shape of {bad[0]} is {tuple(sd[bad[0]].shape)}, expected {tuple(expected[bad[0]].shape)}"
        )
    net.load_state_dict(sd)


def load_fid_inception(path: str | Path) -> FIDInception3:
    """The FID Inception from pytorch-fid's pt_inception-2015-12-05-6726825d.pth (local file)."""
    net = FIDInception3()
    _load_strict(net, read_state_dict(path), path, "a pt_inception-2015-12-05 FID Inception state dict")
    return net.eval().requires_grad_(False)


def load_torchvision_inception(path: str | Path, align_corners: bool) -> TorchvisionInception3:
    """torchvision Inception-v3 weights with any number of classes (read from fc.weight)."""
    sd = read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    if "fc.weight" not in sd:
        raise AttnGANError(f"{path} is not an Inception-v3 classifier state dict (no fc.weight)")
    net = TorchvisionInception3(num_classes=int(sd["fc.weight"].shape[0]), align_corners=align_corners)
    _load_strict(net, sd, path, "a torchvision Inception-v3 state dict")
    return net.eval().requires_grad_(False)


def load_slim_inception(path: str | Path) -> SlimInception3:
    """A TF-slim Inception-v3 classifier converted to torchvision names (e.g. StackGAN's CUB model)."""
    sd = read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    if "fc.weight" not in sd:
        raise AttnGANError(f"{path} is not an Inception-v3 classifier state dict (no fc.weight)")
    net = SlimInception3(num_classes=int(sd["fc.weight"].shape[0]))
    _load_strict(net, sd, path, "a converted TF-slim Inception-v3 state dict")
    return net.eval().requires_grad_(False)


def is_fid_inception_file(sd: dict[str, Tensor]) -> bool:
    """pt_inception files are recognisable by their 1008-way classifier."""
    w = sd.get("fc.weight")
    return w is not None and w.shape[0] == FID_NUM_CLASSES
