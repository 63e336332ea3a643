"""benchmarks/against_original.py: the parts that do not need the original code itself (its
checkout is not part of this repository): the text patches and their exact counts, the import
stand-ins, the shared inputs, the BatchNorm calibration and our side's two timed steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import against_original as ao  # noqa: E402


def _run(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """In a fresh interpreter: loading the original's modules and the allocator setting are
    process-wide."""
    env = {k: v for k, v in os.environ.items() if k not in ao.ALLOCATOR_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(BENCHMARKS), str(ROOT / "src")]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_caption_lengths_run_from_the_widest_to_the_shortest_and_inputs_are_padded():
    assert ao.caption_lengths(1) == [ao.WORDS_NUM]
    lens = ao.caption_lengths(16)
    assert lens[0] == ao.WORDS_NUM and lens[-1] == ao.SHORTEST
    assert lens == sorted(lens, reverse=True)
    assert tuple(ao.make_inputs("damsm", 2)["images"].shape) == (2, 3, 299, 299)
    inp = ao.make_inputs("train", 4)
    caps = inp["captions"]
    for row, n in zip(caps, inp["cap_lens"].tolist()):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    assert [tuple(x.shape) for x in inp["reals"]] == [(4, 3, s, s) for s in (64, 128, 256)]
    again = ao.make_inputs("train", 4)
    assert torch.equal(again["captions"], caps) and torch.equal(again["reals"][2], inp["reals"][2])
    assert "reals" not in ao.make_inputs("infer", 4)


def test_patches_apply_exactly_and_a_different_count_stops_with_one_line(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("x = a.iteritems()\ny = a.iteritems()\n", encoding="utf-8")
    patches = [("m.py", "a.iteritems()", "a.items()", 2, "py3")]
    assert ao.patched_source(f, "m.py", patches) == "x = a.items()\ny = a.items()\n"
    assert f.read_text(encoding="utf-8").count("iteritems") == 2  # the file itself is untouched
    with pytest.raises(SystemExit) as e:
        ao.patched_source(f, "m.py", [("m.py", "a.iteritems()", "a.items()", 1, "py3")])
    assert "occurs 2 times, expected 1" in str(e.value) and "\n" not in str(e.value)


def test_every_patch_names_a_file_the_loader_imports():
    assert {p[0] for p in ao.ORIGINAL_PATCHES} == {"miscc/config.py", "miscc/losses.py", "model.py"}
    assert all(p[3] >= 1 and p[1] != p[2] for p in ao.ORIGINAL_PATCHES)


def test_a_folder_without_the_original_code_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        ao.code_dir(tmp_path)
    assert "no code/model.py" in str(e.value)
    out = subprocess.run([sys.executable, str(BENCHMARKS / "against_original.py")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--original is required" in out.stderr


def _fake_checkout(root: Path) -> None:
    """Files shaped like the original release's where the loader touches them: the Python 2
    config merge, the byte masks, the 0-dim indexing and the weight download it patches."""
    code = root / "code"
    (code / "miscc").mkdir(parents=True)
    (code / "cfg").mkdir()
    (code / "miscc" / "__init__.py").write_text("from __future__ import print_function\n")
    (code / "miscc" / "config.py").write_text(textwrap.dedent("""\
        from easydict import EasyDict as edict
        cfg = edict()
        cfg.CUDA = True
        cfg.GAN = edict()
        cfg.GAN.GF_DIM = 128
        def _merge(a, b):
            for k, v in a.iteritems():
                if not b.has_key(k):
                    raise KeyError(k)
                if type(v) is edict:
                    _merge(v, b[k])
                else:
                    b[k] = v
        def cfg_from_file(filename):
            import yaml
            with open(filename) as f:
                _merge(edict(yaml.load(f)), cfg)
        """))
    (code / "cfg" / "bird_attn2.yml").write_text("GAN:\n    GF_DIM: 32\n")
    (code / "miscc" / "losses.py").write_text(textwrap.dedent("""\
        import torch
        from miscc.config import cfg
        def masked(x, masks):
            masks = torch.ByteTensor(masks)
            return x.masked_fill(masks, 0.0)
        def masked_again(x, masks):
            masks = torch.ByteTensor(masks)
            return x.masked_fill(masks, 1.0)
        def value(t):
            return '%.1f %.1f %.1f %.1f %.1f %.1f' % (t.data[0], t.data[0], t.data[0], t.data[0],
                                                      t.data[0], t.data[0])
        """))
    (code / "miscc" / "utils.py").write_text("import skimage.transform\nfrom miscc.config import cfg\n")
    (code / "GlobalAttention.py").write_text("SCALE = 2\n")
    (code / "model.py").write_text(textwrap.dedent("""\
        from miscc.config import cfg
        from GlobalAttention import SCALE
        def inception(url):
            model = None
            model.load_state_dict(model_zoo.load_url(url))
            return 'random ' + url
        """))


_LOAD = """
import json, sys, torch
import against_original as ao
o = ao.load_original(sys.argv[1])
x = torch.zeros(2)
print(json.dumps({"gf": o.cfg.GAN.GF_DIM, "cuda": o.cfg.CUDA,
                  "masked": o.losses.masked(x, [1, 0]).tolist(),
                  "again": o.losses.masked_again(x, [0, 1]).tolist(),
                  "value": o.losses.value(torch.tensor(3.0)),
                  "inception": o.model.inception("u"), "scale": o.model.SCALE}))
"""


def test_the_loader_imports_a_checkout_with_its_patches_and_stand_ins(tmp_path):
    _fake_checkout(tmp_path)
    out = _run(_LOAD, str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"gf": 32, "cuda": False, "masked": [0.0, 0.0], "again": [0.0, 1.0],
                   "value": "3.0 3.0 3.0 3.0 3.0 3.0", "inception": "random u", "scale": 2}
    assert "iteritems" in (tmp_path / "code" / "miscc" / "config.py").read_text()  # left as it was


def test_batchnorm_calibration_takes_one_pass_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8) * 5 + 3
    ao.calibrate_batchnorm(net, x)
    with torch.no_grad():
        y = net[0](x)
    bn = net[1]
    assert not net.training
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, y.var((0, 2, 3), unbiased=True), rtol=1e-4)


_OURS = """
import json, sys
import against_original as ao
spec = {"kind": sys.argv[1], "batch": int(sys.argv[2]), "threads": 1, "set": [], "infer_amp": "off"}
step, info = ao.setup_ours(spec)
step(); step()
import os
print(json.dumps({"how": info["how"], "allocator": os.environ.get("ATTNGAN_ALLOCATOR_APPLIED")}))
"""


OUR_STEPS = {"infer": "AttnGANPipeline.generate_from_ids (amp=off)",
             "train": "gan_loop.gan_step (train.amp=off)",
             # the bird preset's frozen Inception trunk runs forward only: channels-last by default
             "damsm": "damsm_loop.damsm_step (damsm.amp=off, image encoder channels-last)"}


@pytest.mark.parametrize("kind,batch", [("infer", 1), ("train", 2), ("damsm", 2)])
def test_our_side_runs_the_project_steps_under_its_allocator(kind, batch):
    out = _run(_OURS, kind, str(batch), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["how"] == OUR_STEPS[kind]
    assert got["allocator"] and got["allocator"] != "default"
