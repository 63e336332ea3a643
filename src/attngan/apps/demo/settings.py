"""What the demo shows (its prompts, the figures' sizes) and how much work it trains for."""

from __future__ import annotations

from attngan import Config, preset
from attngan.data.synth_birds import MOTIVATING_PROMPTS, default_classes

PROMPTS = list(MOTIVATING_PROMPTS)  # the three motivating prompts
MORE_PROMPTS = [
    "a small bird with a red crown and a short pointed bill",
    "this bird has wings that are green and a yellow belly",
    "a bird with a white belly, grey wings and a black crown",
]

# Work for "train your own", sized so that `make demo` takes about 14 minutes after the install on
# 2 AVX2 cores (docs/experiments.md): the tiny DAMSM's 4 epochs over the ~8,800 training images take
# 170-220 s (image cache included), and the tiny AttnGAN trains 43-60 images/s (float32).
DAMSM_EPOCHS = 4
KIMG = 15.0

STAGE_DISPLAY_PX = 256  # every stage is shown this wide (nearest-neighbour), so stages line up
ATTENTION_TILE_PX = 160  # each word's heat map: large enough to see the shape of the part it lit
ATTENTION_COLUMNS = 7   # tiles per row of an attention figure: 7 x 162 px fit the report's column

# The bundled name of the evaluation DAMSM and oracle shipped with the package.
SHIPPED_EVAL = "synthbirds-eval"


def demo_config(seed: int = 0) -> Config:
    cfg = preset("tiny")
    cfg.seed = seed
    cfg.data.workers = 0  # two cores: workers would compete with the training process
    cfg.data.cache = True  # decode each JPEG once, not once per epoch (same pixels, tested)
    # float32 on every CPU: `auto` would train in bf16 where the CPU has it natively (faster), and
    # the demo's numbers would then depend on which CPU ran it.
    cfg.train.amp = cfg.damsm.amp = "off"
    return cfg


# The same settings as `attngan train --set` options, for the commands the report prints.
DEMO_SETS = ["data.workers=0", "data.cache=true", "train.amp=off", "damsm.amp=off"]


def classes_for(n_images: int) -> int:
    # The generator's default (about 13 images per species), and at least 12 species so that a
    # tiny set still has a class-disjoint split with several test species.
    return max(12, default_classes(n_images))


# The scenes part: the shipped SynthScenes model (nothing is trained) on the paper's MS-COCO
# sentences, then its scene metrics for seen and novel compositions on a test set rendered here.
SCENES_MODEL = "synthscenes-128"
SCENES_CAPTIONER = "synthscenes-captioner"
SCENES_EVAL = "synthscenes-eval"  # the bundled evaluation DAMSM for SynthScenes' R-precision, where installed
# Test prompts of each kind (seen, novel): the judge's shares to within about +-3.5 points (one
# standard error). The set rendered for them (the test split is a fifth of it), their evaluation
# and the prompts cost 25-36 s of CPU time with a three-stage 128 px model (the round trip's
# captions of 400 generated and 400 real images about 3 s of it): the scenes part adds well under
# 1.5 minutes to the demo on 2 cores.
SCENES_PER_SPLIT = 200
SCENES_SPLITS = 10  # IS and R-precision: mean and std over this many splits
# The round trip reads the generated scenes back through the scenes captioner (and its ceiling, the
# same prompts' real renders); without a captioner its row says it was skipped.
SCENE_METRICS = ["scene_objects", "scene_place", "scene_colour", "scene_count", "composition", "fid_judge",
                 "r_precision", "is", "roundtrip"]

# The paper's MS-COCO sentences (its unseen scenes, then its COCO examples), each as the paper
# wrote it, as the demo asks for it in SynthScenes' vocabulary, and each word replaced or dropped
# with the reason. SynthScenes has twelve COCO categories, five backgrounds and colours, and at
# most two object groups a scene (docs/synthscenes.md).
SCENE_PROMPTS: list[tuple[str, str, list[str]]] = [
    ("A stop sign flying in the sky", "A stop sign flying in the sky", []),
    ("A red bus is floating on a lake", "A red bus is floating on a lake", []),
    ("A herd of cows grazing on the grass", "A herd of cows grazing on the grass", []),
    ("An old clock next to a light post in front of a steeple", "A clock next to a stop sign on the street", [
        "“old” dropped: SynthScenes gives an object a colour, not an age",
        "“light post” → “stop sign”: no lamp posts; the stop sign is the other street object on a pole",
        "“in front of a steeple” → “on the street”: no buildings, and a scene holds at most two object "
        "groups, so the third thing becomes the place (the street, with a skyline behind it)",
    ]),
    ("A fruit stand display with bananas and kiwi", "Some bananas lying on the grass", [
        "“a fruit stand display with” → “some … lying on the grass”: no stands or shops, and a scene "
        "needs a place; bananas lie on the grass or the beach",
        "“and kiwi” dropped: no kiwi; the banana is the only fruit",
    ]),
]
