"""The DAMSM snapshot that evaluation and GAN training load is never chosen on the test split."""

from __future__ import annotations

import json

from attngan.config import preset


def test_best_snapshot_is_the_last_epoch_and_says_so(tmp_path):
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.io import damsm_folder
    from attngan.training.damsm_loop import DAMSM_SELECTION, train_damsm

    data = tmp_path / "birds"
    generate_synth_birds(data, images=48, classes=8, size=96, seed=0, progress=False)
    cfg = preset("tiny")
    cfg.data.workers = 0
    cfg.damsm.batch_size = 8
    run = tmp_path / "run"
    train_damsm(cfg, data, run, device="cpu", max_epochs=2, progress=False, eval_items=16)
    best = json.loads((run / "best" / "config.json").read_text())["metrics"]
    # Whatever the test R-precision did, best/ is epoch 2 (the last), recorded as such; it is the
    # run's one snapshot (no copy of it under last/).
    assert best["epoch"] == 2 and best["selection"] == DAMSM_SELECTION
    assert not (run / "last").exists()
    assert damsm_folder(run) == run / "best"
