"""Caption metrics: BLEU, CIDEr-D, and the attribute recall of the SynthBirds round trip (the
attributes a prompt states that come back in a caption of its image).

BLEU is Papineni et al. (2002), CIDEr-D Vedantam et al. (2015).

BLEU and CIDEr-D are implemented here from their papers, in plain Python over word tokens
(`attngan.text.tokenize`: lower-case words, punctuation dropped, as the COCO caption evaluation's
PTB tokenizer leaves it), so that no Java tokenizer is needed:

* `corpus_bleu`: modified (clipped) n-gram precisions summed over the corpus, their geometric mean
  for n = 1..N, times the brevity penalty exp(1 - r/c) when the candidates' total length c is at
  most r, the sum over candidates of the reference length closest to theirs (the shorter on a tie).
* `cider_d`: per n = 1..4, tf-idf n-gram vectors (idf = log(#images / #images whose references hold
  the n-gram), over the reference set), the candidate's counts clipped at the reference's, cosine
  times a Gaussian length penalty exp(-(l_c - l_r)^2 / (2 sigma^2)) with sigma = 6, averaged over
  the references and the four n, times 10; the corpus score is the mean over images. This is
  coco-caption's `CiderD` (lengths counted as it counts them: bigrams, i.e. tokens - 1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from attngan.errors import AttnGANError
from attngan.text import tokenize


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _check(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(candidates) != len(references):
        raise AttnGANError(f"{len(candidates)} candidates for {len(references)} reference sets")
    if not candidates:
        raise AttnGANError("no captions to score")
    if any(not refs for refs in references):
        raise AttnGANError("every candidate needs at least one reference")


def corpus_bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> dict[str, float]:
    """Corpus-level BLEU-n (and the precisions and brevity penalty behind it); values in [0, 1]."""
    _check(candidates, references)
    matched = [0] * n
    total = [0] * n
    c_len = r_len = 0
    for cand, refs in zip(candidates, references):
        c = tokenize(cand)
        rs = [tokenize(r) for r in refs]
        c_len += len(c)
        # The reference length closest to the candidate's (the shorter one on a tie).
        r_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
        for k in range(1, n + 1):
            counts = _ngrams(c, k)
            max_ref: Counter = Counter()
            for r in rs:
                for g, m in _ngrams(r, k).items():
                    max_ref[g] = max(max_ref[g], m)
            matched[k - 1] += sum(min(m, max_ref[g]) for g, m in counts.items())
            total[k - 1] += max(len(c) - k + 1, 0)
    precisions = [m / t if t else 0.0 for m, t in zip(matched, total)]
    bp = 1.0 if c_len > r_len else (math.exp(1 - r_len / c_len) if c_len else 0.0)
    bleu = bp * math.exp(sum(math.log(p) for p in precisions) / n) if min(precisions) > 0 else 0.0
    return {"bleu": bleu, "precisions": precisions, "brevity_penalty": bp,
            "candidate_length": c_len, "reference_length": r_len}


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> dict[str, float | list[float]]:
    """CIDEr-D of each candidate and their mean (the corpus score), coco-caption's scale (x10)."""
    _check(candidates, references)
    refs_tok = [[tokenize(r) for r in refs] for refs in references]
    cand_tok = [tokenize(c) for c in candidates]
    # Document frequency: in how many images' reference sets each n-gram occurs.
    df: Counter = Counter()
    for refs in refs_tok:
        df.update({g for r in refs for k in range(1, n + 1) for g in _ngrams(r, k)})
    log_images = math.log(float(len(refs_tok)))

    def vec(tokens: list[str]):
        v: list[dict] = []
        norms = []
        for k in range(1, n + 1):
            d = {g: m * (log_images - math.log(max(1.0, df[g]))) for g, m in _ngrams(tokens, k).items()}
            v.append(d)
            norms.append(math.sqrt(sum(x * x for x in d.values())))
        return v, norms, max(len(tokens) - 1, 0)

    scores = []
    for cand, refs in zip(cand_tok, refs_tok):
        vc, nc, lc = vec(cand)
        total = [0.0] * n
        for r in refs:
            vr, nr, lr = vec(r)
            penalty = math.exp(-((lc - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                # CIDEr-D clips the candidate's tf-idf at the reference's (min), so repeating a
                # matching n-gram gains nothing.
                dot = sum(min(x, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, x in vc[k].items())
                if nc[k] and nr[k]:
                    dot /= nc[k] * nr[k]
                total[k] += dot * penalty
        scores.append(10.0 * sum(total) / n / len(refs))
    return {"cider_d": sum(scores) / len(scores), "per_caption": scores}


# The SynthBirds round trip.

def attribute_recall(prompts: Sequence[str], captions: Sequence[str],
                     parse=None, wanted: Sequence[Mapping[str, str] | None] | None = None) -> dict[str, object]:
    """Share of the attributes each prompt states that its caption states with the same value.

    Attributes are what `caption_attributes` reads ({part: colour}, bill_shape, bill_length, size);
    `wanted[i]`, where given and not None, replaces the parse of prompt i (a prompt file's own).
    Returns {"all": micro-average over every prompted attribute, "per_attribute": {name: recall},
    "prompted": {name: count}, "captions_all_back": share of prompts whose attributes all came back}.
    """
    if parse is None:
        # Imported here: the registry reads this module, and synth_captions brings numpy.
        from attngan.data.synth_captions import caption_attributes as parse
    if len(prompts) != len(captions):
        raise AttnGANError(f"{len(captions)} captions for {len(prompts)} prompts")
    if wanted is not None and len(wanted) != len(prompts):
        raise AttnGANError(f"{len(wanted)} attribute sets for {len(prompts)} prompts")
    hits: Counter = Counter()
    asked: Counter = Counter()
    complete = with_attrs = 0
    for j, (prompt, caption) in enumerate(zip(prompts, captions)):
        want = wanted[j] if wanted is not None and wanted[j] is not None else parse(prompt)
        if not want:
            continue
        got = parse(caption)
        with_attrs += 1
        ok = True
        for k, v in want.items():
            asked[k] += 1
            hit = got.get(k) == v
            hits[k] += hit
            ok &= hit
        complete += ok
    per = {k: hits[k] / asked[k] for k in sorted(asked, key=lambda k: (-asked[k], k))}
    total = sum(asked.values())
    return {"all": sum(hits.values()) / total if total else float("nan"), "per_attribute": per,
            "prompted": dict(asked), "captions_all_back": complete / with_attrs if with_attrs else float("nan"),
            "prompts": with_attrs}


def caption_scores(captions: Sequence[str], references: Sequence[Sequence[str]] | Sequence[str]) -> dict[str, float]:
    """BLEU-4 and CIDEr-D of `captions` against one reference (a string) or several per caption."""
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    return {"bleu4": corpus_bleu(captions, refs)["bleu"], "cider_d": cider_d(captions, refs)["cider_d"]}


def summarise_recall(r: Mapping[str, object], parts: Sequence[str] = ("wing", "belly", "crown", "bill")) -> str:
    per = r["per_attribute"]
    shown = ", ".join(f"{p} {100 * per[p]:.1f}%" for p in parts if p in per)
    return f"all {100 * r['all']:.1f}% ({shown})"
