"""SynthBirds: a procedurally rendered bird data set with CUB-style captions, in CUB's layout.

The real CUB-200-2011 cannot be downloaded here, so the project renders a stand-in that the same
loader reads: `CUB_200_2011/` (images, bounding boxes, attributes, parts), `text/` (10 captions
per image), `train|test/filenames.pickle`, plus `synth_birds.json` (exact ground truth: part
colours, bill, pose, and part masks under `masks/`) for metrics such as colour binding and
attention localisation.

Each of C species is a prototype of part colours and shapes; every image draws its pose, shades
and background from a generator seeded by (seed, image index), so the output is byte-identical for
a seed whatever the number of workers. Train and test classes are disjoint (3/4 train, like the
StackGAN/AttnGAN CUB split).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attngan.data.synth_captions import (  # noqa: F401 - re-exported
    BILL_LENGTHS, BILL_SHAPES, COLOUR_PARTS, COLOURS, KEY_PARTS, SIZES, caption_attributes,
    make_captions,
)
from attngan.data.synth_render import (  # noqa: F401 - re-exported
    BILL_COLOURS, COLOUR_RGB, CUB_PARTS, EYE_COLOURS, EYERING_COLOURS, KEY_COLOURS, LABEL,
    LEG_COLOURS, MASK_LABELS, SHADE_TOLERANCE, SHEEN_COLOURS, Species, render_bird,
)
from attngan.data.staging import read_manifest, render_in_order, write_whole_folder
from attngan.errors import AttnGANError

GENERATOR_VERSION = 1
MANIFEST = "synth_birds.json"
CAPTIONS_PER_IMAGE = 10
CUB_IMAGES = 11788                   # CUB-200-2011's size, the default
MAX_CLASSES = 999                    # CUB-style 3-digit class folders
SPECIES_PER_IMAGE = 0.075            # the default species count: 7.5% of the images (884 for 11,788)
PART_NAMES = MASK_LABELS[2:]         # the bird's parts that have a mask
MASK_GROUPS = {
    "head": ("nape", "throat", "crown", "eyering", "eye"),
    "body": ("belly", "breast", "back"),
    "bird": PART_NAMES,
}
_MASK_ALIASES = {"beak": "bill", "forehead": "crown", "legs": "leg", "wings": "wing",
                 "left wing": "wing", "right wing": "wing", "left eye": "eye", "right eye": "eye",
                 "left leg": "leg", "right leg": "leg"}
# Wing/belly pairs the project's prompts ask about; each split gets at least one species of each.
MOTIVATING_PAIRS = (("black", "white"), ("blue", "red"), ("red", "yellow"))
MOTIVATING_PROMPTS = (
    "a bird with wings that are black and a white belly",
    "a bird with wings that are blue and a red belly",
    "a bird with wings that are red and a yellow belly",
)

# CUB-style attribute vocabulary: (attribute name, predicate on an image's truth).
_CUB_BILL_SHAPE = {"pointed": "dagger", "hooked": "hooked", "cone": "cone",
                   "curved": "curved_(up_or_down)"}
_CUB_BILL_LENGTH = {"short": "shorter_than_head", "medium": "about_the_same_as_head",
                    "long": "longer_than_head"}
_CUB_SIZE = {"small": "small_(5_-_9_in)", "medium": "medium_(9_-_16_in)",
             "large": "large_(16_-_32_in)"}
_CUB_TAIL = {"square": "squared_tail", "rounded": "rounded_tail", "notched": "notched_tail",
             "pointed": "pointed_tail"}
_CUB_COLOUR_PARTS = (("wing", "wing"), ("back", "back"), ("upper_tail", "tail"),
                     ("breast", "breast"), ("throat", "throat"), ("eye", "eye"),
                     ("forehead", "crown"), ("nape", "nape"), ("belly", "belly"), ("leg", "leg"),
                     ("bill", "bill"), ("crown", "crown"))


def _attribute_names() -> list[str]:
    names = [f"has_bill_shape::{v}" for v in _CUB_BILL_SHAPE.values()]
    for cub_part, _ in _CUB_COLOUR_PARTS:
        names += [f"has_{cub_part}_color::{c}" for c in COLOURS]
    names += [f"has_bill_length::{v}" for v in _CUB_BILL_LENGTH.values()]
    names += [f"has_size::{v}" for v in _CUB_SIZE.values()]
    names += [f"has_tail_shape::{v}" for v in _CUB_TAIL.values()]
    names += ["has_belly_pattern::solid", "has_belly_pattern::spotted", "has_head_pattern::eyering"]
    return names


ATTRIBUTES = _attribute_names()


def _present_attributes(sp: Species) -> set[str]:
    out = {f"has_bill_shape::{_CUB_BILL_SHAPE[sp.bill_shape]}",
           f"has_bill_length::{_CUB_BILL_LENGTH[sp.bill_length]}",
           f"has_size::{_CUB_SIZE[sp.size]}", f"has_tail_shape::{_CUB_TAIL[sp.tail_shape]}",
           "has_belly_pattern::" + ("spotted" if sp.belly_pattern == "speckled" else "solid")}
    for cub_part, part in _CUB_COLOUR_PARTS:
        out.add(f"has_{cub_part}_color::{sp.parts[part]}")
    if "eyering" in sp.parts:
        out.add("has_head_pattern::eyering")
    return out


# ---------------------------------------------------------------------------------------------
# Species.

_ADJECTIVES = {
    "black": ("Black", "Sooty", "Ebony", "Jet", "Raven"),
    "white": ("White", "Snowy", "Ivory", "Pale", "Frost"),
    "grey": ("Grey", "Ashy", "Slate", "Silver", "Smoky"),
    "brown": ("Brown", "Umber", "Dusky", "Cocoa", "Chestnut"),
    "yellow": ("Yellow", "Golden", "Lemon", "Citrine", "Sulphur"),
    "green": ("Green", "Emerald", "Jade", "Verdant", "Leafy"),
    "blue": ("Blue", "Azure", "Cobalt", "Sapphire", "Cerulean"),
    "purple": ("Purple", "Violet", "Plum", "Amethyst", "Mulberry"),
    "pink": ("Pink", "Rosy", "Coral", "Blush", "Flamingo"),
    "orange": ("Orange", "Tangerine", "Amber", "Flame", "Apricot"),
    "red": ("Red", "Scarlet", "Crimson", "Ruby", "Vermilion"),
}
_NOUNS = {
    "cone": ("Finch", "Grosbeak", "Bunting", "Sparrow", "Seedeater", "Junco", "Canary"),
    "pointed": ("Warbler", "Vireo", "Wren", "Flycatcher", "Tanager", "Oriole", "Thrush"),
    "hooked": ("Shrike", "Kestrel", "Falconet", "Petrel", "Kite", "Butcherbird", "Merlin"),
    "curved": ("Creeper", "Thrasher", "Sunbird", "Honeycreeper", "Curlew", "Sicklebill", "Ibis"),
}


def _split_classes(classes: int, rng: np.random.Generator) -> list[str]:
    n_test = max(1, int(round(classes / 4)))
    test = set(rng.permutation(classes)[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(classes)]


def _wing_belly_pairs(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (wing, belly) pairs that cover the distinct pairs evenly, motivating pairs first."""
    pairs = [(w, b) for w in KEY_COLOURS for b in KEY_COLOURS if w != b]
    out = list(MOTIVATING_PAIRS)
    rest = [p for p in pairs if p not in MOTIVATING_PAIRS]
    while len(out) < n:
        out += [rest[i] for i in rng.permutation(len(rest))]
        rest = pairs
    return out[:n]


def make_species(classes: int, seed: int) -> list[Species]:
    """The C species prototypes for a seed: part colours, bill, size and shapes, split, name."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    splits = _split_classes(classes, rng)
    pairs: dict[int, tuple[str, str]] = {}
    for split in ("train", "test"):
        idx = [i for i in range(classes) if splits[i] == split]
        pairs.update(zip(idx, _wing_belly_pairs(len(idx), rng)))
    pick = lambda seq: str(seq[int(rng.integers(len(seq)))])  # noqa: E731
    used: set[str] = set()
    out = []
    for i in range(classes):
        wing, belly = pairs[i]
        crown = pick(KEY_COLOURS)
        breast = belly if rng.random() < 0.45 else pick(COLOURS)
        throat = breast if rng.random() < 0.4 else pick(COLOURS)
        back = wing if rng.random() < 0.5 else pick(COLOURS)
        r = rng.random()
        nape = crown if r < 0.35 else back if r < 0.6 else pick(COLOURS)
        tail = wing if rng.random() < 0.5 else pick(COLOURS)
        # The bill must stand out against the head it is drawn on.
        bill = pick([c for c in BILL_COLOURS if c not in (crown, throat)])
        parts = {"wing": wing, "belly": belly, "crown": crown, "bill": bill, "breast": breast,
                 "back": back, "throat": throat, "tail": tail, "nape": nape,
                 "leg": pick(LEG_COLOURS), "eye": pick(EYE_COLOURS)}
        if rng.random() < 0.35:
            parts["eyering"] = pick([c for c in EYERING_COLOURS if c != crown])
        bill_shape, bill_length = pick(BILL_SHAPES), pick(BILL_LENGTHS)
        size = str(rng.choice(SIZES, p=[0.45, 0.35, 0.2]))
        sp = Species(
            class_id=i + 1, name="", split=splits[i], parts=parts, bill_shape=bill_shape,
            bill_length=bill_length, size=size, tail_shape=pick(("square", "rounded", "notched", "pointed")),
            belly_pattern="speckled" if rng.random() < 0.25 else "plain",
            tilt=round(float(rng.uniform(15, 35)), 2), wing_length=round(float(rng.uniform(0.95, 1.1)), 3),
            shade={p: round(float(rng.uniform(0.96, 1.04)), 3) for p in parts},
        )
        sp.name = _species_name(sp, rng, used)
        out.append(sp)
    return out


def _species_name(sp: Species, rng: np.random.Generator, used: set[str]) -> str:
    adjs = _ADJECTIVES[sp.parts["wing"]]
    nouns = _NOUNS[sp.bill_shape]
    for k in range(len(adjs) * len(nouns)):
        a = adjs[(int(rng.integers(len(adjs))) + k) % len(adjs)]
        n = nouns[(int(rng.integers(len(nouns))) + k // len(adjs)) % len(nouns)]
        name = f"Synth_{a}_{n}"
        if name not in used:
            break
    suffix = 2
    while name in used:  # more classes than names: number them
        name = f"Synth_{adjs[0]}_{nouns[0]}_{suffix}"
        suffix += 1
    used.add(name)
    return name


def class_folder(sp: Species) -> str:
    return f"{sp.class_id:03d}.{sp.name}"


# ---------------------------------------------------------------------------------------------
# Rendering one image (runs in worker processes).

_W: dict[str, Any] = {}


def _init_worker(species: list[Species], plan: list[tuple[int, str]], size: int, seed: int,
                 root: str) -> None:
    _W.update(species=species, plan=plan, size=size, seed=seed, root=Path(root))


def _mask_palette() -> list[int]:
    # A viewable palette; the stored values are the label indices.
    rng = np.random.default_rng(7)
    pal = [0, 0, 0, 140, 110, 80] + [int(v) for v in rng.integers(40, 255, 3 * (len(MASK_LABELS) - 2))]
    return pal + [0] * (768 - len(pal))


_PALETTE = _mask_palette()


def _render_job(index: int) -> dict:
    species, plan, size, seed, root = _W["species"], _W["plan"], _W["size"], _W["seed"], _W["root"]
    class_idx, key = plan[index]
    sp = species[class_idx]
    r_render, r_text = (np.random.default_rng(s) for s in
                        np.random.SeedSequence(seed, spawn_key=(1, index)).spawn(2))
    out = render_bird(sp, r_render, size)
    captions = make_captions(sp.truth(), r_text, CAPTIONS_PER_IMAGE)

    Image.fromarray(out.image).save(root / "CUB_200_2011" / "images" / f"{key}.jpg", "JPEG",
                                    quality=95, subsampling=0)
    mask = Image.frombytes("P", (size, size), out.labels.tobytes())
    mask.putpalette(_PALETTE)
    mask.save(root / "masks" / f"{key}.png", "PNG")
    (root / "text" / f"{key}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")

    image_id = index + 1
    present = _present_attributes(sp)
    attr_rows = "".join(f"{image_id} {a} {int(name in present)} 4 0.000\n"
                        for a, name in enumerate(ATTRIBUTES, 1))
    part_rows = "".join(f"{image_id} {p} {x:.1f} {y:.1f} {v}\n"
                        for p, (x, y, v) in enumerate(out.part_locs, 1))
    return {"key": key, "bbox": out.bbox, "attr_rows": attr_rows, "part_rows": part_rows,
            "truth": {"id": image_id, "class_id": sp.class_id, "split": sp.split,
                      **sp.truth(), "pose": out.pose, "bbox": list(out.bbox),
                      "mask": f"masks/{key}.png"}}


# ---------------------------------------------------------------------------------------------
# The data set.

def default_classes(images: int) -> int:
    """The species count used when none is given: about 13 images per species, at most 999.

    CUB has 200 species of about 60 images, but a SynthBirds species is a fixed combination of
    part colours: with 150 training species a model can name the species and look its colours up
    instead of reading each part, and that does not carry over to unseen species. Measured with
    a supervised part-colour probe (the tiny DAMSM's CNN): 7,500 training images of 150 species
    gave 100% on training birds but 40% (crown) / 25% (breast) on unseen ones, against 68% / 44%
    with 562 training species and a third of the images (README, "SynthBirds").
    """
    return int(min(MAX_CLASSES, max(2, round(images * SPECIES_PER_IMAGE))))


def _check_args(images: int, classes: int, size: int, seed: int, workers: int) -> None:
    if images < 1:
        raise AttnGANError(f"--images must be at least 1 (got {images})")
    if classes < 2:
        raise AttnGANError(f"--classes must be at least 2 for a train/test split (got {classes})")
    if classes > MAX_CLASSES:
        raise AttnGANError(f"--classes must be at most {MAX_CLASSES} (CUB-style 3-digit ids; got {classes})")
    if images < classes:
        raise AttnGANError(f"--images ({images}) must be at least --classes ({classes}): "
                           "every class needs an image")
    if not 32 <= size <= 1024:
        raise AttnGANError(f"--size must be between 32 and 1024 pixels (got {size})")
    if seed < 0:
        raise AttnGANError(f"--seed must be >= 0 (got {seed})")
    if workers < 1:
        raise AttnGANError(f"--workers must be at least 1 (got {workers})")


def generate_synth_birds(out: str | os.PathLike, images: int = CUB_IMAGES, classes: int | None = None,
                         size: int = 256, seed: int = 0, workers: int = 1, overwrite: bool = False,
                         progress: bool = True) -> Path:
    """Render SynthBirds into `out` (CUB layout + synth_birds.json) and return the folder.

    Written whole (attngan.data.staging): an error or an interrupt never leaves a partial data
    set. `overwrite` replaces an earlier SynthBirds folder; any other non-empty folder is refused.
    """
    if classes is None:
        classes = default_classes(images)
    _check_args(images, classes, size, seed, workers)
    return write_whole_folder(out, lambda tmp: _write(tmp, images, classes, size, seed, workers, progress),
                              overwrite=overwrite, marker=MANIFEST, what="SynthBirds")


def _write(root: Path, images: int, classes: int, size: int, seed: int, workers: int,
           progress: bool) -> None:
    species = make_species(classes, seed)
    # Images grouped by class, as in CUB; the first (images % classes) classes get one more.
    plan: list[tuple[int, str]] = []
    per_class = [images // classes + (c < images % classes) for c in range(classes)]
    for c, count in enumerate(per_class):
        for _ in range(count):
            name = f"{species[c].name}_{len(plan) + 1:04d}"
            plan.append((c, f"{class_folder(species[c])}/{name}"))
    cub = root / "CUB_200_2011"
    for sub in (cub / "images", root / "text", root / "masks"):
        for sp in species:
            (sub / class_folder(sp)).mkdir(parents=True)

    records = render_in_order(_render_job, images, workers, _init_worker,
                              (species, plan, size, seed, str(root)), "synth-birds", progress)
    _write_index(root, species, records, size, seed)


def _write_index(root: Path, species: list[Species], records: list[dict], size: int,
                 seed: int) -> None:
    cub = root / "CUB_200_2011"
    by_id = {sp.class_id: sp for sp in species}
    ids = range(1, len(records) + 1)
    w = lambda path, text: Path(path).write_text(text, encoding="utf-8")  # noqa: E731
    w(cub / "images.txt", "".join(f"{i} {r['key']}.jpg\n" for i, r in zip(ids, records)))
    w(cub / "classes.txt", "".join(f"{sp.class_id} {class_folder(sp)}\n" for sp in species))
    w(cub / "image_class_labels.txt",
      "".join(f"{i} {r['truth']['class_id']}\n" for i, r in zip(ids, records)))
    w(cub / "train_test_split.txt",
      "".join(f"{i} {int(r['truth']['split'] == 'train')}\n" for i, r in zip(ids, records)))
    w(cub / "bounding_boxes.txt", "".join(
        f"{i} {x:.1f} {y:.1f} {bw:.1f} {bh:.1f}\n" for i, r in zip(ids, records)
        for x, y, bw, bh in [r["bbox"]]))
    (cub / "attributes").mkdir()
    w(cub / "attributes" / "attributes.txt", "".join(f"{a} {n}\n" for a, n in enumerate(ATTRIBUTES, 1)))
    w(cub / "attributes" / "certainties.txt", "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    w(cub / "attributes" / "image_attribute_labels.txt", "".join(r["attr_rows"] for r in records))
    (cub / "parts").mkdir()
    w(cub / "parts" / "parts.txt", "".join(f"{p} {n}\n" for p, n in enumerate(CUB_PARTS, 1)))
    w(cub / "parts" / "part_locs.txt", "".join(r["part_rows"] for r in records))

    for split in ("train", "test"):
        (root / split).mkdir()
        keys = [r["key"] for r in records if r["truth"]["split"] == split]
        cls = [r["truth"]["class_id"] for r in records if r["truth"]["split"] == split]
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
        with open(root / split / "class_info.pickle", "wb") as f:
            pickle.dump(cls, f, protocol=2)
    # The original's gen_example reads example_filenames.txt and the caption files it names.
    w(root / "example_filenames.txt", "example_captions\n")
    w(root / "example_captions.txt", "\n".join(MOTIVATING_PROMPTS) + "\n")

    n_train = sum(r["truth"]["split"] == "train" for r in records)
    manifest = {
        "generator": "attngan.data.synth_birds",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "counts": {"images": len(records), "classes": len(species),
                   "train_images": n_train, "test_images": len(records) - n_train,
                   "train_classes": sum(sp.split == "train" for sp in species),
                   "test_classes": sum(sp.split == "test" for sp in species),
                   "captions_per_image": CAPTIONS_PER_IMAGE},
        "colours": {c: list(COLOUR_RGB[c]) for c in COLOURS},
        "key_colours": list(KEY_COLOURS),
        "shade_tolerance": SHADE_TOLERANCE,
        "mask_labels": list(MASK_LABELS),
        "mask_groups": {k: list(v) for k, v in MASK_GROUPS.items()},
        "cub_parts": list(CUB_PARTS),
        "classes": [{"id": sp.class_id, "name": class_folder(sp), "split": sp.split,
                     "prototype": {k: v for k, v in asdict(sp).items()
                                   if k not in ("class_id", "name", "split")}}
                    for sp in species],
        "images": {r["key"]: r["truth"] for r in records},
    }
    assert all(by_id[r["truth"]["class_id"]].split == r["truth"]["split"] for r in records)
    w(root / MANIFEST, json.dumps(manifest, sort_keys=True, separators=(",", ":")))


# ---------------------------------------------------------------------------------------------
# Reading it back.

def load_manifest(root: str | os.PathLike) -> dict:
    """The ground truth of a SynthBirds folder; `manifest["root"]` is set to the folder."""
    return read_manifest(root, MANIFEST, "SynthBirds")


def part_label_ids(part: str) -> list[int]:
    """Mask values that make up `part`: a MASK_LABELS name, a group (head, body, bird) or a CUB
    part name (beak, forehead, left wing, ...)."""
    part = _MASK_ALIASES.get(part, part)
    names = MASK_GROUPS.get(part, (part,))
    if any(n not in LABEL for n in names):
        raise AttnGANError(f"unknown part '{part}'; choose one of {', '.join(PART_NAMES)}, "
                           f"{', '.join(MASK_GROUPS)}")
    return [LABEL[n] for n in names]


def part_mask(root_or_manifest: str | os.PathLike | dict, key: str, part: str,
              size: int | tuple[int, int] | None = None,
              crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Boolean mask (H x W) of `part` in image `key`, exact at the image's resolution.

    `crop` = (x0, y0, x1, y1) in image pixels cuts the mask first (e.g. the loader's bbox crop);
    `size` (an int for square, or (height, width)) then resizes it with nearest neighbours.
    """
    manifest = root_or_manifest if isinstance(root_or_manifest, dict) else load_manifest(root_or_manifest)
    if key not in manifest["images"]:
        raise AttnGANError(f"no image '{key}' in the SynthBirds manifest")
    path = Path(manifest["root"]) / manifest["images"][key]["mask"]
    labels = Image.open(path)
    if crop is not None:
        labels = labels.crop(tuple(int(v) for v in crop))
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        labels = labels.resize((w, h), Image.NEAREST)
    return np.isin(np.asarray(labels), part_label_ids(part))
