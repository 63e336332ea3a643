"""`attngan export-original`: a model folder -> the original AttnGAN file layout."""

from __future__ import annotations

NAME = "export-original"
HELP = "write a model folder as original AttnGAN files (netG.pth, text/image_encoder.pth, captions.pickle)"


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="model folder (from train or import-original)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the original files")
    p.add_argument("--captions", default=None, metavar="FILE",
                   help="the dataset's captions.pickle, to carry its train/test caption lists "
                        "(same vocabulary); without it they are left empty")


def run(args) -> int:
    from attngan.commands._common import check_writable_dir
    from attngan.legacy import export_original

    check_writable_dir(args.out)
    for path in export_original(args.model, args.out, captions=args.captions):
        print(path)
    return 0
