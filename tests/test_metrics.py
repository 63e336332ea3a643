"""Metric math with known answers, and the FID Inception's state-dict layout."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from attngan.errors import AttnGANError
from attngan.metrics.fid import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    mmd2_unbiased,
)
from attngan.metrics.inception_score import inception_score
from attngan.metrics.r_precision import r_precision, r_precision_hits


# Inception Score.

def test_is_of_uniform_predictions_is_one():
    probs = np.full((100, 7), 1 / 7)
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10, 50])
def test_is_of_confident_even_predictions_is_k(k):
    # Each split holds every class equally often, each prediction a one-hot: KL = log K.
    n_per_split = 3 * k
    labels = np.tile(np.arange(k), 10 * 3)
    probs = np.eye(k)[labels]
    mean, std = inception_score(probs, splits=10)
    assert probs.shape[0] == 10 * n_per_split
    assert mean == pytest.approx(k, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_is_matches_direct_kl_on_random_predictions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, std = inception_score(p, splits=4)
    scores = []
    for part in np.split(p, 4):
        py = part.mean(0)
        kls = [sum(pi * np.log(pi / qi) for pi, qi in zip(row, py)) for row in part]
        scores.append(np.exp(np.mean(kls)))
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)


def test_is_rejects_too_few_predictions():
    with pytest.raises(AttnGANError, match="at least 10"):
        inception_score(np.full((5, 3), 1 / 3), splits=10)


# FID.

def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(500, 32))
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_of_two_diagonal_gaussians_matches_closed_form():
    # For commuting covariances tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(s1_i) - sqrt(s2_i))^2.
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 3, size=16), rng.uniform(0.1, 3, size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(3)
    d, n = 4, 200_000
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) * 2.0 + 1.0    # mean 1, variance 4 per dimension
    expected = d * 1.0 + d * (1.0 - 2.0) ** 2  # |dmu|^2 + sum (sqrt(1) - sqrt(4))^2 = 8
    assert fid_from_features(x, y) == pytest.approx(expected, abs=0.05)


def test_fid_matches_float64_eigen_reference_on_random_features():
    # Independent reference: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (a symmetric PSD matrix).
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 24)).astype(np.float32)
    b = (rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a64.mean(0), b64.mean(0)
    s1, s2 = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    r1 = scipy.linalg.sqrtm(s1).real
    eig = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)


def test_feature_stats_are_float64_and_match_numpy_cov():
    x = np.random.default_rng(5).normal(size=(50, 6)).astype(np.float32)
    st = feature_stats(x)
    assert st.mu.dtype == np.float64 and st.sigma.dtype == np.float64 and st.n == 50
    np.testing.assert_allclose(st.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)


def test_fid_survives_singular_covariances_with_the_eps_offset():
    # Fewer samples than dimensions: both covariances are rank-deficient.
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 0.1
    value = fid_from_features(x, y)
    assert np.isfinite(value) and value > 0


def test_fid_rejects_mismatched_or_broken_features():
    with pytest.raises(AttnGANError):
        fid_from_features(np.zeros((10, 4)), np.zeros((10, 5)))
    with pytest.raises(AttnGANError, match="NaN"):
        feature_stats(np.full((4, 2), np.nan))


# KID.

def test_mmd2_unbiased_matches_a_naive_double_loop():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    near, _ = kernel_inception_distance(a, b + 0.3, num_subsets=20, subset_size=200)
    far, _ = kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert 0 < near < far
    # Seeded subsets: the same call gives the same answer.
    assert kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=3) == \
        kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=3)


# R-precision.

def test_r_precision_on_constructed_embeddings():
    # Images 0..59 embed exactly their caption (hit); images 60..99 point away from their own
    # caption, towards the common direction every other caption shares (miss).
    n, d = 100, 8
    rng = np.random.default_rng(9)
    sent = rng.normal(size=(n, d)) * 0.05
    sent[:, 0] += 1.0
    img = sent.copy()
    img[60:] = -sent[60:]
    img[60:, 0] = 1.0
    classes = np.arange(n) // 5
    hits = r_precision_hits(img, sent, classes, n_neg=20)
    assert hits[:60].all() and not hits[60:].any()
    mean, std = r_precision(img, sent, classes, n_neg=20, splits=10)
    # Splits are consecutive chunks of 10: six all-hit chunks and four all-miss chunks.
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(np.std([1] * 6 + [0] * 4))


def test_r_precision_negatives_come_from_other_classes_only():
    # Every caption of class 0 is identical to image 0's: a same-class negative would tie and
    # make a miss; other-class negatives are orthogonal, so every image hits.
    img = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    sent = img.copy()
    classes = np.array([0] * 5 + [1] * 5)
    assert r_precision_hits(img, sent, classes, n_neg=99).all()
    # Without classes, identical captions of other images tie with the true one: misses.
    assert not r_precision_hits(img, sent, None, n_neg=99).any()


def test_r_precision_accepts_tensors_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    img, sent = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    a = r_precision(img, sent, torch.arange(50) // 5, n_neg=9, splits=5, seed=1)
    b = r_precision(img.numpy(), sent.numpy(), np.arange(50) // 5, n_neg=9, splits=5, seed=1)
    assert a == b
    assert 0.0 <= a[0] <= 1.0


def test_is_splits_use_every_prediction_with_improved_gan_bounds():
    # 23 predictions in 4 splits: bounds k*23//4 = 0, 5, 11, 17, 23 (no row dropped).
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(6) * 0.3, size=23)
    mean, std = inception_score(p, splits=4)
    scores = []
    for k in range(4):
        part = p[k * 23 // 4:(k + 1) * 23 // 4]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    assert [len(p[k * 23 // 4:(k + 1) * 23 // 4]) for k in range(4)] == [5, 6, 6, 6]
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)
    # Dropping the remainder (the old behaviour) is another number.
    assert mean != pytest.approx(inception_score(p[:20], splits=4)[0], rel=1e-6)


def test_is_shuffle_is_numpy_randomstate_permutation():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(5) * 0.3, size=30)
    perm = np.random.RandomState(2020).permutation(30)
    assert inception_score(p, splits=3, shuffle_seed=2020) == inception_score(p[perm], splits=3)
    assert inception_score(p, splits=3, shuffle_seed=2020) != inception_score(p, splits=3)


# R-precision, DM-GAN's sampling.

def test_r_precision_dmgan_counts_ties_as_hits_and_draws_other_classes_only():
    from attngan.metrics.r_precision import r_precision_dmgan

    # Every image embeds exactly its caption; the pool holds the same caption under the image's
    # class (never drawn) and a copy under another class (a tie when drawn: a hit for DM-GAN).
    img = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    classes = np.array([0] * 10 + [1] * 10)
    pool = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    pool_cls = np.array([0, 1, 2, 2])
    mean, std, hits = r_precision_dmgan(img, img, classes, pool, pool_cls, n_neg=99, splits=2)
    assert hits.all() and mean == 1.0 and std == 0.0
    # With every embedding equal, every negative ties: DM-GAN's hits, the set protocol's misses.
    same = np.ones((20, 2))
    assert r_precision_dmgan(same, same, classes, same, classes, n_neg=99, splits=2)[2].all()
    assert not r_precision_hits(same, same, classes, n_neg=99).any()
    # A pool caption closer to the image than its own, in another class: every image misses.
    pool_far = np.array([[1.0, 0.0], [0.0, 1.0]])
    sent = img + np.array([0.0, 0.5]) * (classes[:, None] == 0) + np.array([0.5, 0.0]) * (classes[:, None] == 1)
    _, _, hits = r_precision_dmgan(img, sent, classes, pool_far[::-1], np.array([0, 1]), n_neg=99, splits=2)
    assert not hits.any()


def test_r_precision_dmgan_splits_shuffle_and_drop_the_last_of_each_chunk():
    from attngan.metrics.r_precision import r_precision_dmgan

    rng = np.random.default_rng(5)
    n, d = 40, 6
    sent = rng.normal(size=(n, d))
    img = sent + rng.normal(size=(n, d)) * 1.2
    classes = np.arange(n) // 4
    pool, pool_cls = rng.normal(size=(200, d)), rng.integers(0, 10, size=200)
    mean, std, hits = r_precision_dmgan(img, sent, classes, pool, pool_cls, n_neg=9, splits=4, seed=7)
    assert 0 < hits.mean() < 1
    # Replay the seeded draws: negatives first (image by image), then the shuffle; each chunk of
    # N/splits = 10 averages its first 9 entries, as R[i*3000:(i+1)*3000-1] in DM-GAN.
    rng2 = np.random.default_rng(7)
    for i in range(n):
        got = 0
        while got < 9:
            draw = rng2.integers(200, size=18)
            got += int((pool_cls[draw] != classes[i]).sum())
    shuffled = hits[rng2.permutation(n)]
    per = [shuffled[k * 10:k * 10 + 9].mean() for k in range(4)]
    assert mean == pytest.approx(np.mean(per)) and std == pytest.approx(np.std(per))
    assert (mean, std) == r_precision_dmgan(img, sent, classes, pool, pool_cls, n_neg=9, splits=4, seed=7)[:2]
    with pytest.raises(AttnGANError, match="at least 8 images"):
        r_precision_dmgan(img[:7], sent[:7], classes[:7], pool, pool_cls, splits=4)


def test_every_metric_states_what_it_needs_and_the_notes_come_from_there():
    from types import SimpleNamespace

    from attngan.metrics.evaluation import DEFAULT_METRICS, EvalOptions
    from attngan.metrics.registry import REGISTRY, REQUIREMENTS, missing_input

    for spec in REGISTRY.values():
        assert set(spec.requires) <= set(REQUIREMENTS), spec.name
    # The stage diagnostic and the DAMSM's localisation run when named.
    assert DEFAULT_METRICS == tuple(n for n, s in REGISTRY.items() if n not in ("sharpness", "localisation"))
    bare = EvalOptions()
    none = {"has_damsm": False, "has_captions": False, "ground_truth": None, "generated": False}
    assert "--fid-inception" in missing_input(REGISTRY["fid"], bare, **none)
    assert "--model" in missing_input(REGISTRY["attention_colour"], bare, **none)
    assert "DAMSM" in missing_input(REGISTRY["r_precision"], bare, **none)
    assert "captioner" in missing_input(REGISTRY["roundtrip"], bare, **none)
    everything = SimpleNamespace(is_classifier=None, fid_inception="f", inception="i", oracle="o",
                                 captioner="c", judge="j")
    given = {"has_damsm": True, "has_captions": True, "ground_truth": "synth_birds", "generated": True}
    assert all(missing_input(spec, everything, **given) is None for spec in REGISTRY.values())
    assert "SynthBirds or SynthScenes" in missing_input(REGISTRY["roundtrip"], everything, **dict(given, ground_truth=None))
    # The round trip reads captions back with either data set's grammar; the part colours need the birds.
    assert missing_input(REGISTRY["roundtrip"], everything, **dict(given, ground_truth="synth_scenes")) is None
    assert "SynthBirds" in missing_input(REGISTRY["attention_colour"], everything, **dict(given, ground_truth="synth_scenes"))
    assert "--judge" in missing_input(REGISTRY["composition"], bare, **dict(given, has_captions=True))
