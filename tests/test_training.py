"""DAMSM and AttnGAN training loops on a tiny SynthBirds set: files, resume, what gets updated."""

from __future__ import annotations

import json

import pytest
import torch

from attngan.config import preset


def tiny_cfg(amp: str = "off"):
    cfg = preset("tiny")
    cfg.train.amp = amp
    cfg.data.workers = 0
    cfg.damsm.batch_size = 8
    cfg.damsm.snapshot_epochs = 1
    cfg.train.batch_size = 4
    cfg.train.log_kimg = 0.004
    cfg.train.sample_kimg = 1.0
    cfg.train.snapshot_kimg = 1.0
    return cfg


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    out = tmp_path_factory.mktemp("synth") / "birds"
    generate_synth_birds(out, images=48, classes=8, size=96, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def damsm_run(synth, tmp_path_factory):
    from attngan.training.damsm_loop import train_damsm

    out = tmp_path_factory.mktemp("damsm") / "run"
    train_damsm(tiny_cfg(), synth, out, device="cpu", max_epochs=1, progress=False, eval_items=64)
    return out


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("reset_optimizer", [True, False])
def test_damsm_writes_snapshots_and_resumes_exactly(synth, damsm_run, tmp_path, reset_optimizer):
    import shutil

    from attngan.training.checkpoint import load_training_state
    from attngan.io import damsm_folder, load_damsm
    from attngan.training.damsm_loop import train_damsm

    assert (damsm_run / "best" / "text_encoder.safetensors").is_file()
    assert not (damsm_run / "last").exists()  # one snapshot folder, written once per epoch
    rows = [json.loads(x) for x in (damsm_run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and 0.0 <= rows[-1]["r_precision"] <= 1.0
    # Progress in images, as the GAN counts it: one epoch of the 8-image batches (drop_last).
    assert rows[-1]["kimg"] > 0 and rows[-1]["kimg"] * 1000 % 8 == 0
    assert list((damsm_run / "attention").glob("*.png"))
    cfg, vocab, te, ie = load_damsm(damsm_run)
    assert cfg.damsm.backbone == "small" and len(vocab) > 10

    # Two epochs in one go == one epoch, stop, resume for the second (with Adam re-created per
    # epoch as the original, and with one Adam whose moments must travel in state.pt).
    cfg = tiny_cfg()
    cfg.damsm.reset_optimizer = reset_optimizer
    full, part = tmp_path / "full", tmp_path / "part"
    train_damsm(cfg, synth, full, device="cpu", max_epochs=2, progress=False, eval_items=16)
    train_damsm(cfg, synth, part, device="cpu", max_epochs=1, progress=False, eval_items=16)
    # As a run folder of earlier releases, which wrote last/ beside best/: resuming it leaves no
    # stale last/ behind, and best/ is what the run folder names.
    shutil.copytree(part / "best", part / "last")
    train_damsm(cfg, synth, part, device="cpu", max_epochs=2, progress=False, eval_items=16)
    assert not (part / "last").exists() and damsm_folder(part) == part / "best"
    a, b = load_training_state(full / "state.pt"), load_training_state(part / "state.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["images_seen"] == b["images_seen"] == 2 * rows[-1]["kimg"] * 1000
    assert a["data"] == b["data"] == str(synth.resolve())
    assert (a["optimizer"] is None) == reset_optimizer
    for k in a["text_encoder"]:
        torch.testing.assert_close(a["text_encoder"][k], b["text_encoder"][k], atol=1e-6, rtol=0)
    for k in a["image_encoder"]:
        torch.testing.assert_close(a["image_encoder"][k], b["image_encoder"][k], atol=1e-6, rtol=0)


def test_training_loop_runs_on_what_it_is_given(synth, damsm_run, tmp_path, amp):
    """The GAN loop builds nothing itself: given networks, frozen encoders and datasets it trains,
    snapshots and resumes; each D is held once (its optimiser steps the weights the D step and the
    G step both call)."""
    from attngan.data.dataset import open_split
    from attngan.io import load_damsm, with_damsm_sections
    from attngan.networks import build_discriminators, build_generator
    from attngan.training.checkpoint import load_training_state
    from attngan.training.gan_loop import FrozenDAMSM, GANModels, training_loop

    dcfg, vocab, te, ie = load_damsm(damsm_run)
    cfg = with_damsm_sections(tiny_cfg(amp), dcfg)
    train_ds = open_split(synth, "train", cfg.data, vocab, train=True)
    test_ds = open_split(synth, "test", cfg.data, vocab, train=False)
    dev = torch.device("cpu")

    def models() -> GANModels:
        torch.manual_seed(0)
        return GANModels.create(cfg, build_generator(cfg, cfg.text.embedding_dim), build_discriminators(cfg), dev)

    m = models()
    for c, D in zip(m.critics, m.Ds):
        assert c.D is D and c.d_step is D and c.g_step is D  # one process, no compile: the plain D
        assert [p for g in c.opt.param_groups for p in g["params"]] == list(D.parameters())
    encoders = FrozenDAMSM(vocab, te.eval().requires_grad_(False), ie.eval().requires_grad_(False))
    out = tmp_path / "loop"
    res = training_loop(cfg, m, encoders, train_ds, test_ds, out, dev, progress=False, max_steps=2)
    assert res["step"] == 2 and (out / "model" / "generator.safetensors").is_file()
    # A fresh set of models resumes from the state the loop wrote and holds its weights.
    m2 = models()
    training_loop(cfg, m2, encoders, train_ds, test_ds, out, dev, progress=False, max_steps=2)
    st = load_training_state(out / "state.pt", "attngan")
    for key, module in (("G", m2.G), ("G_ema", m2.G_ema), ("Ds", m2.Ds)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, st[key][k]), f"{key}.{k}"


def test_gan_step_updates_g_and_d_but_not_the_encoders(synth, damsm_run, tmp_path, amp):
    from attngan.pipeline import AttnGANPipeline
    from attngan.training.checkpoint import load_training_state
    from attngan.io import load_damsm
    from attngan.training.gan_loop import train_gan

    cfg = tiny_cfg(amp)
    out = tmp_path / "gan"
    train_gan(cfg, synth, damsm_run, out, device="cpu", progress=False, max_steps=1)
    s1 = load_training_state(out / "state.pt")
    assert s1["step"] == 1 and s1["images_seen"] == cfg.train.batch_size
    train_gan(cfg, synth, damsm_run, out, device="cpu", progress=False, max_steps=2)  # one more step
    s2 = load_training_state(out / "state.pt")
    # Every trainable parameter of G and of every D moved in that iteration.
    for key in ("G", "Ds"):
        frozen = [k for k, v in s2[key].items() if v.is_floating_point() and "running" not in k
                  and torch.equal(v, s1[key][k])]
        assert not frozen, f"{key} parameters not updated: {frozen[:5]}"
    # EMA: parameters averaged (decay), BN buffers copied from the live G.
    d = cfg.train.ema_decay
    for k, v in s2["G_ema"].items():
        if not v.is_floating_point():
            continue
        expected = s2["G"][k] if "running" in k else d * s1["G_ema"][k] + (1 - d) * s2["G"][k]
        torch.testing.assert_close(v, expected, atol=1e-6, rtol=0)
    # The frozen DAMSM encoders saved into the model folder are identical to the DAMSM's.
    _, _, te, ie = load_damsm(damsm_run)
    pipe = AttnGANPipeline.from_pretrained(out / "model", device="cpu")
    for a, b in ((pipe.text_encoder, te), (pipe.image_encoder, ie)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    out_img = pipe(["a bird with wings that are black and a white belly"], seed=0)
    assert out_img.images[-1].shape[-1] == cfg.data.image_size


def test_gan_kill_and_resume_matches_uninterrupted(synth, damsm_run, tmp_path, amp):
    from attngan.training.checkpoint import load_training_state
    from attngan.training.gan_loop import train_gan

    cfg = tiny_cfg(amp)
    full, part = tmp_path / "full", tmp_path / "part"
    train_gan(cfg, synth, damsm_run, full, device="cpu", progress=False, max_steps=4)
    train_gan(cfg, synth, damsm_run, part, device="cpu", progress=False, max_steps=2)
    train_gan(cfg, synth, damsm_run, part, device="cpu", progress=False, max_steps=4)
    a, b = load_training_state(full / "state.pt"), load_training_state(part / "state.pt")
    assert a["step"] == b["step"] == 4 and a["images_seen"] == b["images_seen"] == 16
    assert a["data"] == str(synth.resolve())
    for key in ("G", "G_ema", "Ds"):
        for k in a[key]:
            torch.testing.assert_close(a[key][k].float(), b[key][k].float(), atol=1e-6, rtol=0,
                                       msg=lambda m: f"{key}.{k}: {m}")
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert log and all(v == v for v in log[-1].values())  # no NaN
    assert (full / "samples" / "final.png").is_file()


def test_tiny_damsm_overfits_32_pairs(synth):
    """Retrieval on 32 fixed SynthBirds pairs reaches 100% (both directions) in a few dozen steps."""
    from attngan.data.dataset import make_loader
    from attngan.networks import build_image_encoder, build_text_encoder
    from attngan.training.damsm_loop import _damsm_losses, _datasets

    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.damsm.small_width = 16
    vocab, train_ds, _ = _datasets(cfg, synth)
    te, ie = build_text_encoder(cfg, len(vocab)), build_image_encoder(cfg)
    opt = torch.optim.Adam(list(te.parameters()) + list(ie.projection_parameters()), lr=2e-3,
                           betas=cfg.damsm.betas)
    batch = next(iter(make_loader(train_ds, 32, shuffle=True, workers=0, drop_last=True, seed=0)))
    batch["class_ids"] = torch.arange(32)  # every pair is its own class: all others are negatives
    first = None
    for _ in range(120):
        terms, *_ = _damsm_losses(cfg, te, ie, batch, "cpu")
        loss = sum(terms.values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(te.parameters(), cfg.damsm.rnn_grad_clip)
        opt.step()
    te.eval()
    ie.eval()
    with torch.no_grad():
        _, sent = te(batch["captions"], batch["cap_lens"])
        _, code = ie(batch["images"][-1])
    sim = torch.nn.functional.normalize(code, dim=1) @ torch.nn.functional.normalize(sent, dim=1).T
    assert float(loss.detach()) < 0.2 * first
    assert (sim.argmax(1) == torch.arange(32)).all()  # image -> its caption
    assert (sim.argmax(0) == torch.arange(32)).all()  # caption -> its image


def test_damsm_trains_with_bf16_and_channels_last(synth, tmp_path):
    from attngan.errors import AttnGANError
    from attngan.io import load_damsm
    from attngan.training.damsm_loop import train_damsm

    cfg = tiny_cfg()
    cfg.damsm.amp, cfg.damsm.channels_last = "bf16", True
    out = train_damsm(cfg, synth, tmp_path / "run", device="cpu", max_epochs=1, progress=False,
                      eval_items=64)
    assert out["bad_steps"] == 0
    assert all(v == v for v in out.values())  # no NaN
    _, _, te, ie = load_damsm(tmp_path / "run" / "best")  # channels_last weights saved and loaded
    assert all(p.dtype == torch.float32 for p in ie.parameters())
    cfg.damsm.amp = "fp8"
    with pytest.raises(AttnGANError, match="damsm.amp"):
        train_damsm(cfg, synth, tmp_path / "bad", device="cpu", max_epochs=1, progress=False)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_saved_weights_and_folders_get_normal_permissions(tiny_model_dir, tmp_path):
    # torch.save, safetensors and mkdtemp leave 0600/0700 entries; saved models must be readable by
    # others as any file written under the user's umask would be (shared machines, serving users).
    import os
    import stat

    import attngan.io as ckpt
    from attngan.pipeline import AttnGANPipeline

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    pipe = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu", fuse=False)
    old = os.umask(0o022)
    try:
        ckpt.atomic_torch_save({"a": 1}, tmp_path / "state.pt")
        ckpt.atomic_save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
        folder = ckpt.save_model_folder(tmp_path / "model", pipe.config, pipe.vocab, pipe.generator,
                                        pipe.text_encoder, pipe.image_encoder)
    finally:
        os.umask(old)
    assert mode(tmp_path / "state.pt") == 0o644
    assert mode(tmp_path / "w.safetensors") == 0o644
    assert mode(folder) == 0o755
    assert sorted({mode(p) for p in folder.iterdir()}) == [0o644]


def test_a_two_stage_model_grows_into_three_stages(synth, damsm_run, tmp_path):
    # `train --init` with a model of fewer stages: the trained stages load as they are, each new
    # refinement stage and image head start as copies of the last trained ones.
    from attngan.io import load_safetensors
    from attngan.training.checkpoint import load_training_state
    from attngan.training.gan_loop import train_gan

    small = tmp_path / "small"
    train_gan(tiny_cfg(), synth, damsm_run, small, device="cpu", progress=False, max_steps=1)
    cfg = preset("synthbirds-128")
    cfg.data.workers, cfg.train.batch_size = 0, 4
    assert cfg.data.branch_num == 3 and cfg.data.image_size == 128
    grown = tmp_path / "grown"
    train_gan(cfg, synth, damsm_run, grown, device="cpu", progress=False, max_steps=1,
              init_generator=small / "model")
    src = load_safetensors(small / "model" / "generator.safetensors")
    st = load_training_state(grown / "state.pt")
    # After one step every weight moved a little from where it started; compare with Adam's
    # largest possible first step (lr) as the tolerance. (BN statistics move by the batch's.)
    tol = 2 * cfg.train.lr_g
    weights = {k: v for k, v in src.items() if "running_" not in k and "num_batches" not in k}
    for k, v in weights.items():
        torch.testing.assert_close(st["G"][k].float(), v.float(), atol=tol, rtol=0, msg=lambda m: f"{k}: {m}")
        if k.startswith(("stage1.", "head1.")):
            twin = k.replace("stage1.", "stage2.").replace("head1.", "head2.")
            torch.testing.assert_close(st["G"][twin].float(), v.float(), atol=tol, rtol=0)
    assert any(k.startswith("stage2.") for k in st["G"]) and not any(k.startswith("stage2.") for k in src)


def test_grow_state_leaves_a_same_size_model_and_foreign_weights_alone():
    from attngan.errors import AttnGANError
    from attngan.networks import build_generator
    from attngan.io import load_state
    from attngan.training.gan_loop import grow_state

    cfg = preset("tiny")
    G = build_generator(cfg, cfg.text.embedding_dim)
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    assert grow_state(G, sd) == [] and sd.keys() == G.state_dict().keys()
    wide = preset("tiny")
    wide.gan.gf_dim = 32
    wide.data.branch_num = 3
    big = build_generator(wide, wide.text.embedding_dim)
    assert grow_state(big, sd) == ["stage2", "head2"]
    with pytest.raises(AttnGANError, match="shape"):
        load_state(big, sd, "generator")  # other widths: one clear error, not a silent partial load


def test_a_first_run_on_a_fresh_data_folder_trains_what_a_run_with_the_cache_built_trains(synth, damsm_run,
                                                                                          tmp_path):
    """Building the image cache must draw from no global RNG: the run that builds it (the first on
    a data folder) trains the weights of a run that finds it built, for the GAN and the captioner."""
    import hashlib
    import shutil

    from attngan.config import load_captioner_config
    from attngan.training.captioner_loop import train_captioner
    from attngan.training.gan_loop import train_gan

    fresh = [tmp_path / "a", tmp_path / "b"]
    for d in fresh:
        shutil.copytree(synth, d, ignore=shutil.ignore_patterns("cache"))
    cfg = tiny_cfg()
    cfg.data.cache = True
    cap = load_captioner_config("captioner", {"width": 8, "embed_dim": 16, "hidden_dim": 16, "attention_dim": 16,
                                              "batch_size": 8, "eval_images": 4, "max_len": 30})
    cap.data.workers, cap.data.cache = 0, True

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    gan, captioner = [], []
    # a: the first run builds the cache, the second finds it; b: another first run.
    for i, data in enumerate([fresh[0], fresh[0], fresh[1]]):
        built = (data / "cache").is_dir()
        train_gan(cfg, data, damsm_run, tmp_path / f"gan{i}", device="cpu", progress=False, max_steps=2)
        train_captioner(cap, data, tmp_path / f"cap{i}", device="cpu", max_epochs=1, progress=False, max_steps=2)
        assert built == (i == 1) and any((data / "cache").glob("*.u8"))
        gan.append(digest(tmp_path / f"gan{i}" / "model" / "generator.safetensors"))
        captioner.append(digest(tmp_path / f"cap{i}" / "best" / "captioner.safetensors"))
    assert gan[0] == gan[1] == gan[2]
    assert captioner[0] == captioner[1] == captioner[2]


def test_bird_damsm_pretrains_its_frozen_inception_trunk_channels_last(synth, tmp_path, monkeypatch):
    # The bird preset's own DAMSM path, end to end: Inception weights from a torchvision-layout
    # file, the trunk channels-last (the default: it runs forward only), only the projections move.
    from torchvision.models import inception_v3

    from attngan.io import load_damsm
    from attngan.networks.damsm import ImageEncoder
    from attngan.training.damsm_loop import train_damsm

    torch.manual_seed(1)
    weights = tmp_path / "inception_v3_google-test.pth"
    state = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    torch.save(state, weights)
    cfg = preset("bird")
    assert cfg.damsm.backbone == "inception" and cfg.damsm.channels_last
    cfg.data.workers = 0
    cfg.damsm.inception_weights = str(weights)
    cfg.damsm.batch_size, cfg.damsm.snapshot_epochs = 8, 1
    seen, initial = [], {}
    forward = ImageEncoder.forward

    def recording(self, images):
        if not seen:
            initial["global_proj"] = self.global_proj.weight.detach().clone()
        seen.append((images.is_contiguous(memory_format=torch.channels_last),
                     self.trunk.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)))
        return forward(self, images)

    monkeypatch.setattr(ImageEncoder, "forward", recording)
    out = train_damsm(cfg, synth, tmp_path / "run", device="cpu", max_epochs=1, progress=False, eval_items=16)
    assert out["bad_steps"] == 0 and all(v == v for v in out.values() if isinstance(v, float))
    assert seen and all(img and w for img, w in seen)  # every training step ran NHWC
    _, _, _, ie = load_damsm(tmp_path / "run" / "best")
    trunk = ie.trunk.state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight"):
        assert torch.equal(trunk[key], state[key])  # frozen: the loaded weights, unchanged
    assert not torch.equal(ie.global_proj.weight, initial["global_proj"])  # the projections trained
