"""attngan.commandline: the one place printed `attngan` command lines are built."""

from __future__ import annotations

import shlex

import pytest

from attngan.commandline import command_line, option_args, option_value, quoted


@pytest.mark.parametrize("value, typed", [(15.0, "15"), (0.064, "0.064"), (2.5e-05, "2.5e-05"),
                                          (0.1 + 0.2, "0.30000000000000004"), (3, "3"), (True, "true")])
def test_a_value_is_typed_in_a_form_that_reads_back_as_itself(value, typed):
    assert option_value(value) == typed
    if isinstance(value, float):
        assert float(typed) == value


def test_options_keep_their_order_and_skip_what_is_unset():
    args = option_args({"num_images": 8, "captioner": None, "fast": False, "overwrite": True,
                        "set": ["a=1", "b=2"]})
    assert args == ["--num-images", "8", "--overwrite", "--set", "a=1", "--set", "b=2"]
    assert option_args([("b", 1), ("a", 2)]) == ["--b", "1", "--a", "2"]


def test_a_command_line_splits_back_into_its_arguments_whatever_the_paths():
    odd = "runs/my run/it's $HOME; rm -rf x"
    line = command_line("eval", {"model": odd, "metrics": "r_precision,binding", "seed": 0})
    assert line.startswith("attngan eval --model '")
    assert shlex.split(line) == ["attngan", "eval", "--model", odd, "--metrics", "r_precision,binding",
                                 "--seed", "0"]
    assert quoted(["attngan", "demo", "--out", "a b"]) == "attngan demo --out 'a b'"


def test_every_command_the_demo_prints_parses_with_the_cli(tmp_path):
    # A printed command must be one the CLI accepts as written, paths with spaces included.
    from attngan.apps.demo.pieces import damsm_command, data_command, eval_command, gan_command
    from attngan.apps.demo.settings import demo_config
    from attngan.cli import build_parser
    from attngan.commands._common import resolve_config

    parser = build_parser()
    d = tmp_path / "a dir"
    ev = {"num_images": 32, "seed": 1, "splits": 2}
    data = parser.parse_args(shlex.split(data_command(d / "data", {"images": 150, "classes": 12, "size": 64,
                                                                      "seed": 0}))[1:])
    assert (data.out, data.images, data.classes, data.size) == (str(d / "data"), 150, 12, 64)
    damsm = parser.parse_args(shlex.split(damsm_command(d / "data", d / "damsm", 4, 7))[1:])
    assert (damsm.data, damsm.out, damsm.epochs, damsm.minutes, damsm.seed) == (str(d / "data"), str(d / "damsm"),
                                                                                4, 0, 7)
    gan = parser.parse_args(shlex.split(gan_command(d / "data", d / "damsm", d / "gan", 0.064, 7))[1:])
    assert gan.kimg == 0.064 and gan.damsm == str(d / "damsm") and gan.out == str(d / "gan")
    # The printed settings are the ones the demo trains with.
    for args in (damsm, gan):
        assert resolve_config(args).to_dict() == demo_config(7).to_dict()
    line = eval_command(d / "m", d / "data", ["r_precision", "binding"], d / "e", d / "c", d / "o", ev, d / "r.json")
    evaluation = parser.parse_args(shlex.split(line)[1:])
    assert (evaluation.model, evaluation.captioner, evaluation.num_images, evaluation.splits) == (
        str(d / "m"), str(d / "c"), 32, 2)
    assert "--captioner" not in eval_command(d / "m", d / "data", ["is"], d / "e", None, d / "o", ev, d / "r")
