"""`attngan import-original`: the published AttnGAN / DAMSM files -> a model folder."""

from __future__ import annotations

NAME = "import-original"
HELP = "convert the original AttnGAN weights (netG, DAMSM encoders, captions.pickle) to a model folder"


def add_arguments(p) -> None:
    p.add_argument("--preset", required=True, choices=["bird", "coco", "bird-dcgan"],
                   help="which release the files are: bird (bird_AttnGAN2.pth), coco "
                        "(coco_AttnGAN2.pth), bird-dcgan (bird_AttnDCGAN2.pth)")
    p.add_argument("--netG", required=True, metavar="FILE", help="the generator, e.g. bird_AttnGAN2.pth")
    p.add_argument("--text-encoder", required=True, metavar="FILE",
                   help="the DAMSM text encoder, e.g. text_encoder200.pth")
    p.add_argument("--image-encoder", default=None, metavar="FILE",
                   help="the DAMSM image encoder (default: the text encoder's path with "
                        "'text_encoder' replaced by 'image_encoder', as the original does)")
    p.add_argument("--captions", required=True, metavar="FILE",
                   help="the dataset's captions.pickle (its word ids match the text encoder)")
    p.add_argument("--netD", nargs="+", default=[], metavar="FILE",
                   help="optional discriminators for fine-tuning: netD0.pth netD1.pth netD2.pth "
                        "(bird-dcgan: one file)")
    p.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR if it exists")


def run(args) -> int:
    from attngan.commands._common import check_writable_dir
    from attngan.legacy import import_original

    check_writable_dir(args.out)
    out = import_original(args.preset, args.netG, args.text_encoder, args.captions, args.out,
                          image_encoder=args.image_encoder, net_d=args.netD,
                          overwrite=args.overwrite)
    print(f"wrote {out} (preset {args.preset}); try: attngan generate --model {out} "
          "\"this bird has a red crown and a short beak\"")
    return 0
