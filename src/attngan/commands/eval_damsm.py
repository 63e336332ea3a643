"""`attngan eval-damsm`: retrieval R-precision and recall of pretrained DAMSM encoders on real images,
and on SynthBirds the attention localisation of their word-region attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attngan.config import Config
    from attngan.text import Vocabulary

NAME = "eval-damsm"
HELP = ("image-to-text R-precision and text-to-image recall@1/5 of DAMSM encoders on the test split; "
        "on SynthBirds also attention localisation")


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
    from attngan.data.records import ground_truth
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
    if ground_truth(args.data) == "synth_birds":
        out["localisation"] = localisation(args, cfg, vocab, te, ie, ds, dev)
    print(json.dumps(out, indent=2))
    return 0


def localisation(args, cfg: Config, vocab: Vocabulary, text_encoder, image_encoder, ds, device) -> dict:
    """The `localisation` metric of these encoders on the split's images (percentages)."""
    from attngan.metrics.binding import damsm_localisation, load_part_masks, localisation_summary
    from attngan.metrics.extractors import DamsmStream

    damsm = DamsmStream(text_encoder, image_encoder, vocab, cfg.damsm.words_num, device, "",
                        gamma1=cfg.damsm.gamma1)
    masks_for = load_part_masks(args.data, args.split, cfg.damsm.image_size)
    per_kind, n = damsm_localisation(damsm, ds, masks_for, args.max_items or len(ds), 50, device)
    return localisation_summary(per_kind, n)
