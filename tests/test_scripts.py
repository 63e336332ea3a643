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


def test_held_out_grid_draws_every_tile_in_one_call_with_its_columns_seed(tiny_model_dir, tmp_path, monkeypatch):
    import runpy

    import numpy as np
    import torch
    from PIL import Image

    from attngan.data.synth_scenes import held_out_prompts
    from attngan.pipeline import AttnGANPipeline

    n, seed, calls = 3, 5, []
    real = AttnGANPipeline.__call__

    def spy(self, captions, seed=None, noise=None, ca_noise=None, batch_size=16):
        out = real(self, captions, seed=seed, noise=noise, ca_noise=ca_noise, batch_size=batch_size)
        calls.append((captions, out.images[-1].shape[0], noise, ca_noise))
        # Each sample drawn as a flat grey of its own, so the grid shows where every sample went.
        levels = torch.linspace(-1, 1, out.images[-1].shape[0])
        out.images[-1] = levels.view(-1, 1, 1, 1).expand_as(out.images[-1]).clone()
        return out

    monkeypatch.setattr(AttnGANPipeline, "__call__", spy)
    out = tmp_path / "grid.png"
    monkeypatch.setattr(sys, "argv", ["held_out_grid.py", "--model", str(tiny_model_dir), "--n", str(n),
                                      "--seed", str(seed), "--size", "32", "--out", str(out)])
    runpy.run_path(str(ROOT / "scripts" / "held_out_grid.py"), run_name="__main__")

    prompts = held_out_prompts()
    assert len(calls) == 1
    captions, drawn, noise, ca_noise = calls[0]
    assert captions == [p for p in prompts for _ in range(n)] and drawn == len(prompts) * n
    # Column k's noise is exactly what a one-image call with seed `seed` + k draws, in every row.
    pipe = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    for i in range(len(captions)):
        z, eps = pipe.sample_noise(1, seed + i % n)
        assert torch.equal(noise[i], z[0]) and torch.equal(ca_noise[i], eps[0])
    # Tile (row r, column k) holds sample r * n + k: its grey level.
    grid = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    row_h = 20 + (32 + 2) + 2
    levels = ((torch.linspace(-1, 1, len(captions)) + 1) * 127.5).round().numpy()
    for r in range(len(prompts)):
        for k in range(n):
            x, y = 4 + 2 + k * (32 + 2), 4 + r * (row_h + 4) + 20 + 2
            tile = grid[y:y + 32, x:x + 32]
            assert np.abs(tile - levels[r * n + k]).max() <= 1, (r, k)
