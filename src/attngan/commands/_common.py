"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
from typing import Any

from attngan.errors import AttnGANError


def add_config_arguments(p: argparse.ArgumentParser, default: str = "bird") -> None:
    p.add_argument("--config", default=default,
                   help=f"preset name (bird, bird-attn1, bird-dcgan, coco, tiny), our YAML, or an "
                        f"original AttnGAN .yml (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.batch_size=8 (repeatable; "
                        "VALUE is parsed as YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    from attngan.config import yaml_load

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise AttnGANError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw)
        except yaml.YAMLError:
            raise AttnGANError(f"--set {key}: cannot parse value {raw!r}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def resolve_config(args: argparse.Namespace):
    from attngan.config import load_config

    cfg = load_config(args.config, parse_overrides(args.overrides))
    if getattr(args, "seed", None) is not None:
        cfg.seed = args.seed
    return cfg


def print_config(cfg) -> None:
    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
