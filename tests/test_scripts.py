"""scripts/: the bundling step of a shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_export_bundle_writes_a_half_precision_folder_with_its_card(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    report = {"num_images": 40, "seed": 3, "results": {
        "binding": {"value": 0.75, "std": None, "n": 40, "protocol": "p", "per_attribute": {"wing": 0.8}},
        "r_precision": {"value": 0.5, "std": 0.1, "n": 40, "protocol": "q", "void": True}},
        "skipped": {"fid": "skipped: needs --fid-inception FILE"}}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    (tmp_path / "commands.txt").write_text("attngan synth-birds --out d\n\n# a note\nattngan train ...\n")
    out = tmp_path / "bundle"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_bundle.py"), "--model", str(tiny_model_dir),
                    "--report", str(tmp_path / "eval.json"), "--commands", str(tmp_path / "commands.txt"),
                    "--name", "my-model", "--data", '{"images": 12, "seed": 1}', "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    card = json.loads((out / "config.json").read_text())["model_card"]
    assert card["name"] == "my-model"
    assert card["commands"] == ["attngan synth-birds --out d", "# a note", "attngan train ..."]
    assert card["eval"] == {"num_images": 40, "seed": 3, "metrics": ["binding", "r_precision"]}
    assert card["data"]["images"] == 12 and card["data"]["seed"] == 1
    rows = {m["name"]: m for m in card["metrics"]}
    assert rows["binding"]["value"] == 0.75 and rows["binding"]["per_attribute"] == {"wing": 0.8}
    assert rows["r_precision"]["value"] is None  # a void metric is not reported as a number
    assert "fid" not in rows  # the card lists the metrics that ran
    weights = load_file(str(out / "generator.safetensors"))
    assert {v.dtype for k, v in weights.items() if v.is_floating_point() and "running_" not in k} == {
        torch.float16}


def test_held_out_grid_draws_one_row_per_held_out_composition(tiny_model_dir, tmp_path):
    from PIL import Image

    from attngan.data.synth_scenes import HELD_OUT, held_out_prompts

    prompts = held_out_prompts()
    assert len(prompts) == len(HELD_OUT) == len(set(prompts))
    out = tmp_path / "grid.png"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "held_out_grid.py"), "--model", str(tiny_model_dir),
                    "--n", "2", "--size", "32", "--out", str(out)], check=True, capture_output=True, timeout=300)
    im = Image.open(out)
    # Two 32 px tiles across (padded by 2), under a 20 px caption; rows stacked with padding 4.
    row_w, row_h = 2 * (32 + 2) + 2, 20 + (32 + 2) + 2
    assert im.size == (row_w + 8, len(HELD_OUT) * (row_h + 4) + 4)
