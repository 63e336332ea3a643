"""`attngan eval-damsm`: retrieval R-precision and recall of pretrained DAMSM encoders on real images."""

from __future__ import annotations

NAME = "eval-damsm"
HELP = "image-to-text R-precision and text-to-image recall@1/5 of DAMSM encoders on the test split"


def add_arguments(p) -> None:
    p.add_argument("damsm", help="DAMSM run folder (uses best/) or snapshot folder")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--max-items", type=int, default=0, help="limit the number of images (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import json
    from dataclasses import replace

    from attngan.data.dataset import make_loader, open_split
    from attngan.errors import AttnGANError, check_seed

    check_seed(args.seed, "--seed")
    if args.max_items < 0:
        raise AttnGANError(f"--max-items must be 0 (all) or more, got {args.max_items}")
    from attngan.io import load_damsm
    from attngan.training.damsm_loop import encode_split, retrieval_metrics
    from attngan.perf import resolve_device

    dev = resolve_device(args.device)
    cfg, vocab, te, ie = load_damsm(args.damsm, dev)
    ds = open_split(args.data, args.split, replace(cfg.data, words_num=cfg.damsm.words_num), vocab,
                    image_sizes=[cfg.damsm.image_size], train=False)
    loader = make_loader(ds, 50, shuffle=False, workers=cfg.data.workers, drop_last=False, seed=args.seed)
    img, sent, classes = encode_split(te, ie, loader, dev, args.max_items or None)
    out = retrieval_metrics(img, sent, classes, seed=args.seed)
    out["n_images"] = int(img.shape[0])
    print(json.dumps(out, indent=2))
    return 0
