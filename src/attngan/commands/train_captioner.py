"""`attngan train-captioner`: train the image captioner (Show, Attend and Tell) on real images."""

from __future__ import annotations

NAME = "train-captioner"
HELP = "train an image captioner on a data set's real images and captions (run again to resume)"


def add_arguments(p) -> None:
    p.add_argument("--config", default="captioner",
                   help="captioner preset (captioner, synthbirds-captioner, synthscenes-captioner) or a YAML of its keys "
                        "(default: captioner)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set epochs=5 (repeatable; VALUE is YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument("--data", required=True, help="data folder (CUB, COCO, SynthBirds or SynthScenes layout)")
    p.add_argument("--out", required=True, help="run folder (best/: the last epoch, state.pt, metrics.jsonl)")
    p.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (default: config)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget (0 = none)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (e.g. 1 to leave the other cores free)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import json
    import os

    from attngan.commands._common import (check_minutes, check_not_inside_a_run, check_writable_dir,
                                          parse_overrides)
    from attngan.config import load_captioner_config, validate
    from attngan.errors import AttnGANError, check_seed

    cfg = load_captioner_config(args.config, parse_overrides(args.overrides))
    if args.seed is not None:
        cfg.seed = check_seed(args.seed, "--seed")
    validate(cfg)
    if args.epochs is not None and args.epochs < 0:
        raise AttnGANError(f"--epochs must be 0 or more, got {args.epochs}")
    cpus = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cpus:
        raise AttnGANError(f"--threads must be from 1 to {cpus} (the CPU count), got {args.threads}")
    check_minutes(args.minutes)
    check_writable_dir(args.out)
    check_not_inside_a_run(args.out)
    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    if args.dry_run:
        return 0
    import torch

    from attngan.training.captioner_loop import train_captioner

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    final = train_captioner(cfg, args.data, args.out, device=args.device, max_epochs=args.epochs,
                            minutes=args.minutes, progress=not args.no_progress)
    if final:
        recall = (f", attribute recall {100 * final['recall_all']:.1f}%" if "recall_all" in final else "")
        if "recall_objects" in final:  # SynthScenes
            recall = (f", read back: objects {100 * final['recall_objects']:.1f}%, colours "
                      f"{100 * final['recall_colours']:.1f}%, place {100 * final['recall_place']:.1f}%")
        print(f"captioner done: BLEU-4 {final['val_bleu4']:.3f}, CIDEr-D {final['val_cider_d']:.3f}"
              f"{recall}; model in {args.out}/best")
    return 0
