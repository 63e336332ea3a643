"""No training loop reads the test split to choose the snapshot it ships.

Each loop scores the test split after every epoch for its log; here that score is made to peak at
the first epoch and fall after it. A loop that chose its snapshot by the score would ship epoch 1;
every loop must ship its last epoch (and record how it chose).
"""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("sel") / "birds", images=48, classes=8, size=96,
                                seed=0, progress=False)


def _falling(values):
    """A stand-in for a loop's test-split scorer: the real one's result with `values` (epoch 1
    best) in place of its scores."""
    calls = []

    def wrap(real, keys):
        def scorer(*args, **kwargs):
            out = real(*args, **kwargs)
            v = values[min(len(calls), len(values) - 1)]
            calls.append(v)
            return {**out, **{k: v for k in keys}}
        return scorer
    return wrap, calls


def test_captioner_ships_its_last_epoch_whatever_the_test_recall(birds, tmp_path, monkeypatch):
    from attngan.config import load_captioner_config
    from attngan.training import captioner_loop

    wrap, calls = _falling([0.9, 0.1, 0.05])
    monkeypatch.setattr(captioner_loop, "evaluate_captioner",
                        wrap(captioner_loop.evaluate_captioner, ("recall_all", "val_cider_d")))
    cfg = load_captioner_config("captioner", {"width": 8, "embed_dim": 16, "hidden_dim": 32, "attention_dim": 16,
                                              "batch_size": 8, "eval_images": 8, "max_len": 20})
    run = tmp_path / "cap"
    captioner_loop.train_captioner(cfg, birds, run, device="cpu", max_epochs=2, progress=False, max_steps=1)
    assert calls == [0.9, 0.1]
    meta = json.loads((run / "best" / "config.json").read_text())["metrics"]
    assert meta["epoch"] == 2 and meta["selection"] == captioner_loop.CAPTIONER_SELECTION


def test_damsm_ships_its_last_epoch_whatever_the_test_r_precision(birds, tmp_path, monkeypatch):
    from attngan.config import preset
    from attngan.training import damsm_loop

    wrap, calls = _falling([0.9, 0.1, 0.05])
    monkeypatch.setattr(damsm_loop, "validate", wrap(damsm_loop.validate, ("r_precision",)))
    cfg = preset("tiny")
    cfg.data.workers = 0
    cfg.damsm.batch_size = 8
    run = tmp_path / "damsm"
    damsm_loop.train_damsm(cfg, birds, run, device="cpu", max_epochs=2, progress=False, eval_items=16)
    assert calls == [0.9, 0.1]
    meta = json.loads((run / "best" / "config.json").read_text())["metrics"]
    assert meta["epoch"] == 2 and meta["selection"] == damsm_loop.DAMSM_SELECTION
