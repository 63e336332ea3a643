"""`attngan eval`: IS, FID (two protocols), KID, R-precision, attribute binding, scene composition,
per-stage high-frequency detail -> report.json + .md."""

from __future__ import annotations

NAME = "eval"
HELP = "score a model's samples (or a folder of images): IS, FID, KID, R-precision, binding, sharpness"



def add_arguments(p) -> None:
    from attngan.metrics.registry import REGISTRY  # numpy only: --help stays quick

    src = p.add_argument_group("what to score")
    src.add_argument("--model", default=None, help="model folder: generate from the test split's captions")
    src.add_argument("--images", default=None,
                     help="score this folder of images instead (captions.json {file: caption} in it "
                          "enables r_precision and binding)")
    src.add_argument("--data", required=True, help="dataset folder (test split: captions and real images)")
    src.add_argument("--prompts", default=None,
                     help="with --model: generate for these prompts instead of the test captions (a file: one "
                          "prompt per line, or a JSON list of prompts or {\"prompt\", \"attributes\"}; or "
                          "'synthbirds-free', the bundled set); runs binding, roundtrip, attention_colour, is")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of {','.join(REGISTRY)} (default: every metric whose "
                        "inputs are given, except "
                        f"{', '.join(n for n, s in REGISTRY.items() if not s.default)}, which runs "
                        "when named; a requested one without its inputs is an error)")
    p.add_argument("--num-images", type=int, default=30000,
                   help="samples to generate (the paper: 30000); with --images, a cap")
    p.add_argument("--splits", type=int, default=10, help="splits for IS and R-precision mean/std")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", help="dataset split of the captions and real images")
    p.add_argument("--real-images", type=int, default=None, help="cap on real images for FID/KID statistics")
    proto = p.add_argument_group("protocol choices")
    proto.add_argument("--real-transform", choices=("center", "original"), default="center",
                       help="real test images for FID/KID: centre crop (default, deterministic), or the "
                            "original's loader, which used the train transform (random crop + flip; "
                            "seeded by --seed) for the test split too")
    proto.add_argument("--fid-resize", choices=("pytorch-fid", "tf1"), default="pytorch-fid",
                       help="fid/kid resize to 299: pytorch-fid's F.interpolate (bilinear, "
                            "align_corners=False; default) or TF1's bilinear resize in the graph with "
                            "(x - 128) / 128 input, as torch-fidelity")
    proto.add_argument("--is-shuffle-seed", type=int, default=None,
                       help="shuffle IS predictions before the splits with numpy RandomState(SEED) "
                            "(torch-fidelity's ISC uses 2020); default: no shuffle, as improved-gan")
    proto.add_argument("--rp-protocol", choices=("dmgan", "set"), default="dmgan",
                       help="R-precision sampling: dmgan (default; DM-GAN's code: 99 negatives with "
                            "replacement from all test captions of other classes, ties are hits, "
                            "shuffled splits, the sentence embedding that conditioned G) or set "
                            "(negatives from the scored set's captions, ties miss)")
    w = p.add_argument_group("weights (local files; nothing is downloaded)")
    w.add_argument("--inception", default=None, help="torchvision inception_v3_google-*.pth: fid_legacy")
    w.add_argument("--fid-inception", default=None,
                   help="pytorch-fid pt_inception-2015-12-05-6726825d.pth: fid, kid, and IS (improved-gan's "
                        "network, bias-free logits) unless --is-classifier or --oracle")
    w.add_argument("--is-classifier", default=None,
                   help="IS classifier: a pt_inception file (COCO protocol), StackGAN's CUB Inception "
                        "converted to a torchvision-layout state dict with 51 logits (logit 0 dropped), "
                        "another N-class Inception-v3 state dict, or an oracle folder (its species head)")
    w.add_argument("--eval-damsm", default=None, help="DAMSM run folder for r_precision/localisation "
                                                      "(default: the model's own encoders)")
    w.add_argument("--captioner", default=None,
                   help="captioner folder or bundled name (synthbirds-captioner, synthscenes-captioner): "
                        "roundtrip (default on SynthScenes data: the bundled synthscenes-captioner where "
                        "installed)")
    w.add_argument("--oracle", default=None, help="SynthBirds oracle folder (attngan train-oracle): binding, fid_oracle, and IS "
                                                  "when no other classifier is given")
    w.add_argument("--judge", default=None,
                   help="SynthScenes judge folder (attngan train-oracle on SynthScenes data): the scene "
                        "metrics, fid_judge, and IS when no --is-classifier/--oracle is given "
                        "(default on SynthScenes data: the bundled judge)")
    p.add_argument("--cache", default=None, help="folder for cached real-image features (default: DATA/cache/metrics)")
    p.add_argument("--log", default=None, help="append the results as one JSON line to this file")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default="report.json", help="report path; the Markdown table goes beside it (.md)")


def run(args) -> int:
    from attngan.commands._common import check_writable_file
    from attngan.errors import AttnGANError, check_seed
    from attngan.metrics.evaluation import EvalOptions, evaluate
    from attngan.metrics.report import format_markdown, write_report

    if args.model is None and args.images is None:
        raise AttnGANError("give --model MODEL_DIR (generate and score) or --images DIR (score a folder)")
    check_seed(args.seed, "--seed")
    if args.real_images is not None and args.real_images < 1:
        raise AttnGANError(f"--real-images must be at least 1, got {args.real_images}")
    check_writable_file(args.out)
    if args.log:
        check_writable_file(args.log, "--log")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    options = EvalOptions(
        metrics=metrics, num_images=args.num_images, splits=args.splits, batch=args.batch, seed=args.seed,
        device=args.device, inception=args.inception, fid_inception=args.fid_inception,
        is_classifier=args.is_classifier, eval_damsm=args.eval_damsm, oracle=args.oracle,
        captioner=args.captioner, judge=args.judge,
        cache_dir=args.cache, split=args.split, real_images=args.real_images,
        real_transform=args.real_transform, fid_resize=args.fid_resize,
        is_shuffle_seed=args.is_shuffle_seed, rp_protocol=args.rp_protocol,
        progress=not args.no_progress, prompts=args.prompts,
    )
    report = evaluate(args.data, options, model_dir=args.model, images_dir=args.images)
    json_path, md_path = write_report(report, args.out, args.log)
    print(format_markdown(report), end="")
    print(f"wrote {json_path} and {md_path}")
    return 0
