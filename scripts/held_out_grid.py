"""Draw a scenes model's images for SynthScenes' held-out compositions: one row per composition
(its prompt above the row), `--n` samples of seeds `--seed`, `--seed`+1, ... across (the figure
of the synthscenes-128 card in MODEL.md).

    python scripts/held_out_grid.py --model synthscenes-128 --n 6 --seed 0 --out docs/synthscenes-128-held-out.png
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="synthscenes-128", help="model folder or bundled model name")
    p.add_argument("--n", type=int, default=6, help="samples per composition")
    p.add_argument("--seed", type=int, default=0, help="the first sample's seed")
    p.add_argument("--size", type=int, default=128, help="tile size in pixels")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args()
    if not 1 <= args.n <= 16:
        raise SystemExit(f"--n must be 1-16, got {args.n}")

    import torch
    from PIL import Image

    from attngan.data.synth_scenes import held_out_prompts
    from attngan.pipeline import AttnGANPipeline
    from attngan.viz import caption_strip, image_grid, save_png

    pipe = AttnGANPipeline.from_pretrained(args.model, device="cpu")
    prompts = held_out_prompts()
    # Column k's noise is what a one-image call with seed `--seed` + k draws, the same in every
    # row: one batched call then gives each tile the image that call would give.
    z, eps = zip(*(pipe.sample_noise(1, args.seed + k) for k in range(args.n)))
    out = pipe([prompt for prompt in prompts for _ in range(args.n)],
               noise=torch.cat(z).repeat(len(prompts), 1), ca_noise=torch.cat(eps).repeat(len(prompts), 1))
    images = [im.resize((args.size, args.size), Image.BICUBIC) for im in out.to_pil()]
    rows = []
    for r, prompt in enumerate(prompts):
        row = image_grid(images[r * args.n:(r + 1) * args.n], ncol=args.n)
        strip = caption_strip(prompt, row.width, height=20)
        both = Image.new("RGB", (row.width, strip.height + row.height), (255, 255, 255))
        both.paste(strip, (0, 0))
        both.paste(row, (0, strip.height))
        rows.append(both)
    path = save_png(image_grid(rows, ncol=1, pad=4), Path(args.out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
