"""`attngan train-damsm`: pretrain the DAMSM text and image encoders."""

from __future__ import annotations

NAME = "train-damsm"
HELP = "pretrain the DAMSM text and image encoders (run again to resume)"


def add_arguments(p) -> None:
    from attngan.commands._common import add_config_arguments, add_training_data_argument

    add_config_arguments(p)
    add_training_data_argument(p)
    p.add_argument("--out", required=True, help="run folder (best/: the last epoch; state.pt, metrics.jsonl)")
    p.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (default: config)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget (0 = none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None)


def run(args) -> int:
    from attngan.commands._common import (check_minutes, check_not_inside_a_run, check_writable_dir,
                                          print_config, resolve_config)
    from attngan.errors import AttnGANError

    cfg = resolve_config(args)
    # --epochs and --minutes go to the loop directly, not through the config: check them here.
    if args.epochs is not None and args.epochs < 0:
        raise AttnGANError(f"--epochs must be 0 or more, got {args.epochs}")
    check_minutes(args.minutes)
    check_writable_dir(args.out)
    check_not_inside_a_run(args.out)
    print_config(cfg)
    if args.dry_run:
        return 0
    from attngan.training.damsm_loop import train_damsm

    final = train_damsm(cfg, args.data, args.out, device=args.device, minutes=args.minutes,
                        max_epochs=args.epochs)
    if final:
        print(f"DAMSM done: R-precision {final['r_precision']:.3f}, "
              f"text->image R@1 {final['t2i_recall@1']:.3f}; encoders in {args.out}/best")
    return 0
