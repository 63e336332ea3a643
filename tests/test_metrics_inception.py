"""The FID Inception matches pytorch-fid's pt_inception-2015-12-05 layout; loaders fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.inception import InceptionA, InceptionE

from attngan.errors import AttnGANError
from attngan.metrics.inception_fid import (
    FIDInception3,
    FIDInceptionA,
    FIDInceptionE,
    load_fid_inception,
    load_torchvision_inception,
)


def _conv(prefix: str, cin: int, cout: int, kh: int, kw: int | None = None) -> dict[str, tuple]:
    """A BasicConv2d: bias-free conv + BatchNorm (TF 'conv' + 'batchnorm' nodes)."""
    kw = kh if kw is None else kw
    keys = {f"{prefix}.conv.weight": (cout, cin, kh, kw)}
    for b in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.bn.{b}"] = (cout,)
    keys[f"{prefix}.bn.num_batches_tracked"] = ()
    return keys


def _expected_pt_inception_layout() -> dict[str, tuple]:
    """Keys and shapes of pt_inception-2015-12-05-6726825d.pth, written out from the architecture."""
    e: dict[str, tuple] = {}
    e |= _conv("Conv2d_1a_3x3", 3, 32, 3) | _conv("Conv2d_2a_3x3", 32, 32, 3)
    e |= _conv("Conv2d_2b_3x3", 32, 64, 3) | _conv("Conv2d_3b_1x1", 64, 80, 1)
    e |= _conv("Conv2d_4a_3x3", 80, 192, 3)
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        e |= _conv(f"{name}.branch1x1", cin, 64, 1)
        e |= _conv(f"{name}.branch5x5_1", cin, 48, 1) | _conv(f"{name}.branch5x5_2", 48, 64, 5)
        e |= _conv(f"{name}.branch3x3dbl_1", cin, 64, 1) | _conv(f"{name}.branch3x3dbl_2", 64, 96, 3)
        e |= _conv(f"{name}.branch3x3dbl_3", 96, 96, 3) | _conv(f"{name}.branch_pool", cin, pool, 1)
    e |= _conv("Mixed_6a.branch3x3", 288, 384, 3) | _conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
    e |= _conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3) | _conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        e |= _conv(f"{name}.branch1x1", 768, 192, 1)
        e |= _conv(f"{name}.branch7x7_1", 768, c7, 1) | _conv(f"{name}.branch7x7_2", c7, c7, 1, 7)
        e |= _conv(f"{name}.branch7x7_3", c7, 192, 7, 1)
        e |= _conv(f"{name}.branch7x7dbl_1", 768, c7, 1) | _conv(f"{name}.branch7x7dbl_2", c7, c7, 7, 1)
        e |= _conv(f"{name}.branch7x7dbl_3", c7, c7, 1, 7) | _conv(f"{name}.branch7x7dbl_4", c7, c7, 7, 1)
        e |= _conv(f"{name}.branch7x7dbl_5", c7, 192, 1, 7) | _conv(f"{name}.branch_pool", 768, 192, 1)
    e |= _conv("Mixed_7a.branch3x3_1", 768, 192, 1) | _conv("Mixed_7a.branch3x3_2", 192, 320, 3)
    e |= _conv("Mixed_7a.branch7x7x3_1", 768, 192, 1) | _conv("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7)
    e |= _conv("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1) | _conv("Mixed_7a.branch7x7x3_4", 192, 192, 3)
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        e |= _conv(f"{name}.branch1x1", cin, 320, 1) | _conv(f"{name}.branch3x3_1", cin, 384, 1)
        e |= _conv(f"{name}.branch3x3_2a", 384, 384, 1, 3) | _conv(f"{name}.branch3x3_2b", 384, 384, 3, 1)
        e |= _conv(f"{name}.branch3x3dbl_1", cin, 448, 1) | _conv(f"{name}.branch3x3dbl_2", 448, 384, 3)
        e |= _conv(f"{name}.branch3x3dbl_3a", 384, 384, 1, 3)
        e |= _conv(f"{name}.branch3x3dbl_3b", 384, 384, 3, 1) | _conv(f"{name}.branch_pool", cin, 192, 1)
    e["fc.weight"], e["fc.bias"] = (1008, 2048), (1008,)
    return e


def test_fid_inception_state_dict_matches_pt_inception_layout():
    got = {k: tuple(v.shape) for k, v in FIDInception3().state_dict().items()}
    expected = _expected_pt_inception_layout()
    assert sorted(set(got) ^ set(expected)) == []
    assert got == expected
    assert len([k for k in got if not k.endswith("num_batches_tracked")]) == 472


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
    return net


def test_fid_pools_differ_from_torchvision_only_where_the_tf_graph_does():
    torch.manual_seed(0)
    x = torch.randn(1, 192, 9, 9)
    tv, fid = InceptionA(192, pool_features=32).eval(), FIDInceptionA(192, pool_features=32).eval()
    fid.load_state_dict(tv.state_dict())
    a, b = tv(x), fid(x)
    # The pool branch (last 32 channels) differs at the border only: interior windows have no pad.
    assert torch.equal(a[:, :-32], b[:, :-32])
    assert torch.allclose(a[:, -32:, 1:-1, 1:-1], b[:, -32:, 1:-1, 1:-1], atol=1e-6)
    assert not torch.allclose(a[:, -32:], b[:, -32:])
    e_avg, e_max = FIDInceptionE(1280, pool="avg").eval(), FIDInceptionE(1280, pool="max").eval()
    e_max.load_state_dict(e_avg.state_dict())
    tv_e = InceptionE(1280).eval()
    tv_e.load_state_dict(e_avg.state_dict())
    y = torch.randn(1, 1280, 5, 5)
    assert torch.allclose(e_avg(y)[:, :-192, 1:-1, 1:-1], tv_e(y)[:, :-192, 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(e_max(y)[:, -192:], e_avg(y)[:, -192:])


def test_fid_inception_loads_a_saved_file_and_extracts(tmp_path):
    src = _randomise(FIDInception3(), seed=1)
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, path)  # also checks that files without num_batches_tracked load
    net = load_fid_inception(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        pool, logits = net(x)
        ref_pool, _ = src.eval()(x)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    torch.testing.assert_close(pool, ref_pool)


def test_loaders_reject_the_wrong_file_with_a_clear_error(tmp_path):
    path = tmp_path / "inception_v3_google-test.pth"
    from torchvision.models.inception import Inception3

    torch.save(Inception3(num_classes=1000, aux_logits=True, init_weights=False).state_dict(), path)
    with pytest.raises(AttnGANError, match="not a pt_inception"):
        load_fid_inception(path)
    net = load_torchvision_inception(path, align_corners=True)   # AuxLogits keys are dropped
    assert net.fc.out_features == 1000 and net.align_corners
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(AttnGANError, match="cannot read weights"):
        load_torchvision_inception(tmp_path / "junk.pth", align_corners=False)
    with pytest.raises(AttnGANError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")


def test_n_class_inception_classifier_is_supported(tmp_path):
    # The CUB protocol's classifier is an Inception-v3 fine-tuned to 50 classes.
    from torchvision.models.inception import Inception3

    path = tmp_path / "cub50.pth"
    torch.save(Inception3(num_classes=50, aux_logits=False, init_weights=False).state_dict(), path)
    net = load_torchvision_inception(path, align_corners=False)
    with torch.no_grad():
        _, logits = net(torch.zeros(1, 3, 32, 32))
    assert logits.shape == (1, 50)


def test_cub_classifier_with_51_logits_drops_the_background_logit(tmp_path):
    # StackGAN's CUB Inception (converted to torchvision layout) has 50 species + logit 0.
    from torchvision.models.inception import Inception3

    from attngan.metrics.extractors import classifier_stream, pil_bilinear, to_uint8
    from attngan.metrics.inception_fid import SlimInception3

    path = tmp_path / "cub51.pth"
    torch.manual_seed(0)
    net = Inception3(num_classes=51, aux_logits=False, init_weights=False)
    nn.init.normal_(net.fc.bias, std=3.0)
    torch.save(_randomise(net, seed=2).state_dict(), path)
    stream, what = classifier_stream(path, torch.device("cpu"))
    assert "logit 0 dropped" in what
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    probs = stream(x)["probs"]
    assert probs.shape == (2, 50)
    # Reference: DM-GAN's inception_score_bird.py input (bilinear 299 on uint8, /127.5 - 1), then
    # softmax of logits[:, 1:].
    ref_in = pil_bilinear(to_uint8(x)).float() / 127.5 - 1
    slim = SlimInception3(num_classes=51).eval()
    slim.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        _, logits = slim(ref_in)
        _, tv_logits = load_torchvision_inception(path, align_corners=False)(ref_in)
    torch.testing.assert_close(torch.from_numpy(probs), torch.softmax(logits.double()[:, 1:], 1))
    # TF-slim's padding-free pools, not torchvision's: another network on the same weights.
    assert not torch.allclose(logits, tv_logits, atol=1e-4)
    assert not np.allclose(probs, torch.softmax(logits.double(), 1).numpy()[:, :50])
