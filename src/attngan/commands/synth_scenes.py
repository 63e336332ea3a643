"""`attngan synth-scenes`: render the SynthScenes data set in MS-COCO 2014's on-disk layout."""

from __future__ import annotations

import argparse

NAME = "synth-scenes"
HELP = ("render SynthScenes, a procedural multi-object scene data set with COCO-style captions "
        "and held-out compositions, in COCO 2014's layout")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attngan.commands._common import add_render_arguments

    p.add_argument("--out", required=True, help="folder to create (e.g. data/scenes)")
    p.add_argument("--images", type=int, default=5000,
                   help="number of images; 80%% train, 20%% test (half seen, half novel "
                        "compositions): the default gives 500 + 500 test images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (64 to 1024)")
    add_render_arguments(p, "SynthScenes", "coco", "COCO 2014's layout with synth_scenes.json")

def run(args: argparse.Namespace) -> int:
    from attngan.commands._common import check_writable_dir
    from attngan.data.convert import CONVERTED
    from attngan.data.synth_scenes import generate_synth_scenes, load_manifest, synth_scenes_as

    check_writable_dir(args.out)
    if args.format in CONVERTED:  # rendered in COCO's layout, then converted
        out = synth_scenes_as(args.format, args.out, images=args.images, size=args.size,
                              seed=args.seed, workers=args.workers, overwrite=args.overwrite)
        print(f"SynthScenes: {args.images} images at {args.size} px as {args.format} -> {out}")
        return 0
    out = generate_synth_scenes(args.out, images=args.images, size=args.size, seed=args.seed,
                                workers=args.workers, overwrite=args.overwrite)
    c = load_manifest(out)["counts"]
    print(f"SynthScenes: {c['images']} images, {c['objects']} objects at {args.size} px "
          f"(train {c['train_images']}, test {c['test_images']}: {c['test_seen']} seen + "
          f"{c['test_novel']} novel compositions) -> {out}")
    return 0
