"""Our IS, FID, KID and legacy FID equal the peers' on the same weights and images.

One random-weight FID Inception (the 1008-class 2015 TF graph) and one random torchvision
Inception-v3 are built here, with BatchNorm statistics calibrated on images like the scored ones
so that pool3 features vary between images; both are saved and loaded into our extractors and
into pytorch-fid's and torch-fidelity's. Nothing is downloaded: torch-fidelity takes a local
weights path, and pytorch-fid's only way to get weights is its `load_state_dict_from_url`, which
is monkeypatched here to return the saved state dict. DM-GAN's eval/FID path (fid_score.py,
img_data.py, inception.py of MinfengZhu/DM-GAN) is rebuilt below from its published code.

Features are compared at full width (2048), and so are the Frechet distances against pytorch-fid
and torch-fidelity: with N images the covariances have rank N - 1, and every side takes the square
root of the same singular 2048 x 2048 product. The legacy (DM-GAN) distance is compared on
`FID_DIMS` coordinates, those whose means differ most between the two sets (its features are
checked at full width). The formulas themselves are also compared at width 64 on synthetic
features. The `is` stream of a pt_inception file (TF1 resize in the graph) is compared end to end
with torch-fidelity's ISC.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

pytorch_fid = pytest.importorskip("pytorch_fid")
torch_fidelity = pytest.importorskip("torch_fidelity")

N = 10          # images per set: Inception at 299 px costs ~0.3 s an image on a CPU
SIZE = 64       # the scored images' size (resized to 299 by every protocol)
FID_DIMS = 8    # < N, so that the covariances are not singular


def _images(seed: int) -> torch.Tensor:
    """N smooth random colour images, uint8 B x 3 x SIZE x SIZE (upsampled noise: varied content)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(N, 3, 8, 8, generator=g)
    x = F.interpolate(low, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    x = x + 0.08 * torch.randn(N, 3, SIZE, SIZE, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _calibrate(net: nn.Module, images: torch.Tensor, to_input) -> None:
    """Random conv weights, then BatchNorm running statistics set to the batch statistics of
    `images` layer by layer (train-mode pass, cumulative average), so activations neither vanish
    nor explode through 94 layers and the features differ between images."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.05)
            nn.init.normal_(m.bias, std=0.5)
    net.train()
    with torch.no_grad():
        net(to_input(images))
    net.eval()


@pytest.fixture(scope="module")
def image_sets() -> tuple[torch.Tensor, torch.Tensor]:
    a = _images(1)
    # A perturbed copy: inverted, darkened colours plus noise, far enough from the first set that
    # float32 round-off in the features is small next to the distance.
    g = torch.Generator().manual_seed(2)
    b = (255 - a.float()) * 0.6 + 12 * torch.randn(a.shape, generator=g)
    return a, b.clamp(0, 255).round().to(torch.uint8)


def _pm1(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1


def _cols(pools) -> np.ndarray:
    """The FID_DIMS coordinates whose means differ most between the two feature sets."""
    gap = np.abs(np.asarray(pools[0]).mean(0) - np.asarray(pools[1]).mean(0))
    return np.sort(np.argsort(gap)[-FID_DIMS:])


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory, image_sets):
    from attngan.metrics.inception_fid import FIDInception3

    net = FIDInception3()
    _calibrate(net, image_sets[0][:4], _pm1)
    path = tmp_path_factory.mktemp("weights") / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory, image_sets):
    from attngan.metrics.extractors import pil_bilinear, torchvision_transform_input
    from attngan.metrics.inception_fid import TorchvisionInception3

    net = TorchvisionInception3(num_classes=1000, align_corners=True)
    _calibrate(net, image_sets[0][:4], lambda u8: torchvision_transform_input(pil_bilinear(u8).float() / 255))
    path = tmp_path_factory.mktemp("weights") / "inception_v3_google-random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours(fid_weights, image_sets):
    """Our pool3 features of both sets (pytorch-fid resize)."""
    from attngan.metrics.extractors import fid_stream

    stream = fid_stream(fid_weights, torch.device("cpu"))
    return {"pool": [stream(_pm1(s))["pool"] for s in image_sets]}


@pytest.fixture(scope="module")
def pytorch_fid_features(fid_weights, image_sets):
    import pytorch_fid.inception as pfi

    sd = torch.load(fid_weights, weights_only=True)
    mp = pytest.MonkeyPatch()
    # pytorch-fid fetches its weights by URL only; hand it the saved random weights instead.
    mp.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: sd)
    try:
        net = pfi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    finally:
        mp.undo()
    with torch.no_grad():
        return [net(s.float() / 255)[0].flatten(1).double().numpy() for s in image_sets]


@pytest.fixture(scope="module")
def fidelity(fid_weights, image_sets):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(fid_weights))
    with torch.no_grad():
        out = [net(s) for s in image_sets]
    return {"pool": [o[0].double() for o in out], "logits_unbiased": out[0][1].double()}


def test_pool3_features_and_fid_equal_pytorch_fid(ours, pytorch_fid_features):
    from pytorch_fid.fid_score import calculate_frechet_distance

    from attngan.metrics.fid import fid_from_features

    for a, b in zip(ours["pool"], pytorch_fid_features):
        assert a.std(axis=0).mean() > 1e-2       # calibrated: features differ between images
        # float32 round-off (we map to [-1, 1] before the resize, pytorch-fid after) grows
        # through 94 random layers to ~1e-4 on features of ~0.5.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # All 2048 dimensions: with N images the covariances have rank N - 1, and both sides take the
    # matrix square root of the same singular product.
    ref = calculate_frechet_distance(*[f(x) for x in pytorch_fid_features for f in
                                       (lambda x: x.mean(0), lambda x: np.cov(x, rowvar=False))])
    got = fid_from_features(*ours["pool"])
    assert ref > 1e-3
    assert got == pytest.approx(ref, rel=1e-4)


def test_frechet_distance_formula_equals_pytorch_fid_and_torch_fidelity():
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from attngan.metrics.fid import feature_stats, fid_from_features

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64)) * 0.1
    b = a[::-1] * 0.9 + rng.normal(size=a.shape) * 0.05 + 0.02
    got = fid_from_features(a, b)
    s1, s2 = feature_stats(a), feature_stats(b)
    assert got == pytest.approx(calculate_frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma), rel=1e-9)
    stats = [fid_features_to_statistics(torch.from_numpy(x.copy())) for x in (a, b)]
    ref = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert got == pytest.approx(ref, rel=1e-6)


def test_kid_equals_torch_fidelity(ours):
    from torch_fidelity.metric_kid import kid_features_to_metric

    from attngan.metrics.fid import kernel_inception_distance

    # Subsets of all N vectors: both sides average the same MMD^2, whatever their random draws.
    ref = kid_features_to_metric(torch.from_numpy(ours["pool"][0]), torch.from_numpy(ours["pool"][1]),
                                 kid_subsets=5, kid_subset_size=N, kid_degree=3, kid_gamma=None,
                                 kid_coef0=1, rng_seed=0, verbose=False)
    mean, _ = kernel_inception_distance(*ours["pool"], num_subsets=5, subset_size=N)
    assert ref["kernel_inception_distance_mean"] > 0
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)


def test_tf1_resize_features_and_is_equal_torch_fidelity(fid_weights, image_sets, fidelity):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric

    from attngan.metrics.extractors import fid_stream
    from attngan.metrics.fid import fid_from_features
    from attngan.metrics.inception_score import inception_score

    cpu = torch.device("cpu")
    stream = fid_stream(fid_weights, cpu, resize="tf1")
    pools = [stream(_pm1(s))["pool"] for s in image_sets]
    for a, b in zip(pools, fidelity["pool"]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)
    stats = [fid_features_to_statistics(p.contiguous()) for p in fidelity["pool"]]  # all 2048 dimensions
    ref_fid = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert fid_from_features(*pools) == pytest.approx(ref_fid, rel=1e-4)

    # IS probabilities from the same pass: what the probs_unbiased stream computes (tested below).
    unbiased = torch.from_numpy(pools[0]) @ stream.net.fc.weight.double().T
    probs = torch.softmax(unbiased, 1).numpy()
    np.testing.assert_allclose(unbiased.numpy(), fidelity["logits_unbiased"].numpy(), rtol=1e-4, atol=1e-4)
    for shuffle in (False, True):
        ref = isc_features_to_metric(fidelity["logits_unbiased"].float(), splits=3, shuffle=shuffle, rng_seed=2020)
        mean, std = inception_score(probs, splits=3, shuffle_seed=2020 if shuffle else None)
        assert ref["inception_score_mean"] > 1.0
        assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-3)
        assert std == pytest.approx(ref["inception_score_std"], rel=1e-2, abs=1e-6)


@pytest.mark.parametrize("size_in,size_out", [(64, 299), (128, 299), (299, 64), (37, 299)])
def test_tf1_resize_equals_torch_fidelity(size_in, size_out):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    from attngan.metrics.inception_fid import tf1_resize

    x = torch.randint(0, 256, (2, 3, size_in, size_in), generator=torch.Generator().manual_seed(size_in)).float()
    ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(size_out, size_out), align_corners=False)
    torch.testing.assert_close(tf1_resize(x, size_out), ref, rtol=0, atol=1e-3)
    # Not the half-pixel resize of F.interpolate: the two differ by many grey levels.
    half = F.interpolate(x, size=(size_out, size_out), mode="bilinear", align_corners=False)
    assert (half - ref).abs().max() > 10


def test_is_stream_of_a_pt_inception_file_equals_torch_fidelity_isc(fid_weights, image_sets, fidelity):
    # End to end: the `is` metric's own stream on the images, against torch-fidelity's ISC on
    # the logits_unbiased of its TF1-resizing feature extractor (same weights).
    from torch_fidelity.metric_isc import isc_features_to_metric

    from attngan.metrics.extractors import classifier_stream
    from attngan.metrics.inception_score import inception_score

    stream, what = classifier_stream(fid_weights, torch.device("cpu"))
    assert "TF1 resize" in what
    probs = stream(_pm1(image_sets[0]))["probs"]
    ref_probs = torch.softmax(fidelity["logits_unbiased"], 1).numpy()
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-3, atol=1e-6)
    for shuffle in (False, True):
        ref = isc_features_to_metric(fidelity["logits_unbiased"].float(), splits=3, shuffle=shuffle, rng_seed=2020)
        mean, std = inception_score(probs, splits=3, shuffle_seed=2020 if shuffle else None)
        assert ref["inception_score_mean"] > 1.0
        assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-3)
        assert std == pytest.approx(ref["inception_score_std"], rel=1e-2, abs=1e-6)


def test_is_classifier_of_a_pt_inception_file_uses_bias_free_logits(fid_weights, image_sets):
    from attngan.metrics.extractors import classifier_stream
    from attngan.metrics.inception_fid import load_fid_inception, tf1_input

    stream, what = classifier_stream(fid_weights, torch.device("cpu"))
    x = _pm1(image_sets[0][:2])
    probs = stream(x)["probs"]
    net = load_fid_inception(fid_weights)
    net.input_fn = tf1_input
    with torch.no_grad():
        pool, with_bias = net(x)
    unbiased = torch.softmax(pool.double() @ net.fc.weight.double().T, 1).numpy()
    assert "bias-free" in what
    np.testing.assert_allclose(probs, unbiased, rtol=1e-6, atol=1e-9)
    # The bias matters on these weights: the softmax with it is a different distribution.
    assert np.abs(torch.softmax(with_bias.double(), 1).numpy() - probs).max() > 1e-3


def _dmgan_features(tv_weights, folder) -> np.ndarray:
    """DM-GAN eval/FID: PNG folder -> Resize((299, 299)) + ToTensor -> InceptionV3 (torchvision
    Inception-v3 blocks, align_corners=True upsample, transform_input formula) -> pool3."""
    import torchvision.transforms as T
    from torchvision.models import inception_v3

    inception = inception_v3(weights=None, aux_logits=False, init_weights=False)
    sd = torch.load(tv_weights, weights_only=True)
    inception.load_state_dict(sd)
    blocks = nn.Sequential(
        inception.Conv2d_1a_3x3, inception.Conv2d_2a_3x3, inception.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
        inception.Conv2d_3b_1x1, inception.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
        inception.Mixed_5b, inception.Mixed_5c, inception.Mixed_5d, inception.Mixed_6a, inception.Mixed_6b,
        inception.Mixed_6c, inception.Mixed_6d, inception.Mixed_6e,
        inception.Mixed_7a, inception.Mixed_7b, inception.Mixed_7c, nn.AdaptiveAvgPool2d((1, 1)),
    ).eval()
    tf = T.Compose([T.Resize((299, 299)), T.ToTensor()])
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])
    with torch.no_grad():
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        x = x.clone()
        x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return blocks(x).flatten(1).double().numpy()


def test_fid_legacy_equals_dmgan_eval_fid(tv_weights, image_sets, tmp_path):
    from pytorch_fid.fid_score import calculate_frechet_distance

    from attngan.metrics.extractors import legacy_fid_stream
    from attngan.metrics.fid import fid_from_features

    stream = legacy_fid_stream(tv_weights, torch.device("cpu"))
    ours, ref = [], []
    for k, s in enumerate(image_sets):
        folder = tmp_path / f"set{k}"
        folder.mkdir()
        for j, img in enumerate(s):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{j:03d}.png")
        ours.append(stream(_pm1(s))["pool"])
        ref.append(_dmgan_features(tv_weights, folder))
    for a, b in zip(ours, ref):
        assert a.std(axis=0).mean() > 1e-2
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    d = _cols(ours)
    value = calculate_frechet_distance(ref[0][:, d].mean(0), np.cov(ref[0][:, d], rowvar=False),
                                       ref[1][:, d].mean(0), np.cov(ref[1][:, d], rowvar=False))
    assert value > 1e-3
    assert fid_from_features(*[x[:, d] for x in ours]) == pytest.approx(value, rel=1e-4)
