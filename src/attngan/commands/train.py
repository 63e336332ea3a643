"""`attngan train`: train AttnGAN against frozen, pretrained DAMSM encoders."""

from __future__ import annotations

import sys

NAME = "train"
HELP = "train the attentional generator and discriminators (run again, or --resume, to continue)"


def add_arguments(p) -> None:
    from attngan.commands._common import add_config_arguments, add_training_data_argument

    add_config_arguments(p)
    add_training_data_argument(p)
    p.add_argument("--damsm", required=True, help="DAMSM run folder (best/ is used), snapshot folder, or model folder / bundled model name (its encoders)")
    p.add_argument("--out", required=True, help="run folder: model/ (inference), state.pt, log.jsonl, samples/")
    p.add_argument("--resume", action="store_true",
                   help="require an existing training state in --out (a run folder with one always resumes)")
    p.add_argument("--init", default=None, help="start G from this model folder or bundled model name (fine-tuning; a model with fewer stages grows into this config)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (overrides train.minutes)")
    p.add_argument("--kimg", type=float, default=None, help="train this many thousand images in total")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None)


def run(args) -> int:
    import math
    from pathlib import Path

    from attngan.commands._common import (check_minutes, check_not_inside_a_run, check_writable_dir,
                                          print_config, resolve_config)
    from attngan.config import validate
    from attngan.errors import AttnGANError

    cfg = resolve_config(args)
    if args.minutes is not None:
        cfg.train.minutes = check_minutes(args.minutes)
    if args.kimg is not None:
        if not (math.isfinite(args.kimg) and args.kimg > 0):
            raise AttnGANError(f"--kimg must be greater than 0, got {args.kimg}")
        cfg.train.total_kimg = args.kimg
    validate(cfg)
    check_writable_dir(args.out)
    check_not_inside_a_run(args.out)
    if args.resume and not (Path(args.out) / "state.pt").is_file():
        raise AttnGANError(f"--resume: no training state in {args.out}")
    from attngan.commands._common import parse_overrides
    from attngan.io import read_damsm_config, with_damsm_sections

    # The encoders fix the text and DAMSM sections: resolved here, so what is printed is what runs.
    cfg = with_damsm_sections(cfg, read_damsm_config(args.damsm), parse_overrides(args.overrides))
    from attngan.training import distributed as dist

    if dist.is_main():
        print_config(cfg)
        from attngan.perf import amp_hint, resolve_device

        if hint := amp_hint(cfg.train.amp, resolve_device(args.device)):
            print(f"hint: {hint}", file=sys.stderr)  # stdout stays the config alone (--dry-run)
    if args.dry_run:
        return 0
    from attngan.training.gan_loop import train_gan

    res = train_gan(cfg, args.data, args.damsm, args.out, device=args.device, init_generator=args.init)
    if dist.is_main():
        print(f"trained {res['images_seen'] / 1000:.1f} kimg in {res['seconds'] / 60:.1f} min; "
              f"model folder: {Path(args.out) / 'model'}")
    dist.shutdown()
    return 0
