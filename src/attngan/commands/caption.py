"""`attngan caption IMAGE...`: what the captioner sees in each image ("I think it's ...")."""

from __future__ import annotations

NAME = "caption"
HELP = "describe images with a captioner (default: the bundled SynthBirds captioner)"


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--captioner", "--model", dest="captioner", default=None,
                   help="captioner folder (attngan train-captioner; a run folder uses its best/) or a "
                        "bundled captioner's name: synthbirds-captioner (the default) or "
                        "synthscenes-captioner")
    p.add_argument("--beam", type=int, default=None,
                   help="beam width (1 = greedy; default: the captioner's own, see its config.json)")
    p.add_argument("--mention", default=None, metavar="GROUPS",
                   help="words every caption must name, groups separated by ';' and alternatives by '|', "
                        "e.g. 'wings|wing;belly' (constrained beam search); '' for none (default: the "
                        "captioner's own, see its config.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--device", default="auto")


MAX_BEAM = 100  # each hypothesis costs a decoder row per step: wider beams only cost memory


def run(args) -> int:
    import json

    from attngan.captioner import Captioner
    from attngan.errors import AttnGANError

    if args.beam is not None and not 1 <= args.beam <= MAX_BEAM:
        raise AttnGANError(f"--beam must be from 1 to {MAX_BEAM}, got {args.beam}")
    captioner = Captioner.from_pretrained(args.captioner, device=args.device)
    captions = captioner(list(args.images), beam_size=args.beam, mention=args.mention)
    for path, text in zip(args.images, captions):
        if args.json:
            print(json.dumps({"image": path, "caption": text}))
        else:
            print(f"{path}: I think it's: {text}")
    return 0
