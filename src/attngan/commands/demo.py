"""`attngan demo`: the shipped model evaluated, then one trained from scratch, then the shipped scenes
model; ends in report.html."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = ("the shipped model on SynthBirds (stages, attention, metrics), then SynthBirds -> DAMSM -> "
        "AttnGAN from scratch for a fixed amount of work, then the shipped SynthScenes model (the paper's "
        "COCO sentences, seen vs novel compositions); writes report.html")


def add_arguments(p) -> None:
    from attngan.apps.demo.settings import DAMSM_EPOCHS, KIMG, SCENES_CAPTIONER, SCENES_MODEL, SCENES_PER_SPLIT

    p.add_argument("--out", default="runs/demo", help="output folder (data, models and evaluations are cached there)")
    p.add_argument("--damsm-epochs", type=int, default=DAMSM_EPOCHS,
                   help=f"DAMSM epochs of the model trained from scratch (default: {DAMSM_EPOCHS})")
    p.add_argument("--kimg", type=float, default=KIMG,
                   help=f"thousands of training images for its AttnGAN (default: {KIMG:g})")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="training seed of your own model and the prompts' seed")
    p.add_argument("--model", default=None, help="the shipped model to show (default: the default bundled one)")
    p.add_argument("--eval-damsm", default=None, help="evaluation DAMSM folder (default: the shipped one)")
    p.add_argument("--oracle", default=None, help="SynthBirds oracle folder (default: the shipped one)")
    p.add_argument("--images", type=int, default=None,
                   help="SynthBirds images (default: the set the shipped model's card names)")
    p.add_argument("--classes", type=int, default=None, help="SynthBirds species (default: as for --images)")
    p.add_argument("--size", type=int, default=None, help="SynthBirds image size (default: the card's)")
    p.add_argument("--bundle", default=None,
                   help="also write the model trained from scratch, half precision, to this folder")
    p.add_argument("--bundle-name", default="synthbirds-tiny", help="the name in that folder's model card")
    p.add_argument("--no-scenes", action="store_true", help="leave out the scenes part")
    p.add_argument("--scenes-model", default=None,
                   help=f"the scenes model to show (default: the bundled {SCENES_MODEL})")
    p.add_argument("--scenes-captioner", default=None,
                   help=f"the scenes captioner (default: the bundled {SCENES_CAPTIONER}, where installed)")
    p.add_argument("--scenes-judge", default=None, help="SynthScenes judge folder (default: the shipped one)")
    p.add_argument("--scenes-per-split", type=int, default=SCENES_PER_SPLIT,
                   help=f"test prompts of each kind, seen and novel compositions (default: {SCENES_PER_SPLIT})")
    # The demo used to be budgeted in wall-clock minutes; say what replaced it instead of a bare usage error.
    p.add_argument("--minutes", type=float, default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    from attngan.commands._common import check_writable_dir
    from attngan.apps.demo.app import run_demo
    from attngan.errors import AttnGANError, check_seed

    if args.minutes is not None:
        raise AttnGANError("the demo is budgeted in work, not time: use --damsm-epochs and --kimg")
    check_seed(args.seed, "--seed")
    check_writable_dir(args.out)
    run_demo(args.out, damsm_epochs=args.damsm_epochs, kimg=args.kimg, device=args.device, seed=args.seed,
             model_dir=args.model, eval_damsm_dir=args.eval_damsm, oracle_dir=args.oracle, images=args.images,
             classes=args.classes, size=args.size, bundle=args.bundle, bundle_name=args.bundle_name,
             scenes=not args.no_scenes, scenes_model_dir=args.scenes_model,
             scenes_captioner_dir=args.scenes_captioner, scenes_judge_dir=args.scenes_judge,
             scenes_per_split=args.scenes_per_split)
    return 0
