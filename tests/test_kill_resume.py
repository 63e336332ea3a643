"""`attngan train` SIGKILLed at random moments (seeded) and run again until it ends: the result
equals an uninterrupted run's, the logs hold each row once, and the run folder holds only its final
files (no temporaries, no lock)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow

KIMG = 0.12  # 30 steps of 4 images: a snapshot every 2 steps, so kills land in and between writes
SETS = ["--set", "data.workers=0", "--set", "train.batch_size=4", "--set", "train.log_kimg=0.004",
        "--set", "train.snapshot_kimg=0.008", "--set", "train.sample_kimg=0.04"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from attngan.config import preset
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.training.damsm_loop import train_damsm

    root = tmp_path_factory.mktemp("kill")
    synth = generate_synth_birds(root / "birds", images=48, classes=8, size=96, seed=0, progress=False)
    cfg = preset("tiny")
    cfg.data.workers, cfg.damsm.batch_size = 0, 8
    train_damsm(cfg, synth, root / "damsm", device="cpu", max_epochs=1, progress=False, eval_items=16)
    return synth, root / "damsm"


def _train(data, out) -> subprocess.Popen:
    synth, damsm = data
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "attngan", "train", "--config", "tiny",
                             "--data", str(synth), "--damsm", str(damsm), "--out", str(out),
                             "--kimg", str(KIMG), "--device", "cpu", *SETS],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _log_rows(path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    from attngan.training.checkpoint import load_training_state

    full = tmp_path / "full"
    p = _train(data, full)
    assert p.wait(timeout=300) == 0, p.stderr.read()

    rng = random.Random(0)
    part = tmp_path / "part"
    kills = 0
    for _ in range(3):
        p = _train(data, part)
        seen = _log_rows(part / "log.jsonl")
        deadline = time.time() + 120
        # Wait until this run has trained past where the last one was killed, then kill it at a
        # random moment of the next few steps (a snapshot is written every second step).
        while p.poll() is None and _log_rows(part / "log.jsonl") <= seen and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
    assert kills >= 2, "the runs ended before they could be killed: make KIMG larger"
    p = _train(data, part)
    assert p.wait(timeout=300) == 0, p.stderr.read()

    a, b = load_training_state(full / "state.pt"), load_training_state(part / "state.pt")
    assert a["step"] == b["step"] == int(KIMG * 1000) // 4
    for key in ("G", "G_ema", "Ds"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k].float(), b[key][k].float(), atol=1e-6, rtol=0,
                                       msg=lambda m: f"{key}.{k}: {m}")
    rows = [json.loads(x) for x in (part / "log.jsonl").read_text().splitlines()]
    kimg = [r["kimg"] for r in rows]
    assert kimg == sorted(set(kimg)), "log rows repeated or out of order after the resumes"
    assert kimg == [json.loads(x)["kimg"] for x in (full / "log.jsonl").read_text().splitlines()]
    hidden = [str(p.relative_to(part)) for p in part.rglob(".*")]
    assert hidden == [], f"left behind: {hidden}"
    assert sorted(p.name for p in part.iterdir()) == sorted(p.name for p in full.iterdir())
