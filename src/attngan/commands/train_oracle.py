"""`attngan train-oracle`: the SynthBirds attribute oracle that the binding metric relies on, or on SynthScenes data the scene judge.

One command for both instruments: the data folder's ground truth (its data source's
`ground_truth`) says which one it trains (SynthScenes: the judge of networks/scene_judge.py,
trained by training/judge_loop.py; else the bird oracle).
"""

from __future__ import annotations

NAME = "train-oracle"
HELP = ("train the SynthBirds colour/species oracle used by `attngan eval --metrics binding`, or on "
        "SynthScenes data the scene judge of the scene metrics")


def add_arguments(p) -> None:
    p.add_argument("--data", required=True,
                   help="SynthBirds folder (with synth_birds.json), or SynthScenes (synth_scenes.json: the judge)")
    p.add_argument("--out", required=True, help="folder to write (config.json + oracle/judge .safetensors)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget (0 = until --epochs; default 5, the judge 10)")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default 200, the judge 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=None,
                   help="held out to measure its own accuracy: the oracle, this share of each class "
                        "(default 0.1); the judge, this share of the test split's seen and novel images (0.5)")
    p.add_argument("--width", type=int, default=None, help="channels of the first conv block (16)")
    p.add_argument("--image-size", type=int, default=64, help="the judge's input size (a multiple of 8)")
    p.add_argument("--init", default=None,
                   help="the judge only: continue from this judge folder (its input size and width)")
    p.add_argument("--lr", type=float, default=4e-3,
                   help="the judge only: peak learning rate (lower it to continue a judge with --init)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto")


def run(args) -> int:
    from attngan.commands._common import check_minutes, check_writable_dir
    from attngan.data.records import ground_truth
    from attngan.errors import AttnGANError, check_seed

    judge = ground_truth(args.data) == "synth_scenes"
    defaults = (10.0, 40, 0.5, 16) if judge else (5.0, 200, 0.1, 16)
    for name, value in zip(("minutes", "epochs", "heldout", "width"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_seed(args.seed, "--seed")
    if not 0 < args.heldout < 1:
        raise AttnGANError("--heldout must be between 0 and 1")
    if args.epochs < 1 or args.batch < 1:
        raise AttnGANError("--epochs and --batch must be at least 1")
    check_minutes(args.minutes)
    if not 1 <= args.width <= 1024:
        raise AttnGANError(f"--width must be from 1 to 1024, got {args.width}")
    if judge and args.width < 8:
        raise AttnGANError(f"--width must be at least 8 for the judge, got {args.width}")
    if not 0 < args.lr < 1:
        raise AttnGANError("--lr must be between 0 and 1")
    check_writable_dir(args.out)
    if judge:
        return _run_judge(args)
    if args.init is not None:
        raise AttnGANError("--init continues a SynthScenes judge; the SynthBirds oracle trains from scratch")
    from attngan.metrics.oracle import MIN_ACCURACY
    from attngan.training.oracle_loop import train_oracle

    oracle = train_oracle(args.data, args.out, minutes=args.minutes, max_epochs=args.epochs, seed=args.seed,
                          heldout=args.heldout, width=args.width, batch=args.batch,
                          device=args.device)
    cfg = oracle.cfg
    accs = ", ".join(f"{h} {100 * v:.1f}%" for h, v in cfg.accuracy.items())
    print(f"held-out accuracy ({cfg.info['heldout_images']} images): {accs}")
    if cfg.valid:
        print(f"oracle valid (every attribute >= {100 * MIN_ACCURACY:.0f}%); wrote {args.out}")
    else:
        print(f"oracle below {100 * MIN_ACCURACY:.0f}% on an attribute: binding results with it are "
              f"reported void (train longer: --minutes); wrote {args.out}")
    return 0


def _run_judge(args) -> int:
    from attngan.errors import AttnGANError
    from attngan.networks.scene_judge import MIN_ACCURACY, STRIDE
    from attngan.training.judge_loop import train_judge

    if args.image_size % STRIDE or not 4 * STRIDE <= args.image_size <= 256:
        raise AttnGANError(f"--image-size must be a multiple of {STRIDE} from {4 * STRIDE} to 256")
    judge = train_judge(args.data, args.out, minutes=args.minutes, max_epochs=args.epochs, seed=args.seed,
                        heldout=args.heldout, width=args.width, image_size=args.image_size, batch=args.batch,
                        device=args.device, init=args.init, lr=args.lr)
    cfg = judge.cfg
    for kind, acc in cfg.accuracy.items():
        heads = ", ".join(f"{h} {100 * v:.1f}%" for h, v in acc.items() if h != "n")
        print(f"held-out accuracy, {kind} compositions ({acc['n']} images): {heads}")
    bars = ", ".join(f"{h} {100 * v:.0f}%" for h, v in MIN_ACCURACY.items())
    if cfg.valid:
        print(f"judge valid (seen and novel: {bars}); wrote {args.out}")
    else:
        print(f"judge below a bar ({bars}): scene metrics with it are reported void "
              f"(train longer: --minutes); wrote {args.out}")
    return 0
