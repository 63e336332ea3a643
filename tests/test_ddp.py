"""DDP on the CPU: `torchrun --nproc_per_node=2` (gloo) on the tiny preset.

1. `attngan train-damsm` (1 epoch, the encoders the GAN test uses) and `attngan train` under
   torchrun: both ranks end with bit-identical parameters (BN running statistics are per rank
   without SyncBatchNorm; rank 0's are saved), each rank trains on its own shard, only rank 0
   writes into the run folder, and running the same command again resumes from the saved state.
2. Two processes with batch B each take the same steps as one process with the doubled batch 2B
   (BatchNorm-free networks, since SyncBatchNorm has no CPU implementation; the mismatched-pair
   and DAMSM terms compare items within one process's batch, so the one-process reference scores
   each half of its batch as its own batch and averages, which is what DDP's gradient mean does).

This file is also the torchrun worker: `python tests/test_ddp.py cli|equivalence ...`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = 2          # optimiser steps per launch
BATCH = 4          # per process


# --- Shared by the worker and the test ------------------------------------------------------


def _launch(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """torchrun this file with 2 CPU processes; fails the test with the output on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _strip_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm replaced by Identity: per-sample networks for the equivalence check."""
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            _strip_batchnorm(child)
    return module


def _equivalence_setup(world: int, amp: str = "off"):
    """The same tiny BN-free G, Ds and frozen DAMSM image encoder on every process."""
    from attngan.config import preset
    from attngan.networks import build_discriminators, build_generator, build_image_encoder
    from attngan.training.gan_loop import GANModels

    cfg = preset("tiny")
    cfg.train.batch_size = BATCH * (2 // world)
    torch.manual_seed(0)
    G = _strip_batchnorm(build_generator(cfg, cfg.text.embedding_dim))
    Ds = _strip_batchnorm(build_discriminators(cfg))
    image_encoder = build_image_encoder(cfg).eval().requires_grad_(False)
    cfg.train.amp = amp
    return cfg, GANModels.create(cfg, G, Ds, torch.device("cpu"), world), image_encoder


def _equivalence_batch(cfg, step: int) -> dict[str, torch.Tensor]:
    """The doubled batch (2 x BATCH items) of one step, the same on every process."""
    g = torch.Generator().manual_seed(1000 + step)
    n, nef, T = 2 * BATCH, cfg.text.embedding_dim, 7
    cap_lens = torch.randint(2, T + 1, (n,), generator=g)
    return {
        "reals": [torch.rand(n, 3, s, s, generator=g) * 2 - 1
                  for s in (cfg.data.base_size * 2**i for i in range(cfg.data.branch_num))],
        "words": torch.randn(n, nef, T, generator=g),
        "sent": torch.randn(n, nef, generator=g),
        "mask": torch.arange(T)[None] >= cap_lens[:, None],
        "cap_lens": cap_lens,
        "class_ids": torch.randint(0, 3, (n,), generator=g),
        "z": torch.randn(n, cfg.gan.z_dim, generator=g),
        "ca_noise": torch.randn(n, cfg.gan.condition_dim, generator=g),
    }


def _weights(m) -> dict[str, torch.Tensor]:
    """Parameters and buffers of G, G_ema and the Ds, keyed like the training state."""
    out = {}
    for prefix, net in (("G", m.G), ("G_ema", m.G_ema), ("Ds", m.Ds)):
        out.update({f"{prefix}.{k}": v.detach().clone() for k, v in net.state_dict().items()})
    return out


def _is_bn_statistic(key: str) -> bool:
    # Without SyncBatchNorm each rank's last forward updates its own BN running statistics (DDP
    # re-broadcasts rank 0's before every forward, and rank 0's are the ones saved).
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


# --- Worker side (run by torchrun) ----------------------------------------------------------


def _worker_equivalence(out: Path, amp: str) -> None:
    from attngan.training import distributed as dist
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import gan_step

    torch.set_num_threads(1)
    dist.init()
    rank = dist.get_rank()
    cfg, models, image_encoder = _equivalence_setup(world=2, amp=amp)
    loss = GANLoss(cfg, image_encoder)
    for step in range(STEPS):
        b = _equivalence_batch(cfg, step)
        half = {k: ([x[rank * BATCH:(rank + 1) * BATCH] for x in v] if k == "reals"
                    else v[rank * BATCH:(rank + 1) * BATCH]) for k, v in b.items()}
        gan_step(models, loss, cfg, **half)
    torch.save(_weights(models), out / f"rank{rank}.pt")
    dist.shutdown()


def _worker_cli(spy: Path, watched: Path, argv: list[str]) -> int:
    """`attngan <argv>` with spies: an audit hook that records every file this process creates,
    renames or opens for writing under `watched`, and wrappers that keep the networks of the last
    `gan_step` / DAMSM `validate` call so their weights can be compared across ranks."""
    from attngan import cli
    from attngan.training import damsm_loop, gan_loop

    rank = int(os.environ["RANK"])
    watched = str(watched.resolve())
    writes: list[str] = []
    recording = [True]

    def under_watched(p) -> bool:
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        return isinstance(p, (str, os.PathLike)) and os.path.abspath(os.fspath(p)).startswith(watched)

    def hook(event: str, args) -> None:
        if not recording[0]:
            return
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and under_watched(path):
                writes.append(f"open {path}")
        elif event in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree", "tempfile.mkstemp",
                       "tempfile.mkdtemp"):
            if under_watched(args[1] if event == "os.rename" else args[0]):
                # A rename names its target too: the temporary it publishes is named for its writer.
                writes.append(f"{event} {args[0]}" + (f" -> {args[1]}" if event == "os.rename" else ""))

    sys.addaudithook(hook)
    last: dict = {"reals": []}
    real_step, real_validate = gan_loop.gan_step, damsm_loop.validate

    def spying_step(m, loss, cfg, reals, *a, **kw):
        last["models"] = m
        last["reals"].append(float(reals[-1].sum()))  # which images this rank trained on
        return real_step(m, loss, cfg, reals, *a, **kw)

    def spying_validate(cfg, text_encoder, image_encoder, *a, **kw):
        last["encoders"] = (text_encoder, image_encoder)
        return real_validate(cfg, text_encoder, image_encoder, *a, **kw)

    gan_loop.gan_step, damsm_loop.validate = spying_step, spying_validate
    code = cli.main(argv)
    recording[0] = False
    report = {"writes": writes, "reals": last["reals"]}
    if "models" in last:
        report["weights"] = _weights(last["models"])
    if "encoders" in last:
        te, ie = last["encoders"]
        report["weights"] = {**{f"text.{k}": v for k, v in te.state_dict().items()},
                             **{f"image.{k}": v for k, v in ie.state_dict().items()}}
    torch.save(report, spy / f"rank{rank}.pt")
    return code


def _worker(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "equivalence":
        _worker_equivalence(Path(argv[1]), argv[2])
        return 0
    if mode == "cli":
        return _worker_cli(Path(argv[1]), Path(argv[2]), argv[3:])
    raise SystemExit(f"unknown worker mode {mode}")


# --- Tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    root = tmp_path_factory.mktemp("ddp_data")
    return generate_synth_birds(root / "birds", images=48, classes=8, size=80, seed=0, progress=False)


def _check_ranks(spy: Path, run: Path) -> list[dict]:
    """Rank 0 wrote into `run`, rank 1 wrote nothing there; both hold bit-identical parameters."""
    rank0, rank1 = [torch.load(spy / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert rank1["writes"] == [], rank1["writes"][:5]
    assert rank0["writes"]
    compared = [k for k in rank0["weights"] if not _is_bn_statistic(k)]
    assert len(compared) > 10
    for k in compared:
        assert torch.equal(rank0["weights"][k], rank1["weights"][k]), k
    return [rank0, rank1]


@pytest.fixture(scope="module")
def damsm(data, tmp_path_factory):
    """DAMSM pretrained for one epoch by two processes (the GAN test's encoders)."""
    root = tmp_path_factory.mktemp("ddp_damsm")
    run, spy = root / "run", root / "spy"
    spy.mkdir()
    _launch(["cli", str(spy), str(run), "train-damsm", "--config", "tiny", "--data", str(data),
             "--out", str(run), "--epochs", "1", "--device", "cpu", "--set", "data.workers=0",
             "--set", "damsm.batch_size=8"])
    _check_ranks(spy, run)
    assert (run / "best" / "text_encoder.safetensors").is_file()
    return run


def test_torchrun_train_ranks_agree_rank0_writes_and_resume(data, damsm, tmp_path):
    from attngan.training.checkpoint import load_training_state

    run = tmp_path / "run"
    per_launch = STEPS * BATCH * 2 / 1000
    args = ["train", "--config", "tiny", "--data", str(data), "--damsm", str(damsm), "--out", str(run),
            "--device", "cpu", "--set", f"train.batch_size={BATCH}", "--set", "data.workers=0",
            "--set", "train.sample_kimg=1", "--set", "train.log_kimg=0.008"]
    spies = []
    for launch in (1, 2):  # the second launch is the same command with a larger budget: a resume
        spy = tmp_path / f"spy{launch}"
        spy.mkdir()
        proc = _launch(["cli", str(spy), str(run), *args, "--kimg", str(per_launch * launch)])
        spies.append(_check_ranks(spy, run))
        state = load_training_state(run / "state.pt")
        assert state["step"] == STEPS * launch
        assert state["images_seen"] == STEPS * launch * BATCH * 2
        assert len(state["rng"]) == 2  # one RNG state per rank, for an exact resume
        if launch == 2:
            assert "resuming from" in proc.stdout and proc.stdout.count("resuming from") == 1
        rank0, rank1 = spies[-1]
        # Each rank trained on its own shard of the data; the state saved is rank 0's networks.
        assert len(rank0["reals"]) == STEPS and rank0["reals"] != rank1["reals"]
        assert any("state.pt" in w for w in rank0["writes"])
        for prefix, key in (("G", "G"), ("G_ema", "G_ema"), ("Ds", "Ds")):
            for k, v in state[key].items():
                assert torch.equal(v, rank0["weights"][f"{prefix}.{k}"]), f"{prefix}.{k}"
    # The resumed launch continued training: G moved between the two saved states.
    first, second = spies[0][0]["weights"], spies[1][0]["weights"]
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith("G."))
    assert (run / "model" / "generator.safetensors").is_file()
    assert (run / "log.jsonl").read_text().count("\n") >= 1


def test_two_processes_equal_one_process_with_doubled_batch(tmp_path, amp):
    from attngan.losses import GANLoss
    from attngan.training.gan_loop import gan_step

    _launch(["equivalence", str(tmp_path), amp])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    class HalvesLoss(GANLoss):
        # The one-process objective that DDP's gradient mean equals: each half of the doubled
        # batch is scored as its own batch (as each rank does), and the halves are averaged.
        def d_phase(self, D, real, fake, sent):
            parts = [super(HalvesLoss, self).d_phase(D, *xs)
                     for xs in zip(real.chunk(2), fake.chunk(2), sent.chunk(2))]
            return {k: (parts[0][k] + parts[1][k]) / 2 for k in parts[0]}

        def g_phase(self, Ds, fakes, words, sent, cap_lens, class_ids, mu, logvar, *, amp):
            halves = [[x.chunk(2)[h] for x in (words, sent, cap_lens, class_ids, mu, logvar)]
                      for h in (0, 1)]
            parts = [super(HalvesLoss, self).g_phase(Ds, [f.chunk(2)[h] for f in fakes], *halves[h], amp=amp)
                     for h in (0, 1)]
            return {k: (parts[0][k] + parts[1][k]) / 2 for k in parts[0]}

    torch.set_num_threads(1)
    cfg, models, image_encoder = _equivalence_setup(world=1, amp=amp)
    loss = HalvesLoss(cfg, image_encoder)
    for step in range(STEPS):
        gan_step(models, loss, cfg, **_equivalence_batch(cfg, step))
    reference = _weights(models)
    start = _weights(_equivalence_setup(world=1, amp=amp)[1])
    diff = move = 0.0
    for k, v in reference.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), f"ranks differ at {k}"
        diff += float((ranks[0][k] - v).abs().sum())
        move += float((v - start[k]).abs().sum())
        if amp == "off":
            # Adam divides by sqrt(v): its first step moves a weight by lr whatever the gradient's
            # size, so a gradient of ~0 whose rounding differs can land a weight up to an lr-sized
            # step apart. Hence: no weight further apart than one step, almost all within 5e-5,
            # and the mean difference held tight.
            d = (ranks[0][k] - v).abs()
            assert float(d.max()) <= max(cfg.train.lr_g, cfg.train.lr_d), k
            assert float((d > 5e-5).float().mean()) <= 1e-3, k
            assert float(d.mean()) < 1e-6, k
    # bf16, and oneDNN's channels-last kernels of the frozen image encoder (float32 too), round a
    # half batch otherwise than the doubled batch, and Adam turns a gradient's rounding into a
    # step of lr's size, so the weights agree in the aggregate: two processes differ from one by
    # a small fraction of how far training moved them (a rank on the wrong half of the data, or
    # out of step, differs by a large one).
    assert diff < (1e-3 if amp == "off" else 0.05) * move, (diff, move)  # measured: 1.4e-4, 7e-3
    # The check has teeth: Adam moved some weights by 20x the tolerance or more (~4e-4 here).
    moved = max(float((reference[k] - start[k]).abs().max()) for k in reference if k.startswith("G."))
    assert moved > 1e-4


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
