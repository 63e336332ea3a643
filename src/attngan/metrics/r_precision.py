"""R-precision (Xu et al. 2018, Sec. 5; protocol and numbers of DM-GAN, Zhu et al. 2019).

For every image, its true caption and `n_neg` mismatched captions are ranked by the cosine
similarity between the image's global DAMSM code and each sentence code; R-precision with R = 1
is the fraction of images whose true caption ranks first. Two samplings:

* `r_precision_dmgan` is DM-GAN's `code/trainer.py` (`sampling`): the 99 mismatched captions of
  each image are drawn with replacement from every caption of the test split whose image has
  another class (`get_mis_caption`: uniform image, rejected when of the same class, then a uniform
  caption of it); the true caption ranks first when `argmax` of the 100 scores is index 0, so a
  tie counts as a hit; the per-image hits are shuffled and cut into 10 chunks of N/10, of which
  DM-GAN averages the first N/10 - 1 (`R[i*3000:(i+1)*3000-1]`), reproduced here.
* `r_precision` (protocol "set"): negatives from the other-class captions of the scored set,
  without replacement when enough exist, a tie is a miss, consecutive chunks. DAMSM training
  uses it for real-image retrieval on the test split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from attngan.errors import AttnGANError
from attngan.metrics.scenes import by_kind
from attngan.metrics.spec import register, seen_novel_details

if TYPE_CHECKING:
    from attngan.metrics.context import EvalContext


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


def r_precision_dmgan(
    img_emb,
    sent_emb,
    class_ids,
    pool_emb,
    pool_class_ids,
    n_neg: int = 99,
    splits: int = 10,
    seed: int = 0,
) -> tuple[float, float, np.ndarray]:
    """DM-GAN's R-precision: (mean, std over splits, per-image hits before the shuffle).

    Row i of `sent_emb` is the sentence embedding that conditioned image i; `pool_emb` holds every
    caption of the test split and `pool_class_ids` their images' classes.
    """
    img = _as_numpy(img_emb).astype(np.float64)
    sent = _as_numpy(sent_emb).astype(np.float64)
    pool = _as_numpy(pool_emb).astype(np.float64)
    if img.ndim != 2 or img.shape != sent.shape or pool.ndim != 2 or pool.shape[1] != img.shape[1]:
        raise AttnGANError(f"r_precision needs N x D image and sentence embeddings and an M x D caption pool, "
                           f"got {img.shape}, {sent.shape} and {pool.shape}")
    n = img.shape[0]
    classes = _as_numpy(class_ids).reshape(-1)
    pool_classes = _as_numpy(pool_class_ids).reshape(-1)
    if classes.shape[0] != n or pool_classes.shape[0] != pool.shape[0]:
        raise AttnGANError("r_precision: one class id per image and per pool caption is needed")
    chunk = n // max(splits, 1)
    if splits < 1 or chunk < 2:
        raise AttnGANError(f"r_precision (dmgan) needs at least {2 * max(splits, 1)} images for {splits} splits, got {n}")

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    img, sent, pool = unit(img), unit(sent), unit(pool)
    rng = np.random.default_rng(seed)
    hits = np.zeros(n, dtype=bool)
    for i in range(n):
        other = pool_classes != classes[i]
        if not other.any():
            raise AttnGANError("r_precision: every test caption has the image's class; no negatives to rank against")
        # Rejection sampling as get_mis_caption: uniform over the pool, same class redrawn.
        neg = np.empty(0, dtype=np.int64)
        while neg.size < n_neg:
            draw = rng.integers(pool.shape[0], size=2 * n_neg)
            neg = np.concatenate([neg, draw[other[draw]]])
        neg = neg[:n_neg]
        hits[i] = bool(img[i] @ sent[i] >= (pool[neg] @ img[i]).max())
    shuffled = hits[rng.permutation(n)]
    per_split = np.array([shuffled[k * chunk:(k + 1) * chunk - 1].mean() for k in range(splits)])
    return float(per_split.mean()), float(per_split.std()), hits


@register(
    name="r_precision", title="R-precision",
    protocol="top-1 of the true caption vs 99 mismatched captions by DAMSM cosine(image code, "
             "sentence), mean ± std over splits; --rp-protocol dmgan (default): negatives drawn "
             "with replacement from all test captions of other classes, ties are hits, hits "
             "shuffled into 10 splits, the conditioning sentence embedding; set: negatives from "
             "the scored set, ties miss",
    reference="DM-GAN code/trainer.py sampling() + datasets.py get_mis_caption()",
    streams=("damsm",), real=False, unit="%", higher_is_better=True, requires=("damsm", "captions"),
    details=seen_novel_details,
)
def r_precision_metric(ctx: "EvalContext") -> dict[str, Any]:
    d = ctx.generated["damsm"]
    protocol = ctx.options.rp_protocol
    if protocol == "dmgan" and ctx.class_ids_given:
        pool, pool_classes = ctx.caption_pool()
        mean, std, _ = r_precision_dmgan(d["img"], d["sent"], ctx.class_ids, pool, pool_classes, n_neg=99,
                                         splits=ctx.options.splits, seed=ctx.options.seed)
    else:
        # A folder without class ids in captions.json cannot be matched to the test split's classes.
        protocol = "set"
        mean, std = r_precision(d["img"], d["sent"], ctx.class_ids, n_neg=99, splits=ctx.options.splits,
                                seed=ctx.options.seed)
    out = {"value": 100 * mean, "std": 100 * std, "encoders": ctx.descriptions.get("damsm", ""),
           "sampling": protocol}

    def subset(sel):
        splits = max(1, min(ctx.options.splits, len(sel) // 8))
        if protocol == "dmgan":
            return 100 * r_precision_dmgan(d["img"][sel], d["sent"][sel], ctx.class_ids[sel], pool, pool_classes,
                                           n_neg=99, splits=splits, seed=ctx.options.seed)[0]
        return 100 * r_precision(d["img"][sel], d["sent"][sel], ctx.class_ids[sel], n_neg=99, splits=splits,
                                 seed=ctx.options.seed)[0]

    # SynthScenes prompts: the seen and the novel compositions apart.
    out.update(by_kind(ctx, subset, minimum=8))
    return out
