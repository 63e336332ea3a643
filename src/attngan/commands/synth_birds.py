"""`attngan synth-birds`: render the SynthBirds data set in CUB's on-disk layout."""

from __future__ import annotations

import argparse
import os

NAME = "synth-birds"
HELP = "render SynthBirds, a procedural bird data set with CUB-style captions, in CUB's layout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attngan.commands._common import add_render_arguments

    p.add_argument("--out", required=True, help="folder to create (e.g. data/birds)")
    p.add_argument("--images", type=int, default=11788, help="number of images (CUB has 11,788)")
    p.add_argument("--classes", type=int, default=None,
                   help="species; 3/4 train, 1/4 test, disjoint (default: 7.5%% of --images, at most 999)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    add_render_arguments(p, "SynthBirds", "cub", "CUB's layout")


MAX_IMAGES = 1_000_000  # 85 times CUB; the manifest and captions are held in memory


def run(args: argparse.Namespace) -> int:
    from attngan.commands._common import check_writable_dir
    from attngan.data.convert import CONVERTED, synth_birds_as
    from attngan.data.synth_birds import generate_synth_birds, load_manifest

    from attngan.errors import AttnGANError

    if not 1 <= args.images <= MAX_IMAGES:
        raise AttnGANError(f"--images must be from 1 to {MAX_IMAGES}, got {args.images}")
    cpus = os.cpu_count() or 1
    if not 1 <= args.workers <= cpus:
        raise AttnGANError(f"--workers must be from 1 to {cpus} (the CPU count), got {args.workers}")
    check_writable_dir(args.out)
    if getattr(args, "format", None) in CONVERTED:  # rendered in CUB's layout, then converted
        out = synth_birds_as(args.format, args.out, images=args.images, classes=args.classes,
                             size=args.size, seed=args.seed, workers=args.workers,
                             overwrite=args.overwrite)
        print(f"SynthBirds: {args.images} images at {args.size} px as {args.format} -> {out}")
        return 0
    out = generate_synth_birds(args.out, images=args.images, classes=args.classes, size=args.size,
                               seed=args.seed, workers=args.workers, overwrite=args.overwrite)
    c = load_manifest(out)["counts"]
    print(f"SynthBirds: {c['images']} images of {c['classes']} species at {args.size} px "
          f"(train {c['train_images']} images / {c['train_classes']} species, "
          f"test {c['test_images']} / {c['test_classes']}) -> {out}")
    return 0
