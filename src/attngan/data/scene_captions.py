"""SynthScenes captions: a small COCO-like grammar that writes them and a parser that reads them back.

The grammar only states what is true of the image: every caption names every object group
(category, colour, and its count either exactly or as "some"/"a herd of"), where each group is
(in the sky, or on the background's ground), and the background itself. The parser recovers
exactly those statements from any text in the same vocabulary; the scene metrics read prompts
with it, so both sides live here and are tested against each other.

The vocabulary is small and explicit: `VOCABULARY` holds every word the grammar writes and the
parser reads.
"""

from __future__ import annotations

import re

import numpy as np

from attngan.data.scene_render import BACKGROUNDS, CATEGORY_NAMES, COLOURS

# Nouns: category -> (singular, plural).
NOUNS: dict[str, tuple[str, str]] = {
    "car": ("car", "cars"), "airplane": ("airplane", "airplanes"), "bus": ("bus", "buses"),
    "boat": ("boat", "boats"), "fire hydrant": ("fire hydrant", "fire hydrants"),
    "stop sign": ("stop sign", "stop signs"), "sheep": ("sheep", "sheep"), "cow": ("cow", "cows"),
    "umbrella": ("umbrella", "umbrellas"), "kite": ("kite", "kites"), "banana": ("banana", "bananas"),
    "clock": ("clock", "clocks"),
}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
VAGUE_WORDS = ("some", "several")                      # two or more
COLLECTIVES = {"cow": "herd", "sheep": "flock"}          # "a herd of cows": three or more
GROUP_WORD = "group"                                     # "a group of kites": three or more
# Ground phrases of each background: what "on the ..." may say.
GROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "street": ("on the street", "on a city street", "in the street"),
    "grass": ("on the grass", "in a grassy field", "in the field", "on a green field"),
    "lake": ("on the lake", "on the water", "in the lake"),
    "beach": ("on the beach", "on the sand", "on a sandy beach"),
    "snow": ("in the snow", "on a snowy field", "on the snow"),
}
# The background seen from the sky ("over the lake").
OVER_PHRASES: dict[str, tuple[str, ...]] = {
    "street": ("the street", "a city street"), "grass": ("a grassy field", "the grass"),
    "lake": ("the lake", "the water"), "beach": ("the beach", "a sandy beach"),
    "snow": ("a snowy field", "the snow"),
}
SKY_PHRASES = ("in the sky", "up in the sky", "high in the sky")
# Nouns of the lexicon that name a background (longest match wins: "snowy field" is snow).
GROUND_NOUNS: dict[str, str] = {
    "street": "street", "city street": "street", "grass": "grass", "grassy field": "grass",
    "green field": "grass", "field": "grass", "lake": "lake", "water": "lake", "beach": "beach",
    "sand": "beach", "sandy beach": "beach", "snow": "snow", "snowy field": "snow",
}
RELATIONS = ("next to", "in front of", "above")          # as stored in the ground truth
RELATION_WORDS = {"next to": "next to", "beside": "next to", "in front of": "in front of",
                  "behind": "behind", "above": "over", "over": "over", "below": "under",
                  "under": "under"}
PHOTO_WORDS = ("a photo of", "a picture of", "an image of")
VERBS = ("flying", "soaring", "driving", "parked", "grazing", "standing", "walking", "floating",
         "sailing", "sitting", "lying")
FUNCTION_WORDS = ("there", "is", "are", "and", "with", "of", "the", "down", "through", "in", "on",
                  "up", "high", "sky", "that", "which")

_ANIMALS = ("cow", "sheep")
_DRIVEN = ("car", "bus")
_LIE = ("banana", "kite")


def _phrase_words(*groups) -> set[str]:
    out: set[str] = set()
    for g in groups:
        for phrase in g:
            out.update(phrase.split())
    return out


VOCABULARY: tuple[str, ...] = tuple(sorted(
    _phrase_words(COLOURS, [w for pair in NOUNS.values() for w in pair], NUMBER_WORDS, VAGUE_WORDS,
                  COLLECTIVES.values(), [GROUP_WORD], *GROUND_PHRASES.values(), *OVER_PHRASES.values(),
                  SKY_PHRASES, GROUND_NOUNS, RELATION_WORDS, PHOTO_WORDS, VERBS, FUNCTION_WORDS)))


# ---------------------------------------------------------------------------------------------
# Grammar.

def _pick(rng: np.random.Generator, options, weights=None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(group: dict, rng: np.random.Generator) -> str:
    """'a red bus', 'two white sheep', 'some blue kites', 'a herd of brown cows'."""
    cat, colour, n = group["category"], group["colour"], group["count"]
    sing, plural = NOUNS[cat]
    if n == 1:
        return _pick(rng, [f"{_article(colour)} {colour} {sing}", f"one {colour} {sing}"], [4, 1])
    number = ("one", "two", "three", "four")[n - 1]
    options, weights = [f"{number} {colour} {plural}"], [5.0]
    options += [f"{v} {colour} {plural}" for v in VAGUE_WORDS]
    weights += [0.5, 0.5]
    if n >= 3:
        options.append(f"a {COLLECTIVES.get(cat, GROUP_WORD)} of {colour} {plural}")
        weights.append(2.0)
    return _pick(rng, options, weights)


def _verbs(cat: str, place: str) -> list[str]:
    if place == "lake":
        return ["floating"] + (["sailing"] if cat == "boat" else [])
    if cat in _ANIMALS:
        return ["standing", "walking"] + (["grazing"] * 2 if place == "grass" else [])
    if cat in _DRIVEN:
        return ["parked"] + (["driving"] * 2 if place in ("street", "snow") else [])
    if cat == "airplane":
        return ["parked", "sitting"]
    if cat in _LIE:
        return ["lying", "sitting"]
    return ["standing", "sitting"]


def ground_phrase(place: str, rng: np.random.Generator) -> str:
    return _pick(rng, GROUND_PHRASES[place])


def verb_phrase(group: dict, background: str, rng: np.random.Generator, over: bool = True) -> str:
    """What the group does where it is: 'driving down the street', 'flying in the sky over the
    lake' (`over` adds the background under a flying group)."""
    cat, place = group["category"], group["place"]
    if place == "sky":
        if over and rng.random() < 0.35:
            return f"{_pick(rng, ('flying', 'soaring'))} over {_pick(rng, OVER_PHRASES[background])}"
        verb = _pick(rng, ["flying ", "soaring ", ""], [3, 1, 1])
        text = f"{verb}{_pick(rng, SKY_PHRASES)}"
        if over:
            text += f" {_pick(rng, ('above', 'over'))} {_pick(rng, OVER_PHRASES[background])}"
        return text
    verb = _pick(rng, _verbs(cat, place) + [""])
    if verb == "driving" and place == "street":
        where = _pick(rng, ["down the street", "down a city street", "on the street"])
    elif verb == "driving":
        where = "through the snow"
    else:
        where = ground_phrase(place, rng)
    return f"{verb} {where}".strip()


def _be(group: dict) -> str:
    return "is" if group["count"] == 1 else "are"


def sample_caption(truth: dict, rng: np.random.Generator) -> str:
    """One caption of a scene: `truth` has background, groups (category, colour, count, place)
    and relation ({subject, relation, object} group indices, or None)."""
    bg, groups, rel = truth["background"], truth["groups"], truth.get("relation")
    if len(groups) == 1:
        g = groups[0]
        np_ = noun_phrase(g, rng)
        be = _be(g)
        form = int(rng.integers(5))
        if form == 0:
            text = f"{np_} {verb_phrase(g, bg, rng)}"
        elif form == 1:
            text = f"there {be} {np_} {verb_phrase(g, bg, rng)}"
        elif form == 2:
            text = f"{np_} {be} {verb_phrase(g, bg, rng)}"
        elif form == 3:
            text = f"{_pick(rng, PHOTO_WORDS)} {np_} {verb_phrase(g, bg, rng)}"
        elif g["place"] == "sky":
            text = f"{_pick(rng, SKY_PHRASES)} {_pick(rng, ('above', 'over'))} " \
                   f"{_pick(rng, OVER_PHRASES[bg])} there {be} {np_}"
        else:
            text = f"{ground_phrase(bg, rng)} there {be} {np_}"
        return _finish(text, rng)
    s, o = (rel["subject"], rel["object"]) if rel else (0, 1)
    gs, go = groups[s], groups[o]
    kind = rel["relation"] if rel else "next to"
    nps, npo = noun_phrase(gs, rng), noun_phrase(go, rng)
    if kind == "above":     # gs flies over go, which is on the ground
        form = int(rng.integers(4))
        if form == 0:
            text = f"{nps} {_pick(rng, ['flying ', ''])}{_pick(rng, SKY_PHRASES)} " \
                   f"{_pick(rng, ('above', 'over'))} {npo} {verb_phrase(go, bg, rng)}"
        elif form == 1:
            text = f"{npo} {verb_phrase(go, bg, rng)} with {nps} {_pick(rng, SKY_PHRASES)}"
        elif form == 2:
            text = f"{nps} {_pick(rng, ('flying', 'soaring'))} over {npo} {ground_phrase(bg, rng)}"
        else:
            text = f"{npo} {ground_phrase(bg, rng)} and {nps} {_pick(rng, SKY_PHRASES)}"
        return _finish(text, rng)
    both_sky = gs["place"] == "sky"
    where = (f"{_pick(rng, ['flying ', ''])}{_pick(rng, SKY_PHRASES)} {_pick(rng, ('above', 'over'))} "
             f"{_pick(rng, OVER_PHRASES[bg])}") if both_sky else ground_phrase(bg, rng)
    rel_words = _pick(rng, ("next to", "beside")) if kind == "next to" else "in front of"
    form = int(rng.integers(6))
    if form == 0:
        text = f"{nps} {rel_words} {npo} {where}"
    elif form == 1 and not both_sky:
        text = f"{nps} {verb_phrase(gs, bg, rng)} {rel_words} {npo}"
    elif form == 2:
        a, b = (nps, npo) if rng.random() < 0.5 else (npo, nps)
        text = f"{a} and {b} {where}"
    elif form == 3:
        (first, g_first), second = ((nps, gs), npo) if rng.random() < 0.5 else ((npo, go), nps)
        text = f"there {_be(g_first)} {first} and {second} {where}"
    elif form == 4 and kind == "in front of":
        text = f"{npo} behind {nps} {where}"
    else:
        text = f"{_pick(rng, PHOTO_WORDS)} {nps} {rel_words} {npo} {where}"
    return _finish(text, rng)


def _finish(text: str, rng: np.random.Generator) -> str:
    text = " ".join(text.split())
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.5:
        text += "."
    return text


def make_captions(truth: dict, rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` distinct captions of a scene (distinct in their words, not just case and full stop)."""
    out, seen = [], set()
    for _ in range(50 * n):
        text = sample_caption(truth, rng)
        norm = text.lower().rstrip(".")
        if norm not in seen:
            seen.add(norm)
            out.append(text)
            if len(out) == n:
                return out
    while len(out) < n:   # a scene with very few phrasings repeats one
        out.append(out[len(out) % max(1, len(seen))])
    return out


# ---------------------------------------------------------------------------------------------
# Parser.

def _build_lexicon() -> dict[tuple[str, ...], tuple]:
    lex: dict[tuple[str, ...], tuple] = {}
    for c in COLOURS:
        lex[(c,)] = ("colour", c)
    for cat, (sing, plural) in NOUNS.items():
        lex[tuple(sing.split())] = ("noun", (cat, None if sing == plural else False))
        if plural != sing:
            lex[tuple(plural.split())] = ("noun", (cat, True))
    for w, n in NUMBER_WORDS.items():
        lex[(w,)] = ("num", n)
    for w in VAGUE_WORDS:
        lex[(w,)] = ("vague", None)
    for w in (*COLLECTIVES.values(), GROUP_WORD):
        lex[(w, "of")] = ("collective", None)
    for phrase, bg in GROUND_NOUNS.items():
        lex[tuple(phrase.split())] = ("ground", bg)
    lex[("sky",)] = ("sky", None)
    for phrase, r in RELATION_WORDS.items():
        lex[tuple(phrase.split())] = ("rel", r)
    return lex


_LEXICON = _build_lexicon()
_MAX_PHRASE = max(len(k) for k in _LEXICON)
_TOKEN_RE = re.compile(r"[a-z]+")


def _lex(text: str) -> list[tuple]:
    tokens = _TOKEN_RE.findall(text.lower())
    out, i = [], 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):
            hit = _LEXICON.get(tuple(tokens[i:i + n]))
            if hit:
                out.append(hit)
                i += n
                break
        else:
            out.append(("word", tokens[i]))
            i += 1
    return out


def parse_scene_caption(text: str) -> dict:
    """What a caption states: {"background": name or None, "objects": [{category, colour,
    count, plural, place}], "relation": {subject, relation, object} (categories) or None}.

    `count` is the exact number when the caption gives one ("a", "two"), else None with
    `plural` true ("some cows", "a herd of cows"); `colour` is read before the noun or after it
    ("a bus that is red") and is None when not stated; `place` is
    "sky" or the background's name (None when the caption does not say). Relations come back as
    stored in the ground truth: "next to", "in front of" ("A behind B" is B in front of A), and
    "above" (subject in the sky over the object).
    """
    lx = _lex(text)
    objects: list[dict] = []
    pending: list[int] = []          # groups whose place is not known yet
    background: str | None = None
    leading: str | None = None       # a place stated before any group ("on the beach there are ...")
    relation: dict | None = None
    open_rel: tuple[str, int] | None = None
    for i, (kind, value) in enumerate(lx):
        if kind == "noun":
            value, plural_form = value
            colour, count, plural, j = None, None, False, i - 1
            while j >= 0 and lx[j][0] in ("colour", "num", "vague", "collective"):
                k, v = lx[j]
                if k == "colour" and colour is None:
                    colour = v
                elif k == "num" and count is None and not plural:
                    count = v
                elif k in ("vague", "collective"):
                    plural, count = True, None
                j -= 1
            if count is not None:
                plural = count > 1
            elif not plural:   # a bare noun: its form tells ("cows"), "sheep" does not
                count = 1 if plural_form is False else None
                plural = bool(plural_form)
            if colour is None:   # "a bus that is red", "two cows which are brown"
                colour = _colour_after(lx, i + 1)
            objects.append({"category": value, "colour": colour, "count": count, "plural": plural,
                            "place": None})
            new = len(objects) - 1
            pending.append(new)
            if open_rel is not None:
                r, prev = open_rel
                a, b = objects[prev]["category"], value
                if r == "next to":
                    relation = {"subject": a, "relation": "next to", "object": b}
                elif r == "in front of":
                    relation = {"subject": a, "relation": "in front of", "object": b}
                elif r == "behind":
                    relation = {"subject": b, "relation": "in front of", "object": a}
                elif r == "over":
                    relation = {"subject": a, "relation": "above", "object": b}
                    _set_place(objects, pending, [prev], "sky")
                else:  # under
                    relation = {"subject": b, "relation": "above", "object": a}
                    _set_place(objects, pending, [new], "sky")
                open_rel = None
        elif kind == "rel":
            target = _next_target(lx, i + 1)
            if value in ("over", "under") and target == "ground":
                if value == "over":   # "flying over the lake": what flies is in the sky
                    _set_place(objects, pending, list(pending), "sky")
                    if not objects:
                        leading = "sky"
                open_rel = None
            elif objects and target == "noun":
                open_rel = (value, len(objects) - 1)
        elif kind == "sky":
            if objects:
                _set_place(objects, pending, list(pending), "sky")
            else:
                leading = "sky"
        elif kind == "ground":
            background = value
            if _prev_rel(lx, i) in ("over", "under"):
                continue
            if objects:
                _set_place(objects, pending, list(pending), value)
            else:
                leading = value
    for k in list(pending):
        objects[k]["place"] = leading if leading is not None else background
    return {"background": background, "objects": objects, "relation": relation}


def _colour_after(lx: list[tuple], i: int) -> str | None:
    words = [v if k == "word" else None for k, v in lx[i:i + 2]]
    if (len(words) == 2 and words[0] in ("that", "which") and words[1] in ("is", "are")
            and i + 2 < len(lx) and lx[i + 2][0] == "colour"):
        return lx[i + 2][1]
    return None


def _prev_rel(lx: list[tuple], i: int) -> str | None:
    """The relation word right before a place ("over a snowy field"), if any."""
    for j in range(i - 1, -1, -1):
        if lx[j][0] not in ("word", "num"):
            return lx[j][1] if lx[j][0] == "rel" else None
    return None


def _next_target(lx: list[tuple], i: int) -> str | None:
    for kind, _ in lx[i:]:
        if kind in ("noun", "ground", "sky"):
            return kind
    return None


def _set_place(objects: list[dict], pending: list[int], which: list[int], place: str) -> None:
    for k in which:
        objects[k]["place"] = place
        if k in pending:
            pending.remove(k)


def caption_matches(parsed: dict, truth: dict) -> list[str]:
    """Where a parsed caption disagrees with a scene's truth (empty: it is all true and complete).

    Every group must be named once with its colour and place; a stated count must be exact and
    a vague plural must mean two or more; a stated relation must hold (next to either way).
    """
    errors = []
    groups = {g["category"]: g for g in truth["groups"]}
    if parsed["background"] != truth["background"]:
        errors.append(f"background {parsed['background']} != {truth['background']}")
    cats = [o["category"] for o in parsed["objects"]]
    if sorted(cats) != sorted(groups):
        errors.append(f"objects {cats} != {sorted(groups)}")
    for o in parsed["objects"]:
        g = groups.get(o["category"])
        if g is None:
            continue
        if o["colour"] != g["colour"]:
            errors.append(f"{o['category']} colour {o['colour']} != {g['colour']}")
        if o["place"] != g["place"]:
            errors.append(f"{o['category']} place {o['place']} != {g['place']}")
        if o["count"] is not None and o["count"] != g["count"]:
            errors.append(f"{o['category']} count {o['count']} != {g['count']}")
        if o["count"] is None and not (o["plural"] and g["count"] >= 2):
            errors.append(f"{o['category']} vague count but {g['count']}")
    rel = parsed["relation"]
    if rel is not None:
        t = truth.get("relation")
        if t is None:
            errors.append(f"relation {rel} stated, none in the scene")
        else:
            names = [g["category"] for g in truth["groups"]]
            ts, to = names[t["subject"]], names[t["object"]]
            same = (rel["relation"] == t["relation"] and
                    ((rel["subject"], rel["object"]) == (ts, to) or
                     (t["relation"] == "next to" and (rel["subject"], rel["object"]) == (to, ts))))
            if not same:
                errors.append(f"relation {rel} != {ts} {t['relation']} {to}")
    return errors


assert set(NOUNS) == set(CATEGORY_NAMES) and set(GROUND_PHRASES) == set(BACKGROUNDS)
