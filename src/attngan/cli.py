"""`attngan ...`: a thin shell; each subcommand lives in attngan/commands/<name>.py.

A command module defines NAME, HELP, add_arguments(parser) and run(args) -> int, and keeps
heavy imports (torch) inside run() so `attngan --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from attngan.errors import AttnGANError

# Order is the order of `attngan --help`.
COMMAND_MODULES = [
    "demo", "synth_birds", "synth_scenes", "make_shards", "train_damsm", "eval_damsm", "train",
    "generate", "eval", "train_oracle", "train_captioner", "caption", "import_original",
    "export_original", "serve",
]


# Commands whose large, repeated CPU buffers page-fault under glibc's default malloc: they run
# faster with the allocator kept mapped (benchmarks/bench_train.py). Inference commands keep the
# default, whose peak memory is lower (benchmarks/bench_infer.py prints both).
ALLOCATOR_COMMANDS = {"demo", "train", "train-damsm", "train-oracle", "train-captioner", "eval",
                      "eval-damsm"}


def _configure_allocator() -> None:
    # Set before torch is imported: see attngan.perf for why (page faults on CPU).
    try:
        from attngan.perf import configure_allocator_env
    except ImportError:
        return
    configure_allocator_env()


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (every other error of the CLI is one line too); the
    usage it would print first is one --help away. Subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attngan",
        description="AttnGAN: attentional text-to-image generation (Xu et al., CVPR 2018).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMAND_MODULES:
        mod = importlib.import_module(f"attngan.commands.{mod_name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()  # imports no torch: command modules import it inside run()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if args.command in ALLOCATOR_COMMANDS:
        _configure_allocator()
    try:
        return int(args._run(args) or 0)
    except AttnGANError as e:
        print(f"attngan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attngan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
