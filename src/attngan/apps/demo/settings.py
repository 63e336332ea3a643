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
