"""Our BLEU-1..4 and CIDEr-D (attngan.metrics.captioning) against pycocoevalcap, the COCO caption
evaluation, on pre-tokenised text (lower-case words without punctuation, which our tokenizer and
the PTB tokenizer both leave as they are), so its Java tokenizer is not needed.

pycocoevalcap's BLEU adds 1e-15 / 1e-9 to each precision's numerator / denominator, so the two
agree to about 1e-9 where every n-gram order has a match; its `cider.Cider` is the CIDEr-D formula
(clipped tf-idf, Gaussian length penalty with sigma 6, times 10, idf over the scored references).
"""

from __future__ import annotations

import random

import pytest

Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu", reason="pycocoevalcap is not installed").Bleu
Cider = pytest.importorskip("pycocoevalcap.cider.cider", reason="pycocoevalcap is not installed").Cider

WORDS = ("a bird with wings that are black and white belly red blue yellow small crown bill short "
         "pointed this has brown grey the long tail").split()


def _corpus(seed: int, images: int = 40) -> tuple[list[str], list[list[str]]]:
    """Captions that share n-grams of every order with their references (edits of one sentence),
    references of uneven number and length, some candidates repeating an n-gram (clipping) and
    one a single word (no bigrams at all)."""
    rng = random.Random(seed)
    candidates, references = [], []
    for i in range(images):
        base = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
        refs = []
        for _ in range(rng.randint(1, 5)):
            r = list(base)
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                if op < 0.4 and len(r) > 3:
                    del r[rng.randrange(len(r))]
                elif op < 0.7:
                    r.insert(rng.randrange(len(r) + 1), rng.choice(WORDS))
                else:
                    r[rng.randrange(len(r))] = rng.choice(WORDS)
            refs.append(" ".join(r))
        cand = list(base)
        if i % 7 == 3:
            cand = cand[:4] * 2  # a repeated 4-gram: counts clipped at the references'
        elif i % 5 == 1:
            cand = cand[: rng.randint(3, len(cand))]
        else:
            cand[rng.randrange(len(cand))] = rng.choice(WORDS)
        if i == images - 1:
            cand = cand[:1]
        candidates.append(" ".join(cand))
        references.append(refs)
    return candidates, references


def _coco(candidates, references):
    res = {i: [c] for i, c in enumerate(candidates)}
    gts = {i: list(r) for i, r in enumerate(references)}
    return res, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_1_to_4_equal_pycocoevalcap(seed):
    from attngan.metrics.captioning import corpus_bleu

    candidates, references = _corpus(seed)
    res, gts = _coco(candidates, references)
    theirs, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = [corpus_bleu(candidates, references, n=k) for k in range(1, 5)]
    assert all(min(o["precisions"]) > 0 for o in ours)
    for k in range(4):
        assert ours[k]["bleu"] == pytest.approx(theirs[k], rel=1e-9, abs=1e-12), k + 1
    assert 0.2 < theirs[3] < theirs[0] < 1.0  # a corpus that is neither trivial nor perfect


def test_bleu_brevity_penalty_equals_pycocoevalcap():
    from attngan.metrics.captioning import corpus_bleu

    candidates, references = _corpus(3)
    # Cut every candidate to its first 6 words: shorter than the references, so the penalty applies.
    short = [" ".join(c.split()[:6]) for c in candidates]
    res, gts = _coco(short, references)
    theirs, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = corpus_bleu(short, references, n=4)
    assert ours["brevity_penalty"] < 0.9
    assert ours["bleu"] == pytest.approx(theirs[3], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_equals_pycocoevalcap(seed):
    from attngan.metrics.captioning import cider_d

    candidates, references = _corpus(seed)
    res, gts = _coco(candidates, references)
    theirs, per_image = Cider().compute_score(gts, res)
    ours = cider_d(candidates, references)
    assert ours["cider_d"] == pytest.approx(float(theirs), rel=1e-9, abs=1e-12)
    assert ours["per_caption"] == pytest.approx([float(v) for v in per_image], rel=1e-9, abs=1e-12)
    assert len(set(round(v, 6) for v in ours["per_caption"])) > 20  # per-caption scores, not one value
