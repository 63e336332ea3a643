"""`attngan ...`: a thin shell; each subcommand lives in attngan/commands/<name>.py.

A command module defines NAME, HELP, add_arguments(parser) and run(args) -> int, and keeps
heavy imports (torch) inside run() so `attngan --help` stays instant.
"""

from __future__ import annotations

import argparse
import errno
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


# Commands whose large, repeated CPU buffers page-fault under glibc's default malloc: the allocator
# setting (attngan.perf) keeps them in the heap, set here before torch is imported. Inference gets it
# too (AttnGANPipeline applies it itself as well, so the library runs as fast as the CLI).
ALLOCATOR_COMMANDS = {"demo", "train", "train-damsm", "train-oracle", "train-captioner", "eval",
                      "eval-damsm", "generate", "serve", "caption"}


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


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(e: BaseException) -> str | None:
    """One line for a write that failed because the disk (or the quota) is full, else None.

    A full disk is the machine's state, not a bug: a traceback would hide the one fact the user
    needs. Writes are atomic (a temporary renamed into place), so what was there before is intact.
    safetensors reports the OS error inside its own exception's text."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            where = f": {e.filename}" if e.filename else ""
            return (f"no space left on the device{where} ({os.strerror(e.errno)}); free some space "
                    "and run again")
        text = str(e)
        if type(e).__name__ == "SafetensorError" and any(
                m in text for m in ("No space left", "StorageFull", "Disk quota", "QuotaExceeded")):
            return "no space left on the device while writing weights; free some space and run again"
        e = e.__cause__ or e.__context__
    return None


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
    except Exception as e:  # noqa: BLE001 - only a full disk is answered here; the rest re-raised
        message = _disk_full(e)
        if message is None:
            raise
        print(f"attngan {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
