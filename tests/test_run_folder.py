"""Run folders: one writer at a time, temporaries of killed runs removed, logs cut back to the
snapshot a run resumes from, resumes that refuse a changed network or batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from attngan.cli import main
from attngan.errors import AttnGANError
from attngan.rundir import (LOCK_NAME, check_resume_config, claim_run_dir, clean_temporaries,
                            is_temporary, truncate_jsonl)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


# What a user may keep in a folder they point --out at: hidden names that look like backups or
# temporaries of other tools, and one that looks like the project's own but is not (a name too
# long), and a subfolder the run does not write.
USER_FILES = (".bashrc.old", ".config.backup_1", ".notes.old", ".env.20240101", ".state.pt.abcd1234.tmp",
              "sub/.env.20240101", "sub/.notes.old", ".attngan-tmp-12-abcdefghij.tmp", ".attngan-tmp-x-abcd1234.tmp",
              ".attngan-tmp-12-abcd1234")
USER_DIRS = (".venv.old", ".cache.abcd1234")


def _plant_user_files(folder) -> None:
    for name in USER_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("mine")
    for name in USER_DIRS:
        (folder / name).mkdir(parents=True)
        (folder / name / "keep.txt").write_text("mine")


def _user_files_intact(folder) -> bool:
    return (all((folder / n).read_text() == "mine" for n in USER_FILES)
            and all((folder / n / "keep.txt").read_text() == "mine" for n in USER_DIRS))


def test_only_the_temporaries_of_dead_writers_are_removed_and_only_where_runs_write(tmp_path):
    from attngan.fileio import TMP_PREFIX, temporary_writer, tmp_dir_beside, tmp_path_beside

    dead = _dead_pid()
    mine = [tmp_path_beside(tmp_path / "state.pt"), tmp_dir_beside(tmp_path / "model")]
    assert [temporary_writer(p.name) for p in mine] == [os.getpid()] * 2
    (tmp_path / "samples").mkdir()
    stale = [tmp_path / f"{TMP_PREFIX}{dead}-abcd_123.tmp", tmp_path / "samples" / f"{TMP_PREFIX}{dead}-x1y2z3w4.tmp"]
    stale[0].mkdir()
    (stale[0] / "generator.safetensors").write_text("half")
    stale[1].write_text("half")
    # Outside the folder and the run's own subfolders nothing is looked at, not even a real one.
    (tmp_path / "sub").mkdir()
    elsewhere = tmp_path / "sub" / f"{TMP_PREFIX}{dead}-abcd_123.tmp"
    elsewhere.write_text("half")
    sleeper = _sleeper()
    try:
        live = tmp_path / f"{TMP_PREFIX}{sleeper.pid}-livelive.tmp"
        live.write_text("being written")
        _plant_user_files(tmp_path)
        assert sorted(clean_temporaries(tmp_path)) == sorted(stale)
        assert live.exists() and elsewhere.exists() and all(p.exists() for p in mine)
        assert _user_files_intact(tmp_path)
        # A run that has just taken the lock counts its own PID as dead: the name is a reused PID's.
        assert sorted(clean_temporaries(tmp_path, own_are_stale=True)) == sorted(mine)
        assert live.exists() and _user_files_intact(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert clean_temporaries(tmp_path) == [live]
    assert not is_temporary(LOCK_NAME) and not any(is_temporary(n.split("/")[-1]) for n in USER_FILES)


def test_lock_refuses_a_live_writer_and_takes_over_from_a_killed_one(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        from attngan.rundir import claim_run_dir
        with claim_run_dir({str(run)!r}):
            child = os.fork()  # as a DataLoader worker: it must not keep the lock alive
            if child == 0:
                time.sleep(60)
                os._exit(0)
            print("held", child, flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        word, child = holder.stdout.readline().split()
        assert word == "held"
        with pytest.raises(AttnGANError, match=f"in use by PID {holder.pid}"):
            with claim_run_dir(run):
                pass
        (run / f".attngan-tmp-{holder.pid}-abcd1234.tmp").write_text("half")
    finally:
        holder.kill()  # SIGKILL: no cleanup of its own; the kernel drops its lock
        holder.wait()
    try:
        assert (run / LOCK_NAME).exists()
        with claim_run_dir(run) as removed:  # while the forked child still lives
            assert [p.name for p in removed] == [f".attngan-tmp-{holder.pid}-abcd1234.tmp"]
            assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    finally:
        if child:
            os.kill(int(child), 9)
    assert sorted(p.name for p in run.iterdir()) == []


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with claim_run_dir(tmp_path / "new"):
            raise RuntimeError("bad data")
    assert not (tmp_path / "new").exists()


def test_truncate_jsonl_keeps_rows_up_to_the_snapshot(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"kimg": k}) + "\n" for k in (1, 2, 3, 4)) + '{"kimg": 5, "st')
    assert truncate_jsonl(log, lambda r: r["kimg"] <= 2) == 3
    assert [json.loads(x)["kimg"] for x in log.read_text().splitlines()] == [1, 2]
    assert truncate_jsonl(log, lambda r: r["kimg"] <= 2) == 0
    assert truncate_jsonl(tmp_path / "missing.jsonl", lambda r: True) == 0


def test_resume_config_check():
    saved = {"seed": 0, "gan": {"gf_dim": 16}, "train": {"batch_size": 4, "total_kimg": 10.0,
                                                         "betas": [0.5, 0.999]}}
    same = json.loads(json.dumps(saved))
    same["train"]["betas"] = (0.5, 0.999)  # a tuple in the live config, a list in the JSON
    assert check_resume_config(saved, same, ("gan", "train.batch_size"), "run") == []
    more = json.loads(json.dumps(saved))
    more["train"]["total_kimg"] = 20.0
    assert check_resume_config(saved, more, ("gan", "train.batch_size"), "run") == [
        "train.total_kimg: 10.0 -> 20.0"]
    for key, section, value in (("gan.gf_dim", "gan", 8), ("train.batch_size", "train", 8)):
        bad = json.loads(json.dumps(saved))
        bad[section][key.split(".")[1]] = value
        with pytest.raises(AttnGANError, match=f"{key} was .* and is now {value}"):
            check_resume_config(saved, bad, ("gan", "train.batch_size"), "run")


def test_state_of_the_wrong_kind_is_named(tmp_path):
    from attngan.io import atomic_torch_save
    from attngan.training.checkpoint import load_training_state

    atomic_torch_save({"text_encoder": {}, "epoch": 1}, tmp_path / "state.pt")  # an older DAMSM state
    with pytest.raises(AttnGANError, match="is a DAMSM .* training state, not an AttnGAN"):
        load_training_state(tmp_path / "state.pt", "attngan")
    assert load_training_state(tmp_path / "state.pt", "damsm")["epoch"] == 1
    atomic_torch_save({"kind": "attngan", "G": {}}, tmp_path / "state.pt")
    with pytest.raises(AttnGANError, match="is an AttnGAN .* not a DAMSM"):
        load_training_state(tmp_path / "state.pt", "damsm")
    atomic_torch_save([1, 2], tmp_path / "state.pt")
    with pytest.raises(AttnGANError, match="not an attngan training state"):
        load_training_state(tmp_path / "state.pt", "attngan")


def test_synth_birds_removes_killed_runs_staging_and_restores_a_half_swapped_set(tmp_path):
    from attngan.data.synth_birds import generate_synth_birds

    dead = _dead_pid()
    stale = tmp_path / f".birds.tmp-{dead}"
    (stale / "images").mkdir(parents=True)
    old = tmp_path / f".other.old-{dead}"  # killed between the two renames: 'other' is gone
    old.mkdir()
    (old / "synth_birds.json").write_text("{}")
    live = tmp_path / f".birds.tmp-{os.getppid()}"  # a live process's staging folder stays
    live.mkdir()
    generate_synth_birds(tmp_path / "birds", images=12, classes=4, size=32, progress=False)
    assert not stale.exists() and live.exists()
    generate_synth_birds(tmp_path / "other2", images=12, classes=4, size=32, progress=False)
    assert old.exists()  # another output's leftovers are not this run's business
    generate_synth_birds(tmp_path / "other", images=12, classes=4, size=32, overwrite=True,
                         progress=False)
    assert not old.exists() and (tmp_path / "other" / "synth_birds.json").stat().st_size > 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [live.name]


def test_unreadable_test_images_warn_by_name_and_never_abort(tmp_path):
    from attngan.config import preset
    from attngan.data.dataset import TextImageDataset
    from attngan.data.synth_birds import generate_synth_birds
    from attngan.data.vocab import load_vocab

    root = generate_synth_birds(tmp_path / "birds", images=24, classes=4, size=32, progress=False)
    cfg = preset("tiny").data
    cfg.max_bad_fraction = 0.0
    vocab = load_vocab(root)
    test = TextImageDataset(root, "test", cfg, vocab, train=False)
    broken = root / "CUB_200_2011" / "images" / f"{test.keys[0]}.jpg"
    broken.write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = test[0]
    assert item["key"] == test.keys[1]
    assert any(test.keys[0] in str(w.message) and "replaced" in str(w.message) for w in caught)
    train = TextImageDataset(root, "train", cfg, vocab, train=True)
    with pytest.raises(AttnGANError, match="unreadable"):
        train.note_bad([train.keys[0]])


# --- The CLI ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("synth") / "birds", images=48, classes=8,
                                size=96, seed=0, progress=False)


@pytest.fixture(scope="module")
def damsm_run(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("damsm") / "run"
    assert main(["train-damsm", "--config", "tiny", "--data", str(synth), "--out", str(out),
                 "--set", "data.workers=0", "--set", "damsm.batch_size=8", "--epochs", "1"]) == 0
    return out


GAN_SETS = ["--set", "data.workers=0", "--set", "train.batch_size=4", "--set", "train.log_kimg=0.004",
            "--set", "train.snapshot_kimg=0.008", "--set", "train.sample_kimg=1"]


def _train_argv(synth, damsm_run, out, kimg, *extra):
    return ["train", "--config", "tiny", "--data", str(synth), "--damsm", str(damsm_run),
            "--out", str(out), "--kimg", str(kimg), *GAN_SETS, *extra]


def test_resume_refuses_a_changed_shape_or_batch(synth, damsm_run, tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(_train_argv(synth, damsm_run, out, 0.008)) == 0
    before = sorted(p.name for p in out.rglob("*"))
    state = (out / "state.pt").read_bytes()
    capsys.readouterr()
    for extra, key in ((["--set", "gan.gf_dim=8"], "gan.gf_dim"),
                       (["--set", "train.batch_size=8"], "train.batch_size")):
        rc = main(_train_argv(synth, damsm_run, out, 0.016, *extra))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"{key} was" in err[0], err
    assert sorted(p.name for p in out.rglob("*")) == before and (out / "state.pt").read_bytes() == state
    # A longer run is a change the state can continue under: said, not refused.
    assert main(_train_argv(synth, damsm_run, out, 0.016)) == 0
    assert "train.total_kimg: 0.008 -> 0.016" in capsys.readouterr().out


def test_a_damsm_state_in_a_gan_run_folder_is_named(synth, damsm_run, capsys):
    rc = main(_train_argv(synth, damsm_run, damsm_run, 0.008))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a DAMSM" in err[0] and "Traceback" not in err[0], err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--seed", "abc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "invalid int value: 'abc'" in err[0], err


def test_a_damsm_run_whose_best_was_chosen_on_the_test_split_loads_last(tmp_path):
    import shutil

    from attngan.io import damsm_folder

    shipped = damsm_folder("synthbirds-tiny")  # a model folder: its encoders
    run = tmp_path / "run"
    for name, metrics in (("best", {"r_precision": 0.7}), ("last", {"r_precision": 0.6})):
        shutil.copytree(shipped, run / name)
        meta = json.loads((run / name / "config.json").read_text())
        meta["metrics"] = metrics
        (run / name / "config.json").write_text(json.dumps(meta))
    assert damsm_folder(run) == run / "last"
    meta = json.loads((run / "best" / "config.json").read_text())
    meta["metrics"]["selection"] = "last epoch"
    (run / "best" / "config.json").write_text(json.dumps(meta))
    assert damsm_folder(run) == run / "best"


def test_a_run_killed_before_its_first_snapshot_leaves_no_log_rows_behind(synth, damsm_run, tmp_path):
    out = tmp_path / "gan"
    out.mkdir()
    (out / "log.jsonl").write_text('{"kimg": 0.004, "step": 1, "stale": true}\n{"kimg": 0.008, "st')
    assert main(_train_argv(synth, damsm_run, out, 0.008)) == 0
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.004, 0.008] and not any("stale" in r for r in rows)


def test_a_killed_and_resumed_run_keeps_the_users_files_and_a_live_writers_temporary(synth, damsm_run,
                                                                                     tmp_path, capsys):
    import signal
    import time

    from attngan.fileio import TMP_PREFIX

    out = tmp_path / "existing"
    out.mkdir()
    _plant_user_files(out)
    dead = out / f"{TMP_PREFIX}{_dead_pid()}-deadbeef.tmp"
    dead.write_text("half")
    sleeper = _sleeper()
    live = out / f"{TMP_PREFIX}{sleeper.pid}-livelive.tmp"
    live.write_text("being written")
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen([sys.executable, "-m", "attngan", *_train_argv(synth, damsm_run, out, 0.04)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while p.poll() is None and not (out / "state.pt").is_file() and time.time() < deadline:
            time.sleep(0.02)
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert _user_files_intact(out) and live.exists()
        assert main(_train_argv(synth, damsm_run, out, 0.016)) == 0
        assert (out / "model" / "generator.safetensors").is_file()
        assert _user_files_intact(out) and live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # What the run left is its own files and the user's: no temporary of its own.
    hidden = sorted(str(q.relative_to(out)) for q in out.rglob(".*") if q != live)
    assert hidden == sorted([*USER_FILES, *USER_DIRS])


def test_run_state_snapshots_counts_images_and_notes_a_resume_on_other_data(tmp_path, capsys):
    from attngan.training.checkpoint import load_training_state
    from attngan.training.runstate import RunState

    first, other = tmp_path / "data-a", tmp_path / "data-b"
    first.mkdir()
    other.mkdir()
    out = tmp_path / "run"
    cfg = {"seed": 0, "damsm": {"batch_size": 8}, "lr": 0.1}
    with RunState.claim(out):
        run = RunState(out, "damsm", data_dir=first)
        assert run.resume(cfg, ("seed",)) is None and run.images_seen == 0
        run.begin(cfg, lambda r: False)
        for epoch in (1, 2):
            run.add_images(24)
            run.log({"epoch": epoch, "kimg": run.kimg})
            if epoch == 1:
                run.snapshot({"epoch": 1, "text_encoder": {}})
    st = load_training_state(out / "state.pt", "damsm")
    assert (st["kind"], st["images_seen"], st["epoch"], st["data"]) == ("damsm", 24, 1, str(first.resolve()))
    assert json.loads((out / "resolved_config.json").read_text()) == cfg
    capsys.readouterr()

    # Resumed on the same data: no note; the log is cut back to the snapshot's rows.
    run = RunState(out, "damsm", data_dir=first)
    assert run.resume(cfg, ("seed",))["epoch"] == 1 and run.images_seen == 24
    run.begin(cfg, lambda r: r["epoch"] <= 1)
    assert [json.loads(x)["kimg"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0.024]
    assert capsys.readouterr().out == ""
    # On other data: said in one note, and the run goes on; a changed fixed key is refused.
    run = RunState(out, "damsm", data_dir=other)
    assert run.resume({**cfg, "lr": 0.2}, ("seed",)) is not None
    said = capsys.readouterr().out
    assert "lr: 0.1 -> 0.2" in said and f"trained on {first.resolve()} and resumes on {other.resolve()}" in said
    with pytest.raises(AttnGANError, match="seed was 0"):
        RunState(out, "damsm", data_dir=first).resume({**cfg, "seed": 1}, ("seed",))
    # A state of another loop is named, not misread; a process that is not the main one writes nothing.
    with pytest.raises(AttnGANError, match="is a DAMSM"):
        RunState(out, "attngan").resume(cfg, ())
    quiet = RunState(out, "damsm", main=False)
    quiet.resume(cfg, ())
    quiet.add_images(8)
    quiet.log({"epoch": 2})
    quiet.snapshot({"epoch": 2})
    assert load_training_state(out / "state.pt")["epoch"] == 1 and quiet.rows == []


def test_run_state_keeps_the_first_best_scored_epoch_and_restores_its_weights():
    import torch

    from attngan.training.runstate import RunState

    model = torch.nn.Linear(2, 1)
    run = RunState(None, "judge")
    with pytest.raises(AttnGANError, match="scored no epoch"):
        run.restore_best(model)
    kept = []
    # Scores as the oracle makes them (tuples, compared in order); epoch 2 is the best, and epoch
    # 4 only ties it, so epoch 2 stays.
    for epoch, score in enumerate([(0.5, 0.1), (0.9, 0.2), (0.9, 0.1), (0.9, 0.2)], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        kept.append(run.keep_best(model, epoch, {"epoch": epoch}, score))
    assert kept == [True, True, False, False]
    assert (run.best_epoch, run.best_score, run.best_result) == (2, (0.9, 0.2), {"epoch": 2})
    # The kept weights are a copy: training on after the best epoch does not change them.
    with torch.no_grad():
        model.weight.fill_(7.0)
    run.restore_best(model)
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))


def test_replace_dir_parks_the_previous_version_under_a_temporary_name(tmp_path, monkeypatch):
    from attngan import io
    from attngan.fileio import temporary_writer, tmp_dir_beside

    target = tmp_path / "model"
    for version in ("1", "2"):
        staging = tmp_dir_beside(target)
        (staging / "v").write_text(version)
        io.replace_dir(staging, target)
    assert (target / "v").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["model"]
    # A file where the folder goes is replaced the same way.
    (tmp_path / "file").write_text("old")
    staging = tmp_dir_beside(tmp_path / "file")
    io.replace_dir(staging, tmp_path / "file")
    assert (tmp_path / "file").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["file", "model"]

    # Killed between the two renames: the previous version is left under a name of the writer's
    # (which a later run of the folder removes once the writer is dead), never under a user's name.
    staging = tmp_dir_beside(target)
    (staging / "v").write_text("3")
    real, calls = os.replace, []

    def killed_at_the_second(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        io.replace_dir(staging, target)
    monkeypatch.undo()
    parked = [p for p in tmp_path.iterdir() if p.name not in ("file", staging.name)]
    assert len(parked) == 1 and temporary_writer(parked[0].name) == os.getpid()
    assert (parked[0] / "v").read_text() == "2"
