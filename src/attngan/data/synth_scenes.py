"""SynthScenes: a procedurally rendered multi-object scene data set in MS-COCO 2014's layout.

The COCO half of the paper at CPU size: scenes of COCO categories (bus, cow, kite, stop sign, ...)
in a colour, a number (1-4), on the ground of a background (street, grass, lake, beach, snow) or in
its sky, with five COCO-style captions each. Written as COCO 2014 is downloaded plus the AttnGAN
release's split lists, so the COCO loader reads it with nothing special:

    train2014/COCO_train2014_%012d.jpg, val2014/COCO_val2014_%012d.jpg,
    annotations/captions_{train,val}2014.json, annotations/instances_{train,val}2014.json,
    train/filenames.pickle, test/filenames.pickle (val2014 is the test split, as in AttnGAN),

and beside them `synth_scenes.json` (exact ground truth of every image) and `masks/` (per-pixel
labels: 0 sky, 1 ground, 2 + k object k of the image's `objects`).

Held-out compositions: the (object, place) and (colour, object) pairs in HELD_OUT never occur in
the training split; the test split is half *novel* images (each holds one held-out pair) and half
*seen* images (new images whose every pair occurs in training). Every image draws its scene from a
generator seeded by (seed, image index), so the output is byte-identical for a seed whatever the
number of workers.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attngan.data.convert import rendered_as
from attngan.data.scene_captions import (  # noqa: F401 - re-exported
    NOUNS, VOCABULARY, _pick, caption_matches, make_captions, parse_scene_caption,
)
from attngan.data.scene_render import (  # noqa: F401 - re-exported
    BACKGROUNDS, CATEGORIES, CATEGORY_NAMES, COLOUR_RGB, COLOURS, EXTENT, FACES, MASK_FIRST_OBJECT,
    MASK_GROUND, MASK_SKY, PLACES, UNIT, ObjectSpec, render_scene, sky_floor,
)
from attngan.data.staging import read_manifest, render_in_order, write_whole_folder
from attngan.errors import AttnGANError, check_seed

GENERATOR_VERSION = 1
MANIFEST = "synth_scenes.json"
CAPTIONS_PER_IMAGE = 5               # as COCO
DEFAULT_IMAGES = 5000                # test: 500 seen + 500 novel images
TEST_SHARE = 0.2                     # of the images; half of them novel
MIN_IMAGES, MAX_IMAGES = 10, 200_000
MIN_SIZE, MAX_SIZE = 64, 1024
MAX_WORKERS = 64

# Compositions that never occur in training. (object, place): the object on that ground or in
# the sky; (colour, object): an object in a colour it never has in training. Each one's parts do
# occur in training (buses, lakes, blue things, cows), only not together.
HELD_OUT_PLACES: tuple[tuple[str, str], ...] = (
    ("bus", "lake"), ("stop sign", "sky"), ("cow", "street"), ("cow", "beach"), ("boat", "grass"),
)
HELD_OUT_COLOURS: tuple[tuple[str, str], ...] = (
    ("blue", "cow"), ("pink", "bus"), ("green", "airplane"), ("yellow", "sheep"),
)
HELD_OUT: tuple[tuple[str, tuple[str, str]], ...] = (
    tuple(("place", p) for p in HELD_OUT_PLACES) + tuple(("colour", p) for p in HELD_OUT_COLOURS))

# Where each category belongs; a background makes its natural categories likelier, and a
# naturally flying category is likelier in the sky, but any object may be anywhere.
NATURAL: dict[str, tuple[str, ...]] = {
    "car": ("street",), "bus": ("street",), "boat": ("lake",), "airplane": ("sky",),
    "kite": ("sky",), "stop sign": ("street",), "fire hydrant": ("street",), "clock": ("street",),
    "cow": ("grass",), "sheep": ("grass", "snow"), "umbrella": ("beach",), "banana": ("beach", "grass"),
}
COUNT_P = (0.45, 0.25, 0.18, 0.12)   # 1, 2, 3, 4 objects in a group
TWO_GROUPS_P = 0.45
MAX_OBJECTS = 6


def is_held_out(category: str, colour: str, place: str) -> tuple[str, tuple[str, str]] | None:
    if (category, place) in HELD_OUT_PLACES:
        return ("place", (category, place))
    if (colour, category) in HELD_OUT_COLOURS:
        return ("colour", (colour, category))
    return None


# ---------------------------------------------------------------------------------------------
# Scenes: what is in an image (no pixels yet).

def _sky_p(category: str) -> float:
    return 0.7 if "sky" in NATURAL[category] else 0.12


def _group(rng: np.random.Generator, background: str, exclude: set[str], seen_only: bool,
           max_count: int) -> dict:
    cats = [c for c in CATEGORY_NAMES if c not in exclude]
    for _ in range(1000):
        w = [3.0 if background in NATURAL[c] or "sky" in NATURAL[c] else 1.0 for c in cats]
        cat = _pick(rng, cats, w)
        place = "sky" if rng.random() < _sky_p(cat) else background
        colour = _pick(rng, COLOURS)
        if not seen_only or is_held_out(cat, colour, place) is None:
            break
    count = 1 + int(rng.choice(max_count, p=np.asarray(COUNT_P[:max_count]) / sum(COUNT_P[:max_count])))
    return {"category": cat, "colour": colour, "count": count, "place": place}


def sample_scene(rng: np.random.Generator, composition: str, held_out: int = 0) -> dict:
    """A scene's content: background, groups (category, colour, count, place), relation.

    `composition` "seen" avoids every HELD_OUT pair; "novel" puts HELD_OUT[held_out] in the
    first group (and keeps any second group seen).
    """
    if composition not in ("seen", "novel"):
        raise ValueError(f"composition must be 'seen' or 'novel', not {composition!r}")
    background = _pick(rng, BACKGROUNDS)
    held = None
    if composition == "novel":
        held = HELD_OUT[held_out % len(HELD_OUT)]
        kind, (a, b) = held
        if kind == "place":
            cat, place = a, b
            if place != "sky":
                background = place
            colour = _pick(rng, [c for c in COLOURS if (c, cat) not in HELD_OUT_COLOURS])
        else:
            colour, cat = a, b
            for _ in range(1000):   # only the colour is new: the place must be a trained one
                place = "sky" if rng.random() < _sky_p(cat) else background
                if (cat, place) not in HELD_OUT_PLACES:
                    break
                background = _pick(rng, BACKGROUNDS)
        count = 1 + int(rng.choice(4, p=COUNT_P))
        first = {"category": cat, "colour": colour, "count": count, "place": place}
    else:
        first = _group(rng, background, set(), True, 4)
    groups = [first]
    if rng.random() < TWO_GROUPS_P:
        groups.append(_group(rng, background, {first["category"]}, True,
                             min(4, MAX_OBJECTS - first["count"])))
    relation = None
    if len(groups) == 2:
        sky = [g["place"] == "sky" for g in groups]
        if sky[0] != sky[1]:
            relation = {"subject": 0 if sky[0] else 1, "relation": "above", "object": 1 if sky[0] else 0}
        elif sky[0]:
            relation = {"subject": 0, "relation": "next to", "object": 1}
        else:
            s = int(rng.integers(2))
            relation = {"subject": s, "relation": _pick(rng, ("next to", "in front of")), "object": 1 - s}
    return {"background": background, "groups": groups, "relation": relation,
            "held_out": None if held is None else {"kind": held[0], "pair": list(held[1])}}


def _row(rng: np.random.Generator, group: dict, x0: float, x1: float,
         unit: float) -> tuple[list[float], float]:
    """Centres of the group's objects side by side in [x0, x1], and the unit that fits them."""
    n, (w, _) = group["count"], EXTENT[group["category"]]
    gap = 0.12
    total = n * w + (n - 1) * gap
    unit = min(unit, (x1 - x0) / total)
    spare = max(0.0, (x1 - x0) - total * unit)
    # The spare width goes into the gaps at random; sorted offsets keep the objects apart.
    cuts = np.sort(rng.uniform(0, spare, n))
    centres = [float(x0 + cuts[k] + k * (w + gap) * unit + w * unit / 2) for k in range(n)]
    return centres, unit


def layout_scene(scene: dict, size: int, rng: np.random.Generator) -> tuple[float, list[ObjectSpec], list[int]]:
    """(horizon, objects in drawing order, group index of each object)."""
    horizon = float(rng.uniform(0.36, 0.46) * size)
    groups, rel = scene["groups"], scene["relation"]
    floor = sky_floor(scene["background"], horizon, size)
    ground_depth = {}
    spans: dict[int, tuple[float, float]] = {i: (0.03 * size, 0.97 * size) for i in range(len(groups))}
    if rel is not None and rel["relation"] == "next to":
        left = int(rng.integers(2))
        spans[left], spans[1 - left] = (0.03 * size, 0.5 * size), (0.5 * size, 0.97 * size)
    if rel is not None and rel["relation"] == "in front of":
        ground_depth[rel["subject"]] = float(rng.uniform(0.8, 1.0))
        ground_depth[rel["object"]] = float(rng.uniform(0.0, 0.2))
    for _ in range(30):   # redraw the positions until nothing hides most of another object
        objects: list[tuple[ObjectSpec, int]] = []
        for gi, g in enumerate(groups):
            cat = g["category"]
            w, h = EXTENT[cat]
            facing = int(_pick(rng, (-1, 1))) if cat in FACES else 1
            x0, x1 = spans[gi]
            if g["place"] == "sky":
                unit = UNIT[cat] * size * float(rng.uniform(0.7, 0.95))
                unit = min(unit, (floor - 0.04 * size) / h)
                centres, unit = _row(rng, g, x0, x1, unit)
                for cx in centres:
                    base = float(rng.uniform(0.04 * size + h * unit, floor))
                    objects.append((ObjectSpec(cat, g["colour"], cx, base, unit, facing), gi))
            else:
                t = ground_depth.get(gi, float(rng.uniform(0.3, 0.95)))
                base0 = horizon + (0.2 + 0.75 * t) * (0.97 * size - horizon)
                unit = UNIT[cat] * size * (0.6 + 0.4 * t) * float(rng.uniform(0.85, 1.05))
                unit = min(unit, (base0 - 0.03 * size) / h)
                centres, unit = _row(rng, g, x0, x1, unit)
                jitter = 0.04 * (0.97 * size - horizon)
                for cx in centres:
                    base = float(np.clip(base0 + rng.uniform(-jitter, jitter), horizon + 1, 0.97 * size))
                    objects.append((ObjectSpec(cat, g["colour"], cx, base, unit, facing), gi))
        if _visible_enough([o for o, _ in objects]):
            break
    # Sky first, then the ground from far to near.
    order = sorted(range(len(objects)), key=lambda k: (objects[k][0].base_y >= horizon,
                                                        objects[k][0].base_y, k))
    return horizon, [objects[k][0] for k in order], [objects[k][1] for k in order]


def _visible_enough(objects: list[ObjectSpec], keep: float = 0.6) -> bool:
    """No object's box is more than 1 - `keep` covered by the boxes of objects nearer than it."""
    boxes = [o.box() for o in objects]
    for i, (a, oa) in enumerate(zip(boxes, objects)):
        area = (a[2] - a[0]) * (a[3] - a[1])
        covered = 0.0
        for j, (b, ob) in enumerate(zip(boxes, objects)):
            if j == i or ob.base_y <= oa.base_y:
                continue
            iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
            if iw > 0 and ih > 0:
                covered += iw * ih
        if covered > (1 - keep) * area:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Rendering one image (runs in worker processes).

_W: dict[str, Any] = {}


def _init_worker(plan: list[dict], size: int, seed: int, root: str) -> None:
    _W.update(plan=plan, size=size, seed=seed, root=Path(root))


def _mask_palette() -> list[int]:
    rng = np.random.default_rng(11)   # a viewable palette; the stored values are the labels
    pal = [150, 190, 235, 120, 100, 70] + [int(v) for v in rng.integers(40, 255, 3 * 254)]
    return pal[:768]


_PALETTE = _mask_palette()


def _render_job(index: int) -> dict:
    plan, size, seed, root = _W["plan"], _W["size"], _W["seed"], _W["root"]
    item = plan[index]
    r_scene, *rngs = (np.random.default_rng(s) for s in
                      np.random.SeedSequence(seed, spawn_key=(1, index)).spawn(4))
    scene = sample_scene(r_scene, item["composition"], item["held_out"])
    out, truth = draw_scene(scene, size, *rngs)

    key, folder = item["key"], item["folder"]
    Image.fromarray(out.image).save(root / folder / f"{key}.jpg", "JPEG", quality=95, subsampling=0)
    mask = Image.frombytes("P", (size, size), out.labels.tobytes())
    mask.putpalette(_PALETTE)
    mask.save(root / "masks" / f"{key}.png", "PNG")
    for o, polygons in zip(truth["objects"], out.polygons):
        o["segmentation"] = polygons
    truth = {"id": item["id"], "file_name": f"{folder}/{key}.jpg", "split": item["split"],
             "composition": item["composition"], **truth, "mask": f"masks/{key}.png"}
    return {"key": key, "truth": truth}


def draw_scene(scene: dict, size: int, r_layout: np.random.Generator, r_render: np.random.Generator,
               r_text: np.random.Generator) -> tuple:
    """(RenderedScene, truth) of a scene's content: placed, drawn and captioned.

    `scene` is what sample_scene returns, or one written by hand for a known-answer test:
    {"background", "groups": [{category, colour, count, place}], "relation"} (relation as
    sample_scene makes it; "held_out" optional). The truth holds what synth_scenes.json holds
    per image apart from its file, id, split and composition.
    """
    horizon, objects, group_of = layout_scene(scene, size, r_layout)
    out = render_scene(scene["background"], horizon, objects, size, r_render)
    captions = make_captions(scene, r_text, CAPTIONS_PER_IMAGE)
    groups = [dict(g, category_id=CATEGORIES[g["category"]][0], objects=[]) for g in scene["groups"]]
    objs = []
    for k, (o, gi) in enumerate(zip(objects, group_of)):
        groups[gi]["objects"].append(k)
        objs.append({
            "group": gi, "category": o.category, "category_id": CATEGORIES[o.category][0],
            "colour": o.colour, "place": scene["groups"][gi]["place"],
            "bbox": [float(v) for v in out.bboxes[k]], "area": out.areas[k],
            "visible": round(out.areas[k] / max(1, out.drawn[k]), 3),
            "mask_value": MASK_FIRST_OBJECT + k,
            "facing": "right" if o.facing > 0 else "left",
        })
    truth = {"held_out": scene.get("held_out"), "background": scene["background"],
             "horizon": round(horizon, 2), "groups": groups, "relation": scene.get("relation"),
             "objects": objs, "captions": captions}
    return out, truth


# ---------------------------------------------------------------------------------------------
# The data set.

def split_counts(images: int) -> dict[str, int]:
    """Images per part: train, seen test, novel test (the test split is half seen, half novel)."""
    test = max(2, int(round(images * TEST_SHARE)))
    return {"train": images - test, "seen": test - test // 2, "novel": test // 2}


def make_plan(images: int) -> list[dict]:
    """Per image index: split, composition (seen/novel), the held-out pair it shows, id and key.

    Training images come first; test images alternate seen and novel, and the novel ones cycle
    through HELD_OUT so every held-out pair gets its share."""
    counts = split_counts(images)
    plan = []
    for i in range(images):
        image_id = i + 1
        if i < counts["train"]:
            plan.append({"split": "train", "composition": "seen", "held_out": 0, "id": image_id,
                         "folder": "train2014", "key": f"COCO_train2014_{image_id:012d}"})
        else:
            j = i - counts["train"]
            novel = j % 2 == 1
            plan.append({"split": "test", "composition": "novel" if novel else "seen",
                         "held_out": j // 2 if novel else 0, "id": image_id, "folder": "val2014",
                         "key": f"COCO_val2014_{image_id:012d}"})
    return plan


def _check_args(images: int, size: int, seed: int, workers: int) -> None:
    if images < MIN_IMAGES:
        raise AttnGANError(f"--images must be at least {MIN_IMAGES} (got {images}): the train, "
                           "seen and novel parts each need images")
    if images > MAX_IMAGES:
        raise AttnGANError(f"--images must be at most {MAX_IMAGES:,} (got {images:,})")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise AttnGANError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {size})")
    check_seed(seed, "--seed")
    if not 1 <= workers <= MAX_WORKERS:
        raise AttnGANError(f"--workers must be between 1 and {MAX_WORKERS} (got {workers})")


def generate_synth_scenes(out: str | os.PathLike, images: int = DEFAULT_IMAGES, size: int = 256,
                          seed: int = 0, workers: int = 1, overwrite: bool = False,
                          progress: bool = True) -> Path:
    """Render SynthScenes into `out` (COCO 2014 layout + synth_scenes.json) and return the folder.

    Written whole (attngan.data.staging): an error or an interrupt never leaves a partial data
    set. `overwrite` replaces an earlier SynthScenes folder; any other non-empty folder is refused.
    """
    _check_args(images, size, seed, workers)
    return write_whole_folder(out, lambda tmp: _write(tmp, images, size, seed, workers, progress),
                              overwrite=overwrite, marker=MANIFEST, what="SynthScenes")


def _write(root: Path, images: int, size: int, seed: int, workers: int, progress: bool) -> None:
    plan = make_plan(images)
    for sub in ("train2014", "val2014", "masks", "annotations", "train", "test"):
        (root / sub).mkdir()
    records = render_in_order(_render_job, images, workers, _init_worker, (plan, size, seed, str(root)),
                              "synth-scenes", progress, chunksize=8)
    _write_index(root, records, size, seed)


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")), encoding="utf-8")


def coco_categories() -> list[dict]:
    return [{"id": cid, "name": name, "supercategory": sup}
            for name, (cid, sup) in sorted(CATEGORIES.items(), key=lambda kv: kv[1][0])]


def _write_index(root: Path, records: list[dict], size: int, seed: int) -> None:
    info = {"description": "SynthScenes: procedurally rendered scenes in MS-COCO 2014's layout",
            "version": str(GENERATOR_VERSION), "year": 2014, "contributor": "attngan",
            "url": "", "date_created": ""}
    caption_id = annotation_id = 0
    for split, coco in (("train", "train2014"), ("test", "val2014")):
        rows = [r for r in records if r["truth"]["split"] == split]
        imgs = [{"id": r["truth"]["id"], "file_name": f"{r['key']}.jpg", "width": size,
                 "height": size, "license": 0, "coco_url": "", "flickr_url": "",
                 "date_captured": ""} for r in rows]
        caps, anns = [], []
        for r in rows:
            t = r["truth"]
            for c in t["captions"]:
                caption_id += 1
                caps.append({"id": caption_id, "image_id": t["id"], "caption": c})
            for o in t["objects"]:
                annotation_id += 1
                o["annotation_id"] = annotation_id
                anns.append({"id": annotation_id, "image_id": t["id"], "category_id": o["category_id"],
                             "bbox": o["bbox"], "area": float(o["area"]), "iscrowd": 0,
                             "segmentation": o.pop("segmentation")})
        licenses = [{"id": 0, "name": "generated", "url": ""}]
        _dump(root / "annotations" / f"captions_{coco}.json",
              {"info": info, "licenses": licenses, "images": imgs, "annotations": caps})
        _dump(root / "annotations" / f"instances_{coco}.json",
              {"info": info, "licenses": licenses, "images": imgs, "annotations": anns,
               "categories": coco_categories()})
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump([r["key"] for r in rows], f, protocol=2)

    # The original's gen_example reads example_filenames.txt and the caption files it names:
    # one prompt per held-out composition.
    examples = held_out_prompts()
    (root / "example_filenames.txt").write_text("example_captions\n", encoding="utf-8")
    (root / "example_captions.txt").write_text("\n".join(examples) + "\n", encoding="utf-8")

    by_kind = {k: sum(r["truth"]["split"] == "test" and r["truth"]["composition"] == k for r in records)
               for k in ("seen", "novel")}
    manifest = {
        "generator": "attngan.data.synth_scenes",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "counts": {"images": len(records),
                   "train_images": sum(r["truth"]["split"] == "train" for r in records),
                   "test_images": sum(r["truth"]["split"] == "test" for r in records),
                   "test_seen": by_kind["seen"], "test_novel": by_kind["novel"],
                   "objects": annotation_id, "captions_per_image": CAPTIONS_PER_IMAGE},
        "categories": coco_categories(),
        "colours": {c: list(COLOUR_RGB[c]) for c in COLOURS},
        "backgrounds": list(BACKGROUNDS),
        "places": list(PLACES),
        "relations": ["next to", "in front of", "above"],
        "held_out": {"places": [list(p) for p in HELD_OUT_PLACES],
                     "colours": [list(p) for p in HELD_OUT_COLOURS]},
        "mask_values": {str(MASK_SKY): "sky", str(MASK_GROUND): "ground",
                        f"{MASK_FIRST_OBJECT}+k": "objects[k]"},
        "vocabulary": list(VOCABULARY),
        "example_prompts": examples,
        "images": {r["key"]: r["truth"] for r in records},
    }
    _dump(root / MANIFEST, manifest)


def held_out_prompts() -> list[str]:
    """One prompt per held-out composition, in HELD_OUT's order (example_captions.txt)."""
    return [_example_prompt(h) for h in HELD_OUT]


def _example_prompt(held: tuple[str, tuple[str, str]]) -> str:
    kind, (a, b) = held
    if kind == "place":
        cat, place = a, b
        colour = next(c for c in ("red", "yellow", "white") if (c, cat) not in HELD_OUT_COLOURS)
        where = {"sky": "flying in the sky", "lake": "floating on the lake",
                 "street": "walking down the street", "beach": "standing on the beach",
                 "grass": "sitting on the grass", "snow": "standing in the snow"}[place]
        noun = NOUNS[cat][0]
        return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {noun} {where}"
    colour, cat = a, b
    where = {"airplane": "flying in the sky", "cow": "grazing on the grass",
             "sheep": "standing in the snow", "bus": "driving down the street"}.get(cat, "on the grass")
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {NOUNS[cat][0]} {where}"


def synth_scenes_as(fmt: str, out: str | os.PathLike, *, images: int = DEFAULT_IMAGES, size: int = 256,
                    seed: int = 0, workers: int = 1, overwrite: bool = False, progress: bool = True,
                    per_shard: int = 1000) -> Path:
    """SynthScenes as an image folder (metadata.jsonl) or as WebDataset shards: rendered in COCO's
    layout in a temporary folder, then converted (same images, captions and splits; the ground
    truth stays with the COCO layout)."""
    _check_args(images, size, seed, workers)
    render = lambda folder, replace: generate_synth_scenes(  # noqa: E731
        folder, images=images, size=size, seed=seed, workers=workers, overwrite=replace,
        progress=progress)
    return rendered_as(fmt, out, render, native="coco", source="SynthScenes",
                       overwrite=overwrite, progress=progress, per_shard=per_shard)


# ---------------------------------------------------------------------------------------------
# Reading it back.

def load_manifest(root: str | os.PathLike) -> dict:
    """The ground truth of a SynthScenes folder; `manifest["root"]` is set to the folder."""
    return read_manifest(root, MANIFEST, "SynthScenes")


def object_mask(root_or_manifest: str | os.PathLike | dict, key: str, index: int | None = None,
                size: int | None = None) -> np.ndarray:
    """Boolean mask (H x W) of object `index` of image `key` (every object when None)."""
    manifest = root_or_manifest if isinstance(root_or_manifest, dict) else load_manifest(root_or_manifest)
    if key not in manifest["images"]:
        raise AttnGANError(f"no image '{key}' in the SynthScenes manifest")
    labels = Image.open(Path(manifest["root"]) / manifest["images"][key]["mask"])
    if size is not None:
        labels = labels.resize((size, size), Image.NEAREST)
    arr = np.asarray(labels)
    return arr >= MASK_FIRST_OBJECT if index is None else arr == MASK_FIRST_OBJECT + index
