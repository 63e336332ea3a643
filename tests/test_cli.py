"""The CLI shell: generate writes what it says; bad input is one line and exit code 2."""

from __future__ import annotations

import pytest
from PIL import Image

from attngan.cli import main


def test_generate_writes_stages_and_attention(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = main(["generate", "--model", str(tiny_model_dir), "--out", str(out), "--n", "2", "--seed", "1",
               "a bird with wings that are black and a white belly", "a zebra bird"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "dropped: zebra" in stdout
    for c in range(2):
        for k in range(2):
            stages = sorted(out.glob(f"{c:03d}_s{k}_stage*.png"))
            assert [Image.open(p).size[0] for p in stages] == [32, 64]
            assert Image.open(out / f"{c:03d}_s{k}_attention.png").size[0] > 64
    # Same seed, same files.
    rc = main(["generate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "again"), "--n", "2",
               "--seed", "1", "a bird with wings that are black and a white belly", "a zebra bird"])
    assert rc == 0
    assert (out / "000_s1_stage1_64px.png").read_bytes() == (tmp_path / "again" / "000_s1_stage1_64px.png").read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "{model}", "   "], "empty"),
    (["generate", "--model", "{model}", "zebra giraffe"], "none of the caption's words is in the model's vocabulary"),
    (["generate", "--model", "{model}"], "at least one caption"),
    (["generate", "--model", "{missing}", "a bird"], "does not exist"),
    (["generate", "--model", "{model}", "--captions-file", "{missing}", "a bird"], "does not exist"),
    (["train", "--config", "nope", "--data", "x", "--damsm", "y", "--out", "z"], "neither a preset"),
    (["train", "--config", "tiny", "--set", "gan.gf_dimm=3", "--data", "x", "--damsm", "y", "--out", "z"],
     "unknown config key 'gan.gf_dimm'"),
    (["train-damsm", "--config", "tiny", "--data", "{missing}", "--out", "{out}"], "not found"),
])
def test_bad_input_is_one_line(argv, message, tiny_model_dir, tmp_path, capsys):
    subs = {"model": str(tiny_model_dir), "missing": str(tmp_path / "nowhere"), "out": str(tmp_path / "o")}
    rc = main([a.format(**subs) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0]


def test_dry_run_prints_resolved_config(capsys):
    import json

    rc = main(["train", "--config", "tiny", "--set", "train.damsm_lambda=0", "--dry-run",
               "--data", "x", "--damsm", "synthbirds-tiny", "--out", "z"])
    assert rc == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["name"] == "tiny" and cfg["train"]["damsm_lambda"] == 0.0


@pytest.mark.parametrize("native", [True, False])
def test_train_hints_at_bf16_only_where_native_and_off_stdout(capsys, monkeypatch, native):
    import json

    from attngan import perf

    monkeypatch.setenv(perf.NATIVE_BF16_ENV, "1" if native else "0")
    args = ["train", "--config", "tiny", "--dry-run", "--data", "x", "--damsm", "synthbirds-tiny", "--out", "z"]
    assert main(args + ["--set", "train.amp=off"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["train"]["amp"] == "off"  # the hint never mixes into the printed config
    assert ("train.amp=auto" in err) is native
    assert main(args + ["--set", "train.amp=auto"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["train"]["amp"] == "auto" and "hint" not in err


def test_training_help_names_every_preset(capsys):
    from attngan.cli import main
    from attngan.config import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in PRESETS), out
