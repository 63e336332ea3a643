"""`attngan train-oracle`: the SynthBirds attribute oracle that the binding metric relies on."""

from __future__ import annotations

NAME = "train-oracle"
HELP = "train the SynthBirds colour/species oracle used by `attngan eval --metrics binding`"


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="SynthBirds folder (with synth_birds.json)")
    p.add_argument("--out", required=True, help="oracle folder to write (config.json + oracle.safetensors)")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget (0 = until --epochs)")
    p.add_argument("--epochs", type=int, default=200, help="at most this many epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.1,
                   help="share of each class held out to measure the oracle's own accuracy")
    p.add_argument("--width", type=int, default=16, help="channels of the first conv block")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto")


def run(args) -> int:
    from attngan.commands._common import check_minutes, check_writable_dir
    from attngan.errors import AttnGANError, check_seed
    from attngan.metrics.oracle import MIN_ACCURACY
    from attngan.training.oracle_loop import train_oracle

    check_seed(args.seed, "--seed")
    if not 0 < args.heldout < 1:
        raise AttnGANError("--heldout must be between 0 and 1")
    if args.epochs < 1 or args.batch < 1:
        raise AttnGANError("--epochs and --batch must be at least 1")
    check_minutes(args.minutes)
    if not 1 <= args.width <= 1024:
        raise AttnGANError(f"--width must be from 1 to 1024, got {args.width}")
    check_writable_dir(args.out)
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
