"""R-precision (Xu et al. 2018, Sec. 5; protocol and numbers of DM-GAN, Zhu et al. 2019).

For every image, its true caption and `n_neg` captions drawn from images of other classes are
ranked by the cosine similarity between the image's global DAMSM code and each sentence code;
R-precision with R = 1 is the fraction of images whose true caption ranks first. DM-GAN reports
the mean and std over 10 splits of the generated set, which is what `r_precision` returns.

The function takes embeddings only, so DAMSM training can use it for real-image retrieval too.
"""

from __future__ import annotations

import numpy as np

from attngan.errors import AttnGANError


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def r_precision_hits(
    img_emb,
    sent_emb,
    class_ids=None,
    n_neg: int = 99,
    seed: int = 0,
) -> np.ndarray:
    """Per-image hits (bool N): does the image's own caption outrank its `n_neg` negatives?

    Row i of `sent_emb` is image i's true caption. Negatives for image i are other rows j with
    class_ids[j] != class_ids[i] (j != i when class_ids is None), drawn without replacement when
    enough exist, else with replacement. A tie with a negative counts as a miss.
    """
    img = _as_numpy(img_emb).astype(np.float64)
    sent = _as_numpy(sent_emb).astype(np.float64)
    if img.ndim != 2 or img.shape != sent.shape:
        raise AttnGANError(f"r_precision needs image and sentence embeddings of equal shape N x D, got {img.shape} and {sent.shape}")
    n = img.shape[0]
    classes = np.arange(n) if class_ids is None else _as_numpy(class_ids).reshape(-1)
    if classes.shape[0] != n:
        raise AttnGANError(f"r_precision: {classes.shape[0]} class ids for {n} embeddings")
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-8)
    sent = sent / np.maximum(np.linalg.norm(sent, axis=1, keepdims=True), 1e-8)

    rng = np.random.default_rng(seed)
    hits = np.zeros(n, dtype=bool)
    for i in range(n):
        pool = np.flatnonzero(classes != classes[i])
        if pool.size == 0:
            raise AttnGANError("r_precision: every caption has the same class; no negatives to rank against")
        neg = rng.choice(pool, n_neg, replace=pool.size < n_neg)
        true_score = img[i] @ sent[i]
        neg_scores = sent[neg] @ img[i]
        hits[i] = bool(true_score > neg_scores.max())
    return hits


def r_precision(
    img_emb,
    sent_emb,
    class_ids=None,
    n_neg: int = 99,
    splits: int = 10,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and std over `splits` consecutive chunks of the top-1 retrieval accuracy (in [0, 1]).

    A remainder of N % splits images is dropped so that the chunks are equal, as in DM-GAN.
    """
    hits = r_precision_hits(img_emb, sent_emb, class_ids, n_neg=n_neg, seed=seed)
    if splits < 1 or hits.size < splits:
        raise AttnGANError(f"r_precision needs at least {splits} images for {splits} splits, got {hits.size}")
    chunk = hits.size // splits
    per_split = hits[: chunk * splits].reshape(splits, chunk).mean(axis=1)
    return float(per_split.mean()), float(per_split.std())
