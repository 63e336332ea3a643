"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over splits.

Follows the reference implementation of openai/improved-gan (`inception_score/model.py`) and the
StackGAN/AttnGAN evaluation that reuses it: the N class-probability vectors are cut into
`splits` consecutive chunks, p(y) is the mean prediction of a chunk, and the score of the chunk
is the exponential of the mean KL divergence; the result is the mean and standard deviation over
chunks. The classifier is pluggable (see `extractors.build_classifier`).
"""

from __future__ import annotations

import numpy as np

from attngan.errors import AttnGANError


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std over `splits` chunks of exp(mean KL(p(y|x) || p(y))), computed in float64.

    `probs` is N x K, each row a probability vector (softmax output). N must be at least
    `splits`; a remainder of N % splits rows is dropped, as the reference does.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise AttnGANError(f"inception_score expects an N x K probability matrix, got shape {p.shape}")
    if splits < 1 or p.shape[0] < splits:
        raise AttnGANError(f"inception_score needs at least {splits} predictions for {splits} splits, got {p.shape[0]}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise AttnGANError("inception_score: predictions must be finite and non-negative")
    p = p / p.sum(axis=1, keepdims=True)
    chunk = p.shape[0] // splits
    scores = np.empty(splits, dtype=np.float64)
    for k in range(splits):
        part = p[k * chunk:(k + 1) * chunk]
        marginal = part.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: classes a prediction gives no mass contribute nothing to its KL.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores[k] = np.exp(terms.sum(axis=1).mean())
    return float(scores.mean()), float(scores.std())
