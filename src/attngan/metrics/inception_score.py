"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over splits.

Follows openai/improved-gan `inception_score/model.py` (the code StackGAN, AttnGAN and DM-GAN
reuse): the N class-probability vectors are cut into `splits` consecutive chunks with bounds
`k*N//splits .. (k+1)*N//splits` (so every prediction is used, chunks differ by at most one),
p(y) is the mean prediction of a chunk, the chunk's score is exp of the mean KL divergence, and
the result is the mean and (population) standard deviation over chunks. torch-fidelity's ISC is
the same computation after a shuffle with `numpy.random.RandomState(seed).permutation`;
`shuffle_seed` reproduces it. The classifier is pluggable (see `extractors.classifier_stream`).

Kept here rather than delegated to torch-fidelity: the classifier may be the SynthBirds oracle or
a 50-class CUB model whose probabilities torch-fidelity's ISC cannot take, and the formula is a
dozen lines (tests/test_metrics_peers.py checks it equals torch-fidelity's on the same logits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.errors import AttnGANError
from attngan.metrics.scenes import by_kind
from attngan.metrics.spec import register, seen_novel_details

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext


def inception_score(probs: np.ndarray, splits: int = 10, shuffle_seed: int | None = None) -> tuple[float, float]:
    """Mean and std over `splits` chunks of exp(mean KL(p(y|x) || p(y))), computed in float64.

    `probs` is N x K, each row a probability vector (softmax output). N must be at least
    `splits`. With `shuffle_seed`, rows are first permuted as torch-fidelity does.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise AttnGANError(f"inception_score expects an N x K probability matrix, got shape {p.shape}")
    if splits < 1 or p.shape[0] < splits:
        raise AttnGANError(f"inception_score needs at least {splits} predictions for {splits} splits, got {p.shape[0]}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise AttnGANError("inception_score: predictions must be finite and non-negative")
    p = p / p.sum(axis=1, keepdims=True)
    n = p.shape[0]
    if shuffle_seed is not None:
        p = p[np.random.RandomState(shuffle_seed).permutation(n)]
    scores = np.empty(splits, dtype=np.float64)
    for k in range(splits):
        part = p[k * n // splits:(k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: classes a prediction gives no mass contribute nothing to its KL.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores[k] = np.exp(terms.sum(axis=1).mean())
    return float(scores.mean()), float(scores.std())


@register(
    name="is", title="Inception Score",
    protocol="exp(E KL(p(y|x) || p(y))) in float64, mean ± std over splits with bounds k*N//splits "
             "(paper: 10 of 30,000 images); classifier: --is-classifier, else the --oracle species "
             "head, else the SynthScenes judge's 60 scene classes (background x main category), else "
             "--fid-inception (1008-class TF graph, bias-free logits pool3 @ W); on SynthScenes also "
             "for seen and novel prompts",
    reference="openai/improved-gan inception_score/model.py (COCO); DM-GAN eval/IS/bird/"
              "inception_score_bird.py on StackGAN's CUB Inception, logit 0 dropped (CUB)",
    streams=("is_probs",), real=False, unit="", higher_is_better=True, requires=("is_classifier",),
    prompts=True, details=seen_novel_details,
)
def inception_score_splits(ctx: "EvalContext") -> dict[str, Any]:
    probs = ctx.generated["is_probs"]["probs"]
    mean, std = inception_score(probs, splits=ctx.options.splits, shuffle_seed=ctx.options.is_shuffle_seed)
    out = {"value": mean, "std": std, "classifier": ctx.descriptions.get("is_probs", "")}
    # SynthScenes prompts: the score of the seen and of the novel compositions' images apart.
    out.update(by_kind(ctx, lambda sel: inception_score(probs[sel], splits=min(ctx.options.splits, len(sel)),
                                                        shuffle_seed=ctx.options.is_shuffle_seed)[0]))
    return out
