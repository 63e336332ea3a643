"""CUB-style captions for SynthBirds: a small grammar that writes them and a parser that reads them.

The grammar only states what is true of the image (its ground truth), and the parser recovers
exactly those statements from free text written with the same vocabulary ("wings that are blue",
"blue wings", "a red belly", "the belly is red", "black wings and tail"). The evaluation's
colour-binding metric uses the parser on prompts, so both sides live here and are tested
against each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# CUB's 15 colour names (attributes.txt); "iridescent" is rendered as a sheen.
COLOURS = (
    "blue", "brown", "iridescent", "purple", "rufous", "grey", "yellow", "olive", "green",
    "pink", "orange", "black", "white", "red", "buff",
)
# Parts whose colour a caption can state. Keys of the manifest's per-image "parts".
COLOUR_PARTS = (
    "wing", "belly", "crown", "bill", "breast", "back", "throat", "tail", "nape", "leg", "eye",
    "eyering",
)
BILL_SHAPES = ("pointed", "cone", "hooked", "curved")
BILL_LENGTHS = ("short", "medium", "long")
SIZES = ("small", "medium", "large")

# ---------------------------------------------------------------------------------------------
# Lexicon: surface phrases -> (kind, value). Multi-word phrases win over their prefixes.

_PART_PHRASES: dict[str, tuple[str, ...]] = {
    "wing": ("wing", "wings", "wing feathers", "primaries", "secondaries"),
    "belly": ("belly", "abdomen", "stomach", "underbelly"),
    "crown": ("crown", "top of its head", "top of the head", "top of his head", "top of her head"),
    "bill": ("bill", "bills", "beak", "beaks"),
    "breast": ("breast", "chest"),
    "back": ("back",),
    "throat": ("throat",),
    "tail": ("tail", "tail feathers", "rectrices", "retrices"),
    "nape": ("nape", "back of its neck", "back of the neck", "back of his neck"),
    "leg": ("leg", "legs", "feet", "foot", "tarsus", "tarsi"),
    "eye": ("eye", "eyes"),
    "eyering": ("eyering", "eyerings", "eye ring", "eye rings"),
}
_COLOUR_SYNONYMS = {"gray": "grey"}
_SHAPE_PHRASES = {
    "pointed": "pointed", "pointy": "pointed", "dagger": "pointed", "dagger like": "pointed",
    "cone": "cone", "cone shaped": "cone", "conical": "cone",
    "hooked": "hooked", "hook tipped": "hooked",
    "curved": "curved", "down curved": "curved", "decurved": "curved",
}
_LENGTH_PHRASES = {
    "short": "short", "stubby": "short", "long": "long",
    "medium length": "medium", "average length": "medium",
    "shorter than its head": "short", "shorter than the head": "short",
    "longer than its head": "long", "longer than the head": "long",
    "as long as its head": "medium", "about as long as its head": "medium",
    "about the same length as its head": "medium", "the same length as its head": "medium",
}
_SIZE_PHRASES = {"small": "small", "little": "small", "tiny": "small", "large": "large",
                 "big": "large", "medium sized": "medium"}
_ARTICLES = {"a", "an", "the", "its", "his", "her", "their", "this"}
_COPULAS = ("that are", "that is", "which are", "which is", "that s", "are", "is")
# Words that may sit inside a noun phrase or a predicate without ending it.
_MODIFIERS = {"bright", "dark", "light", "pale", "deep", "vivid", "mostly", "all", "entirely",
              "completely", "very", "fairly", "quite", "rather", "sharp", "thick", "thin",
              "colored", "coloured", "feathered", "shaped", "solid", "pure", "mainly"}


def _build_lexicon() -> dict[tuple[str, ...], tuple[str, str]]:
    lex: dict[tuple[str, ...], tuple[str, str]] = {}
    for c in COLOURS:
        lex[(c,)] = ("colour", c)
    for syn, c in _COLOUR_SYNONYMS.items():
        lex[(syn,)] = ("colour", c)
    for phrase, v in _SHAPE_PHRASES.items():
        lex[tuple(phrase.split())] = ("shape", v)
    for phrase, v in _LENGTH_PHRASES.items():
        lex[tuple(phrase.split())] = ("length", v)
    for phrase, v in _SIZE_PHRASES.items():
        # "medium sized" is a length before "bill" and a size before "bird": the noun decides.
        lex[tuple(phrase.split())] = ("adj", v) if phrase == "medium sized" else ("size", v)
    for part, phrases in _PART_PHRASES.items():
        for phrase in phrases:
            lex[tuple(phrase.split())] = ("part", part)
    for w in ("bird", "birds"):
        lex[(w,)] = ("bird", "bird")
    for copula in _COPULAS:
        lex[tuple(copula.split())] = ("copula", copula)
    for w in _ARTICLES:
        lex.setdefault((w,), ("article", w))
    for w in _MODIFIERS:
        lex[(w,)] = ("mod", w)
    lex[("and",)] = ("and", "and")
    return lex


_LEXICON = _build_lexicon()
_MAX_PHRASE = max(len(k) for k in _LEXICON)
_TOKEN_RE = re.compile(r"[a-z]+|[,.;:!?]")
_ADJECTIVE_KINDS = {"colour", "shape", "length", "size", "adj", "mod"}


@dataclass
class _Lexeme:
    kind: str   # colour | shape | length | size | adj | mod | part | bird | copula | article | and | punct | word
    value: str


def _lex(caption: str) -> list[_Lexeme]:
    tokens = _TOKEN_RE.findall(caption.lower())
    out: list[_Lexeme] = []
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _LEXICON.get(tuple(tokens[i:i + n]))
            if hit:
                out.append(_Lexeme(*hit))
                i += n
                break
        else:
            t = tokens[i]
            out.append(_Lexeme("punct" if not t.isalpha() else "word", t))
            i += 1
    return out


def caption_attributes(caption: str) -> dict[str, str]:
    """The attributes a caption states: `{part: colour}` plus `bill_shape`, `bill_length`, `size`.

    Reads prenominal colours ("a red belly", "short pointed black bill"), predicates ("wings
    that are blue", "the belly is red", "its bill is short and pointed"), and coordination
    ("black wings and tail", "the belly and breast are white"). Unknown words are ignored;
    a part whose colour is not stated is absent from the result.
    """
    lx = _lex(caption)
    nouns = [i for i, t in enumerate(lx) if t.kind in ("part", "bird")]
    pre: dict[int, dict[str, str]] = {i: _prenominal(lx, i) for i in nouns}
    # "black wings and tail": a bare noun after "<coloured noun> and" shares its colour, unless
    # it has a predicate of its own ("a red belly and wings that are blue").
    for a, b in zip(nouns, nouns[1:]):
        if (b == a + 2 and lx[a + 1].kind == "and" and lx[a].kind == lx[b].kind == "part"
                and "colour" in pre[a] and "colour" not in pre[b]
                and not (b + 1 < len(lx) and lx[b + 1].kind == "copula")):
            pre[b]["colour"] = pre[a]["colour"]
    found: dict[str, str] = {}

    def put(noun: int, attrs: dict[str, str]) -> None:
        t = lx[noun]
        for kind, value in attrs.items():
            if t.kind == "bird":
                if kind in ("size", "adj"):
                    found["size"] = value
            elif kind == "colour":
                found[t.value] = value
            elif t.value == "bill" and kind == "shape":
                found["bill_shape"] = value
            elif t.value == "bill" and kind in ("length", "adj"):
                found["bill_length"] = value

    for i in nouns:
        put(i, pre[i])
    # A predicate applies to a coordinated subject ("the wings and tail are black"), but not to
    # members that carry their own colour.
    i = 0
    while i < len(nouns):
        group = [nouns[i]]
        while i + 1 < len(nouns) and _joined(lx, group[-1], nouns[i + 1], pre[group[-1]]):
            i += 1
            group.append(nouns[i])
        pred = _predicate(lx, group[-1] + 1)
        for g in group:
            put(g, {k: v for k, v in pred.items() if not (k == "colour" and "colour" in pre[g])})
        i += 1
    return found


def _prenominal(lx: list[_Lexeme], noun: int) -> dict[str, str]:
    """Adjectives before a noun, nearest first; an article closes the phrase."""
    attrs: dict[str, str] = {}
    j = noun - 1
    while j >= 0:
        t = lx[j]
        if t.kind in _ADJECTIVE_KINDS:
            attrs.setdefault(t.kind, t.value)
        elif ((t.kind == "and" or t.value == ",") and j > 0 and lx[j - 1].kind in _ADJECTIVE_KINDS
              and lx[j + 1].kind in _ADJECTIVE_KINDS):
            pass  # "a short and pointed bill", "a long, curved bill"
        else:
            break
        j -= 1
    return attrs


def _joined(lx: list[_Lexeme], a: int, b: int, pre_a: dict[str, str]) -> bool:
    """True when `a and b` is one coordinated subject ("belly and breast that are white").

    A noun with its own adjectives is a complete phrase ("a long beak and legs that are
    olive"), and an article after "and" starts a new one ("a bill and a crown that is red").
    """
    return b == a + 2 and lx[a + 1].kind == "and" and not pre_a


def _predicate(lx: list[_Lexeme], start: int) -> dict[str, str]:
    """`that are blue`, `is short and pointed`: attributes after a copula, nearest first."""
    if start >= len(lx) or lx[start].kind != "copula":
        return {}
    attrs: dict[str, str] = {}
    j = start + 1
    while j < len(lx):
        t = lx[j]
        if t.kind in _ADJECTIVE_KINDS:
            attrs.setdefault(t.kind, t.value)
        elif t.kind == "and" or (t.kind == "punct" and t.value == ","):
            # "is black, short and pointed" goes on; "is pointed and brown wings" and
            # ", and its crown ..." start a new phrase.
            k = j + 1
            while k < len(lx) and lx[k].kind in _ADJECTIVE_KINDS:
                k += 1
            if k == j + 1 or (k < len(lx) and lx[k].kind in ("part", "bird")):
                break
        elif t.kind == "article" and t.value in ("a", "an") and j + 1 < len(lx) \
                and lx[j + 1].kind in _ADJECTIVE_KINDS and not attrs:
            pass  # "is a bright red"
        else:
            break
        j += 1
    return attrs


# ---------------------------------------------------------------------------------------------
# Grammar.

# How often each attribute is chosen; the four key parts dominate so every image's captions
# repeat them (colour binding is learned from them).
_WEIGHTS = {"wing": 3.0, "belly": 3.0, "crown": 2.2, "bill": 1.8, "bill_shape": 1.4,
            "bill_length": 1.1, "breast": 1.4, "back": 1.0, "throat": 1.0, "tail": 1.0,
            "nape": 0.5, "leg": 0.6, "eyering": 0.6, "eye": 0.3, "size": 0.8}
KEY_PARTS = ("wing", "belly", "crown", "bill")
_PLURAL_PHRASES = {"wings", "wing feathers", "legs", "feet", "eyes", "tail feathers"}
# Surface forms for generation: (phrase, usable before a colour predicate only).
_GEN_PART = {
    "wing": [("wings", False), ("wings", False), ("wing feathers", False)],
    "belly": [("belly", False), ("belly", False), ("abdomen", False)],
    "crown": [("crown", False), ("crown", False), ("top of its head", True)],
    "bill": [("bill", False), ("beak", False)],
    "breast": [("breast", False), ("chest", False)],
    "back": [("back", False)],
    "throat": [("throat", False)],
    "tail": [("tail", False), ("tail", False), ("tail feathers", False)],
    "nape": [("nape", False), ("back of its neck", True)],
    "leg": [("legs", False), ("feet", False)],
    "eye": [("eyes", False)],
    "eyering": [("eyering", False), ("eye ring", False)],
}
_GEN_SHAPE = {"pointed": ["pointed", "pointy", "sharp pointed"], "cone": ["cone-shaped", "conical"],
              "hooked": ["hooked"], "curved": ["curved", "down-curved"]}
_GEN_LENGTH = {"short": ["short", "short", "stubby"], "medium": ["medium-length", "medium length"],
               "long": ["long"]}
_GEN_LENGTH_PRED = {"short": ["short", "shorter than its head"],
                    "medium": ["about the same length as its head", "medium-length"],
                    "long": ["long", "longer than its head"]}
_BRIGHT = {"red", "yellow", "blue", "orange", "green", "pink"}
_OPENERS_WITH = ["a bird with", "this bird has", "the bird has", "this is a bird with",
                 "this bird has", "a bird with", "a bird perched on a branch with",
                 "this particular bird has", "a bird that has"]
_OPENERS_SIZED = ["a {size} bird with", "this {size} bird has", "this is a {size} bird with",
                  "a {size} bird perched on a branch with"]
_SIZE_WORDS = {"small": ["small", "small", "little"], "medium": ["medium-sized"],
               "large": ["large", "big"]}


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Phrase:
    """One noun phrase about one or two parts (same colour), or about the bill."""

    def __init__(self, parts: list[str], colour: str | None, shape: str | None = None,
                 length: str | None = None):
        self.parts, self.colour, self.shape, self.length = parts, colour, shape, length

    def _nouns(self, rng: np.random.Generator, style: str) -> tuple[str, bool]:
        # "top of its head" / "back of its neck" only read well as a clause's subject.
        names = []
        for p in self.parts:
            forms = [f for f, post_only in _GEN_PART[p]
                     if not post_only or (style == "clause" and len(self.parts) == 1)]
            names.append(str(_pick(rng, forms)))
        plural = len(names) > 1 or names[0] in _PLURAL_PHRASES
        return " and ".join(names), plural

    def realize(self, rng: np.random.Generator, style: str) -> str:
        """style: 'pre' ("a red belly"), 'rel' ("a belly that is red"), 'clause' ("its belly is red")."""
        noun, plural = self._nouns(rng, style)
        if style == "pre":
            adjs = []
            if self.length:
                adjs.append(str(_pick(rng, _GEN_LENGTH[self.length])))
            if self.colour:
                if self.colour in _BRIGHT and rng.random() < 0.12:
                    adjs.append("bright")
                adjs.append(self.colour)
            if self.shape:
                adjs.append(str(_pick(rng, _GEN_SHAPE[self.shape])))
            head = " ".join(adjs + [noun])
            return head if plural else f"{_article(head)} {head}"
        # Predicative: everything after the copula, except that a bill may keep one
        # attribute in front ("a long bill that is black and hooked").
        front: list[str] = []
        preds: list[str] = []
        length, colour = self.length, self.colour
        if self.parts == ["bill"] and sum(x is not None for x in (length, colour, self.shape)) > 1 \
                and rng.random() < 0.4:
            if length and (not colour or rng.random() < 0.5):
                front.append(str(_pick(rng, _GEN_LENGTH[length])))
                length = None
            else:
                front.append(str(colour))
                colour = None
        if colour:
            preds.append(colour)
        if length:
            preds.append(str(_pick(rng, _GEN_LENGTH_PRED[length])))
        if self.shape:
            preds.append(str(_pick(rng, _GEN_SHAPE[self.shape])))
        pred = preds[0] if len(preds) == 1 else ", ".join(preds[:-1]) + " and " + preds[-1]
        copula = "are" if plural else "is"
        head = " ".join(front + [noun])
        if style == "clause":
            det = "the" if noun.startswith(("top of", "back of")) else str(_pick(rng, ["its", "the"]))
            return f"{det} {head} {copula} {pred}"
        lead = "" if plural else f"{_article(head)} "
        rel = str(_pick(rng, ["that", "that", "which"]))
        return f"{lead}{head} {rel} {copula} {pred}"

    def attributes(self) -> dict[str, str]:
        out = {p: self.colour for p in self.parts if self.colour}
        if self.shape:
            out["bill_shape"] = self.shape
        if self.length:
            out["bill_length"] = self.length
        return out


def _join(items: list[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    comma = "," if len(items) > 2 and rng.random() < 0.3 else ""
    return ", ".join(items[:-1]) + f"{comma} and " + items[-1]


def sample_caption(truth: dict, rng: np.random.Generator, must: str | None = None) -> tuple[str, dict[str, str]]:
    """One caption about 2-5 true attributes of `truth`; returns (text, the attributes it states).

    `truth` has `parts` ({part: colour}; `eyering` may be missing), `bill_shape`, `bill_length`
    and `size`. `must` names an attribute that has to be among the chosen ones.
    """
    parts = truth["parts"]
    avail = [a for a in _WEIGHTS if a in parts or a in ("bill_shape", "bill_length", "size")]
    w = np.array([_WEIGHTS[a] for a in avail])
    k = int(rng.choice([2, 3, 4, 5], p=[0.3, 0.35, 0.23, 0.12]))
    chosen = list(rng.choice(avail, size=min(k, len(avail)), replace=False, p=w / w.sum()))
    if must and must not in chosen:
        chosen[int(rng.integers(len(chosen)))] = must
    chosen = [str(a) for a in chosen]
    size = truth["size"] if "size" in chosen else None
    # Bill attributes form one phrase; other parts sharing a colour may merge ("white belly and breast").
    phrases: list[_Phrase] = []
    bill_bits = [a for a in chosen if a in ("bill", "bill_shape", "bill_length")]
    merged: set[str] = set()
    for a in chosen:
        if a in ("size", "bill_shape", "bill_length") or a in merged:
            continue
        if a == "bill":
            continue
        partner = [b for b in chosen if b not in merged and b != a and b in parts
                   and b not in ("bill",) and parts[b] == parts[a]]
        if partner and rng.random() < 0.6:
            merged.update({a, partner[0]})
            phrases.append(_Phrase([a, partner[0]], parts[a]))
        else:
            merged.add(a)
            phrases.append(_Phrase([a], parts[a]))
    if bill_bits:
        bill = _Phrase(["bill"], parts["bill"] if "bill" in bill_bits else None,
                       truth["bill_shape"] if "bill_shape" in bill_bits else None,
                       truth["bill_length"] if "bill_length" in bill_bits else None)
        phrases.insert(int(rng.integers(len(phrases) + 1)), bill)
    if not phrases:  # only size was chosen: add a key part so the caption says something
        phrases.append(_Phrase(["wing"], parts["wing"]))
    text = _sentence(phrases, size, rng)
    stated: dict[str, str] = {}
    for ph in phrases:
        stated.update(ph.attributes())
    if size:
        stated["size"] = size
    return text, stated


def _np_style(rng: np.random.Generator, k: int, ph: _Phrase, p_pre: float) -> str:
    # "... a white belly and wings and crown that are black" is ambiguous (does the belly
    # belong to the subject?), so a two-part relative phrase may only open a list.
    if rng.random() < p_pre or (k > 0 and len(ph.parts) > 1):
        return "pre"
    return "rel"


def _sentence(phrases: list[_Phrase], size: str | None, rng: np.random.Generator) -> str:
    if size:
        opener = str(_pick(rng, _OPENERS_SIZED)).format(size=_pick(rng, _SIZE_WORDS[size]))
    else:
        opener = str(_pick(rng, _OPENERS_WITH))
    form = rng.random()
    if form < 0.62 or size:
        # "a bird with wings that are black and a white belly"
        nps = [ph.realize(rng, _np_style(rng, k, ph, 0.55)) for k, ph in enumerate(phrases)]
        text = f"{opener} {_join(nps, rng)}"
    elif form < 0.82:
        # "the wings are blue and the belly is red"
        text = _join([ph.realize(rng, "clause") for ph in phrases], rng)
    elif form < 0.92 and len(phrases) >= 2:
        # "this bird has blue wings and a white belly, and its crown is red"
        nps = [ph.realize(rng, _np_style(rng, k, ph, 0.6)) for k, ph in enumerate(phrases[:-1])]
        text = f"{opener} {_join(nps, rng)}, and {phrases[-1].realize(rng, 'clause')}"
    else:
        # CUB's fragment style: "blue wings, a red belly and a short black bill"
        text = _join([ph.realize(rng, "pre") for ph in phrases], rng)
    return text + ("." if rng.random() < 0.15 else "")


def make_captions(truth: dict, rng: np.random.Generator, n: int = 10) -> list[str]:
    """n distinct captions; the key parts (wing, belly, crown, bill) take turns being mentioned."""
    out: list[str] = []
    for i in range(n):
        must = KEY_PARTS[i % len(KEY_PARTS)]
        for _ in range(20):
            text, _stated = sample_caption(truth, rng, must=must)
            if text not in out:
                break
        out.append(text)
    return out
