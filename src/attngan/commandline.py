"""Command lines the project prints for a person to run again: an `attngan` command from its name
and options, quoted for a POSIX shell.

Every printed command goes through `command_line`, so a path with a space or a quote in it is
always quoted the same way and an option is always spelled as the CLI spells it.
"""

from __future__ import annotations

import shlex
from typing import Any, Iterable, Mapping

PROGRAM = "attngan"


def option_value(value: Any) -> str:
    """An option's value as typed: a float in its shortest form that reads back as the same number
    (15.0 -> "15", 0.064 -> "0.064"), a bool in lower case, anything else as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def option_args(options: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """`--name value` arguments, in the given order. A name's underscores become dashes
    (`num_images` -> `--num-images`); None and False leave the option out, True gives the bare
    flag, and a list or tuple repeats the option once per item (`--set a=1 --set b=2`)."""
    args: list[str] = []
    for name, value in (options.items() if isinstance(options, Mapping) else options):
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, option_value(item)]
        else:
            args += [flag, option_value(value)]
    return args


def quoted(argv: Iterable[Any]) -> str:
    """One shell line that runs `argv` (each argument quoted only where the shell needs it)."""
    return shlex.join(str(a) for a in argv)


def command_line(command: str, options: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
                 program: str = PROGRAM) -> str:
    """`attngan COMMAND --option value ...`, quoted: e.g.
    command_line("train", {"config": "tiny", "kimg": 15.0}) == "attngan train --config tiny --kimg 15"."""
    return quoted([program, command, *option_args(options)])
