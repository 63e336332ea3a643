"""`attngan generate`: images and attention figures from free text."""

from __future__ import annotations

NAME = "generate"
HELP = "generate images (every stage) and per-word attention figures from captions"


def add_arguments(p) -> None:
    p.add_argument("captions", nargs="*", help="one or more captions (quote each)")
    p.add_argument("--model", default=None,
                   help="model folder or bundled model name: synthbirds-128 (birds, the default), synthbirds-tiny, "
                        "synthscenes-128 (multi-object scenes)")
    p.add_argument("--captions-file", default=None, help="a text file, one caption per line")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="samples per caption")
    p.add_argument("--out", default="generated", help="output folder")
    p.add_argument("--top-words", type=int, default=5, help="words shown in the attention figure")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="off", choices=["off", "auto", "bf16"],
                   help="off: float32 (default, exact); bf16: bf16 autocast (faster where the CPU or GPU "
                        "has bf16 natively, emulated and slower elsewhere); auto: bf16 only where native")


# Samples are held in memory until written: bounds well beyond any figure or grid.
MAX_SAMPLES = 1000
MAX_TOTAL = 10000


def run(args) -> int:
    from pathlib import Path

    from attngan.commands._common import check_writable_dir
    from attngan.errors import AttnGANError, check_seed

    # Arguments first, before the model is loaded or anything is generated.
    check_seed(args.seed, "--seed")
    if args.top_words < 1:
        raise AttnGANError(f"--top-words must be at least 1, got {args.top_words}")
    check_writable_dir(args.out)
    captions = list(args.captions)
    if args.captions_file:
        path = Path(args.captions_file)
        if not path.is_file():
            raise AttnGANError(f"captions file {path} does not exist")
        captions += [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                     if line.strip()]
    if not captions:
        raise AttnGANError("give at least one caption (or --captions-file)")
    if not 1 <= args.n <= MAX_SAMPLES:
        raise AttnGANError(f"--n must be from 1 to {MAX_SAMPLES}, got {args.n}")
    if len(captions) * args.n > MAX_TOTAL:
        raise AttnGANError(f"{len(captions)} captions x --n {args.n} is more than {MAX_TOTAL} samples; "
                           "run in parts")
    from attngan.pipeline import AttnGANPipeline
    from attngan.viz import save_png, word_attention_figure

    pipe = AttnGANPipeline.from_pretrained(args.model, device=args.device, amp=args.amp)
    expanded = [c for c in captions for _ in range(args.n)]
    out = pipe(expanded, seed=args.seed)
    for s, stage in enumerate(out.images):
        # Broken weights (a negative BatchNorm variance, values near float32's limit) give NaN or
        # inf pixels that would be saved as black images with success.
        if not bool(stage.isfinite().all()):
            raise AttnGANError(f"the model produced non-finite values (NaN/inf) at stage {s}: its "
                               "weights are broken; nothing was written")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for j, caption in enumerate(expanded):
        c, k = divmod(j, args.n)
        stem = f"{c:03d}_s{k}"
        for s, stage in enumerate(out.images):
            save_png(_pil(stage[j]), out_dir / f"{stem}_stage{s}_{stage.shape[-1]}px.png")
        if out.attention:
            fig = word_attention_figure(out.images[-1][j], out.attention[-1][j], out.tokens[j],
                                        top_k=args.top_words, size=min(out.images[-1].shape[-1] * 2, 256))
            save_png(fig, out_dir / f"{stem}_attention.png")
        dropped = f" (dropped: {', '.join(out.dropped[j])})" if out.dropped[j] else ""
        print(f"{stem}: {caption}{dropped}")
    print(f"wrote {len(expanded)} samples to {out_dir}")
    return 0


def _pil(t):
    from attngan.viz import to_pil

    return to_pil(t)
