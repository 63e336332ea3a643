"""`attngan demo`: the whole system on SynthBirds within a time budget, ending in report.html."""

from __future__ import annotations

NAME = "demo"
HELP = "SynthBirds -> DAMSM -> AttnGAN -> images, attention maps, metrics and report.html"


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (data and models are cached there)")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for the whole demo")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=None, help="SynthBirds images (default: sized for the budget)")
    p.add_argument("--bundle", default=None,
                   help="also write the trained model, half precision, to this folder (how the "
                        "packaged synthbirds-tiny model is made)")


def run(args) -> int:
    from attngan.demo import run_demo

    run_demo(args.out, minutes=args.minutes, device=args.device, seed=args.seed, images=args.images,
             bundle=args.bundle)
    return 0
