"""The image captioner (Show, Attend and Tell), its decoding, BLEU / CIDEr-D, and the round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attngan.captioner import (Captioner, beam_decode, caption_tokens, captioner_vocabulary, detokenize,
                               greedy_decode, load_captioner_folder, resolve_captioner,
                               save_captioner_folder)
from attngan.config import CaptionerConfig, ConfigError, load_captioner_config
from attngan.errors import AttnGANError
from attngan.metrics.captioning import attribute_recall, cider_d, corpus_bleu
from attngan.networks.captioner import build_captioner

SMALL = {"width": 8, "embed_dim": 32, "hidden_dim": 64, "attention_dim": 32, "dropout": 0.0,
         "batch_size": 8, "eval_images": 8, "max_len": 30}


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("cap") / "birds", images=48, classes=12, size=128,
                                seed=5, progress=False)


def _small_cfg(**extra) -> CaptionerConfig:
    return load_captioner_config("captioner", {**SMALL, **extra})


# BLEU and CIDEr-D on examples worked by hand.

def test_bleu_identical_and_hand_worked():
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]])["bleu"] == pytest.approx(1.0)
    # p1..p4 = 4/5, 3/4, 2/3, 1/2; equal lengths, so no brevity penalty: (1/5)^(1/4).
    r = corpus_bleu(["a b c d e"], [["a b c d f"]])
    assert r["precisions"] == pytest.approx([4 / 5, 3 / 4, 2 / 3, 1 / 2])
    assert r["bleu"] == pytest.approx(0.2 ** 0.25)
    # Papineni's clipping example: 7 x "the" against two references with at most 2 "the".
    r = corpus_bleu(["the the the the the the the"],
                    [["the cat is on the mat", "there is a cat on the mat"]], n=1)
    assert r["precisions"][0] == pytest.approx(2 / 7)


def test_bleu_brevity_penalty_uses_the_closest_reference():
    # Candidate of 4 words, references of 6 and 9: r = 6, BP = exp(1 - 6/4).
    r = corpus_bleu(["a b c d"], [["a b c d e f", "a b c d e f g h i"]])
    assert r["reference_length"] == 6
    assert r["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 4))
    assert r["bleu"] == pytest.approx(math.exp(1 - 6 / 4))


def test_cider_d_hand_worked():
    refs = [["a b"], ["c d"]]
    # idf of every reference n-gram is log 2; unigram and bigram cosines are 1, no 3- or 4-grams.
    assert cider_d(["a b", "c d"], refs)["cider_d"] == pytest.approx(10 * 2 / 4)
    # Repeats are clipped at the reference's tf-idf, and the length (bigrams: 3 vs 1) is penalised.
    s = cider_d(["a b a b", "c d"], refs)["per_caption"][0]
    want = 10 * (0.5 + 1 / math.sqrt(5)) * math.exp(-(3 - 1) ** 2 / 72) / 4
    assert s == pytest.approx(want)
    assert cider_d(["x y", "c d"], refs)["per_caption"][0] == 0.0


def test_caption_metrics_reject_bad_input():
    with pytest.raises(AttnGANError):
        corpus_bleu(["a"], [])
    with pytest.raises(AttnGANError):
        cider_d(["a"], [[]])


def test_attribute_recall_counts_prompted_attributes():
    prompts = ["a bird with black wings and a white belly", "a bird with a red crown"]
    captions = ["a bird with black wings and a red belly", "this bird has a red crown and blue wings"]
    r = attribute_recall(prompts, captions)
    assert r["prompted"] == {"wing": 1, "belly": 1, "crown": 1}
    assert r["per_attribute"] == {"belly": 0.0, "crown": 1.0, "wing": 1.0}
    assert r["all"] == pytest.approx(2 / 3)
    assert r["captions_all_back"] == pytest.approx(0.5)


# Tokens, configs, folders.

def test_caption_tokens_keep_commas():
    tokens = caption_tokens("A bill that is short, Black wings.")
    assert tokens == ["a", "bill", "that", "is", "short", ",", "black", "wings"]
    assert detokenize(tokens) == "a bill that is short, black wings"
    vocab = captioner_vocabulary(["<end>", "wings", "a"])
    assert vocab.id_to_word[:2] == ["<end>", ","]


@pytest.mark.parametrize("override", [{"image_size": 60}, {"dropout": 1.0}, {"lr": 0.0}, {"lr_decay": 1.5},
                                      {"beam_size": 0}, {"nope": 1}, {"width": "wide"}])
def test_captioner_config_rejects_bad_values(override):
    with pytest.raises(ConfigError):
        load_captioner_config("captioner", override)


def test_captioner_config_round_trips():
    cfg = load_captioner_config("synthbirds-captioner", {"epochs": 3})
    assert CaptionerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_folder_round_trip_and_bad_folders(tmp_path):
    cfg = _small_cfg()
    vocab = captioner_vocabulary(["<end>", "a", "bird"])
    torch.manual_seed(0)
    model = build_captioner(cfg, len(vocab))
    save_captioner_folder(tmp_path / "c", cfg, vocab, model.eval(), half=True)
    _, _, vocab2, loaded = load_captioner_folder(tmp_path / "c")
    assert vocab2 == vocab
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert greedy_decode(model.half().float(), x, 5) == greedy_decode(loaded, x, 5)
    with pytest.raises(AttnGANError, match="does not exist"):
        load_captioner_folder(tmp_path / "missing")
    (tmp_path / "c" / "captioner.safetensors").unlink()
    with pytest.raises(AttnGANError, match="incomplete"):
        load_captioner_folder(tmp_path / "c")


# Decoding.

def _random_model(n_words: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    return build_captioner(_small_cfg(), n_words).eval()


def test_greedy_decoding_is_deterministic():
    model = _random_model()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    first = greedy_decode(model, x, 12)
    assert first == greedy_decode(model, x, 12)
    assert all(len(ids) <= 12 and 0 not in ids for ids in first)


def _rank_of(model, x, ids, b):
    """The beam search's ranking of caption `ids` for image b: summed log-probability (<end>
    included) over the token count to the captioner's length power."""
    from attngan.captioner import _rank

    dec = model.decoder
    with torch.no_grad():
        regions = model.encoder(x[b:b + 1])
        h, c, proj = dec.init_state(regions)
        prev, total = torch.tensor([dec.start_id]), 0.0
        for w in list(ids) + [0]:
            logits, h, c, _ = dec.step(prev, h, c, regions, proj)
            total += float(torch.log_softmax(logits, 1)[0, w])
            prev = torch.tensor([w])
    return _rank(total, len(ids) + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_width_one_follows_greedy_and_never_ranks_below_it(seed):
    model = _random_model(seed=seed)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    greedy, beam = greedy_decode(model, x, 12), beam_decode(model, x, 12, beam_size=1)
    for b in range(3):
        if len(greedy[b]) < 12:  # greedy ended: the search saw its caption finish
            assert _rank_of(model, x, beam[b], b) >= _rank_of(model, x, greedy[b], b) - 1e-6


class _ScriptedDecoder(torch.nn.Module):
    """A decoder whose next-word log-probabilities depend only on the previous word: `table[prev]`
    (the start token is the last row). Lets a test know every caption's score."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table.log()
        self.start_id = table.shape[1]

    def init_state(self, regions):
        B = regions.shape[0]
        return torch.zeros(B, 1), torch.zeros(B, 1), regions

    def step(self, prev, h, c, regions, proj):
        return self.table[prev], h, c, None


class _Scripted(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.decoder = _ScriptedDecoder(torch.as_tensor(table, dtype=torch.float32))

    def encoder(self, images):
        return images.flatten(1)[:, None, :1]


def _script(n_words: int, rows: dict[int, dict[int, float]]) -> list[list[float]]:
    """A table of next-word probabilities: rows[prev] = {word: p}, the rest spread evenly; the
    start token is prev = n_words."""
    table = []
    for prev in range(n_words + 1):
        want = rows.get(prev, {})
        rest = (1.0 - sum(want.values())) / (n_words - len(want))
        table.append([want.get(w, rest) for w in range(n_words)])
    return table


def test_beam_search_runs_until_no_live_caption_can_beat_the_best_finished():
    # Ending at once is the single most likely step (p 0.55), but "1 2" then <end> is nearly
    # certain after it: per token it ranks far above the empty caption. A search that stops at its
    # first `beam_size` finished captions returns the empty one.
    table = _script(4, {4: {0: 0.55, 1: 0.44}, 1: {2: 0.999}, 2: {0: 0.999}})
    model, x = _Scripted(table), torch.zeros(1, 3, 8, 8)
    for beam in (1, 2, 3):
        assert beam_decode(model, x, 6, beam) == [[1, 2]]
    from attngan.captioner import constrained_beam_decode

    assert constrained_beam_decode(model, x, 6, 1, [{2}]) == [[1, 2]]


def test_repeat_block_names_each_part_once_and_repeats_no_trigram():
    from attngan.captioner import RepeatBlock, parts_named

    words = ["<end>", ",", "a", "white", "crown", "the", "top", "of", "its", "head", "is", "red", "back",
             "neck", "nape", "wings"]
    vocab = captioner_vocabulary(words)
    ids = vocab.word_to_id
    # The scripted captioner loops: "a white crown , a white crown , ..." and then "the top of its
    # head is red" (the crown again), unless it is stopped.
    loop = {ids["a"]: {ids["white"]: 0.9}, ids["white"]: {ids["crown"]: 0.9}, ids["crown"]: {ids[","]: 0.9},
            ids[","]: {ids["a"]: 0.6, ids["the"]: 0.3}, ids["the"]: {ids["top"]: 0.9},
            ids["top"]: {ids["of"]: 0.9}, ids["of"]: {ids["its"]: 0.9}, ids["its"]: {ids["head"]: 0.9},
            ids["head"]: {ids["is"]: 0.9}, ids["is"]: {ids["red"]: 0.9}, len(vocab): {ids["a"]: 0.9}}
    model, x = _Scripted(_script(len(vocab), loop)), torch.zeros(2, 3, 8, 8)
    unblocked = greedy_decode(model, x, 12)[0]
    assert parts_named([vocab.id_to_word[i] for i in unblocked]).count("crown") >= 2
    block = RepeatBlock(vocab)
    for decoded in (greedy_decode(model, x, 12, block), beam_decode(model, x, 12, 3, block)):
        for seq in decoded:
            text = [vocab.id_to_word[i] for i in seq]
            named = parts_named(text)
            assert named.count("crown") <= 1 and "crown" in named
            trigrams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
            assert len(trigrams) == len(set(trigrams))
    # The longest name wins, and a word that is another part's whole name stays allowed.
    assert parts_named("the back of its neck and the back".split()) == ["nape", "back"]
    assert ids["back"] not in block.banned([ids["nape"]])
    assert {ids["top"], ids["crown"]} <= block.banned([ids["a"], ids["crown"]])


@pytest.mark.parametrize("beam", [1, 3])
def test_constrained_beam_names_every_group(beam):
    from attngan.captioner import RepeatBlock, constrained_beam_decode, parse_mention

    vocab = captioner_vocabulary(["<end>", "a", "bird", "wings", "wing", "belly", "red"])
    model = _random_model(n_words=len(vocab), seed=4)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    groups = parse_mention("wings|wing;belly|stomach", vocab)
    assert groups == [{vocab.word_to_id["wings"], vocab.word_to_id["wing"]}, {vocab.word_to_id["belly"]}]
    for ids in constrained_beam_decode(model, x, 20, beam, groups):
        assert set(ids) & groups[0] and set(ids) & groups[1]
    # No groups: the plain beam search.
    assert constrained_beam_decode(model, x, 12, beam, []) == beam_decode(model, x, 12, beam)
    with pytest.raises(AttnGANError, match="no word"):
        parse_mention("tail", vocab)
    cap = Captioner(_small_cfg(max_len=20, mention="wings|wing;belly"), vocab, model)
    assert all("belly" in caption_tokens(c) for c in cap(x))
    block = RepeatBlock(vocab)
    assert cap(x, mention="", beam_size=1) == [cap.text(ids) for ids in greedy_decode(model, x, 20, block)]
    assert cap(x, mention="", beam_size=1, block_repeats=False) == [cap.text(ids)
                                                                    for ids in greedy_decode(model, x, 20)]


def test_wider_beam_never_ranks_below_greedy():
    model = _random_model(seed=3)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    narrow, wide = greedy_decode(model, x, 30), beam_decode(model, x, 30, 4)
    for b in range(2):
        if len(narrow[b]) < 30:  # greedy finished: the wide beam found it or better
            assert _rank_of(model, x, wide[b], b) >= _rank_of(model, x, narrow[b], b) - 1e-5


# Learning.

def test_captioner_overfits_a_tiny_set_to_exact_captions(birds):
    from attngan.training.captioner_loop import (CaptionedImages, build_vocabulary, caption_loss,
                                                 collate_captions)

    torch.manual_seed(0)
    cfg = _small_cfg(image_size=32)  # a 4 x 4 region grid is plenty to tell 8 birds apart
    cfg.data.captions_per_image = 1
    vocab = build_vocabulary(birds)
    ds = CaptionedImages(birds, "train", cfg, vocab, train=False)
    model = build_captioner(cfg, len(vocab))
    batch = collate_captions([ds[i] for i in range(8)], model.decoder.start_id)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):  # exact from about step 25 on
        loss = sum(caption_loss(model, batch, 0.0, "cpu").values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    want = [ds.ids[i][0] for i in range(8)]
    assert greedy_decode(model, batch["images"], cfg.max_len) == want
    captioner = Captioner(cfg, vocab, model)
    assert captioner(batch["images"], beam_size=1) == [detokenize(caption_tokens(ds.texts[i][0]))
                                                       for i in range(8)]


def test_training_loop_writes_snapshots_and_resumes(birds, tmp_path):
    from attngan.training.captioner_loop import train_captioner

    cfg = _small_cfg()
    out = tmp_path / "run"
    first = train_captioner(cfg, birds, out, device="cpu", max_epochs=1, progress=False, max_steps=2)
    assert first["epoch"] == 1 and first["steps"] == 2 and first["kimg"] == 2 * 8 / 1000
    for f in ("best/config.json", "best/captioner.safetensors", "best/vocab.json", "state.pt",
              "metrics.jsonl", "resolved_config.json"):
        assert (out / f).is_file(), f
    assert "recall_all" in first and "val_cider_d" in first
    again = train_captioner(cfg, birds, out, device="cpu", max_epochs=2, progress=False, max_steps=2)
    assert again["epoch"] == 2 and again["kimg"] == 4 * 8 / 1000  # counted on from the state
    state = torch.load(out / "state.pt", weights_only=True)
    assert (state["kind"], state["images_seen"], state["data"]) == ("captioner", 32, str(birds.resolve()))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    cap = Captioner.from_pretrained(out, device="cpu")  # a run folder: its best/
    assert isinstance(cap(torch.zeros(1, 3, 64, 64))[0], str)


# The shipped captioner and the round trip.

def _shipped() -> Captioner:
    try:
        return Captioner.from_pretrained("synthbirds-captioner", device="cpu")
    except AttnGANError as e:
        pytest.skip(f"no bundled captioner: {e}")


def test_round_trip_on_real_images_beats_shuffled_captions(birds):
    from attngan.metrics.roundtrip import real_ceiling
    from attngan.training.captioner_loop import CaptionedImages

    cap = _shipped()
    ds = CaptionedImages(birds, "test", cap.config, cap.vocab, train=False)
    images = torch.stack([ds.images[i]["images"][0] for i in range(len(ds))])
    r = real_ceiling(cap(images, beam_size=1), ds.texts, seed=0)
    own, shuffled = r["own"], r["shuffled"]
    for part in ("wing", "belly"):  # the parts its captions must name
        assert own["per_attribute"][part] >= 0.7
        assert own["per_attribute"][part] > shuffled["per_attribute"][part] + 0.4
    # All attributes: it names 3-4 of a caption's 2-5 at random, so the ceiling is well below 1.
    assert own["recall"] > 2.5 * shuffled["recall"] and own["recall"] > shuffled["recall"] + 0.2
    assert own["cider_d"] > shuffled["cider_d"]


@pytest.fixture(scope="module")
def test_birds_200(tmp_path_factory):
    """About 200 real test images of unseen species (a quarter of the classes are test classes)."""
    from attngan.data.synth_birds import generate_synth_birds

    return generate_synth_birds(tmp_path_factory.mktemp("cap200") / "birds", images=800, classes=64, size=128,
                                seed=11, progress=False)


@pytest.mark.slow
def test_shipped_captioner_names_no_part_twice_and_a_wider_beam_recalls_more(test_birds_200):
    from attngan.captioner import parts_named
    from attngan.training.captioner_loop import CaptionedImages

    cap = _shipped()
    ds = CaptionedImages(test_birds_200, "test", cap.config, cap.vocab, train=False)
    n = min(200, len(ds))
    assert n >= 180
    images = torch.stack([ds.images[i]["images"][0] for i in range(n)])
    prompts = [line for i in range(n) for line in ds.texts[i]]

    def recall(captions):
        return attribute_recall(prompts, [c for i, c in enumerate(captions) for _ in ds.texts[i]])["all"]

    decoded = {"greedy": cap(images, beam_size=1, mention=""), "default": cap(images),
               "beam 3": cap(images, beam_size=3)}
    for name, captions in decoded.items():
        for c in captions:
            named = parts_named(caption_tokens(c))
            assert len(named) == len(set(named)), (name, c)
    # The default is the constrained search with one caption per constraint state.
    assert recall(decoded["beam 3"]) >= recall(decoded["default"]) > recall(decoded["greedy"])


def test_caption_command(birds, tmp_path, capsys):
    from attngan.cli import main

    _shipped()
    png = next((birds / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert main(["caption", str(png), "--beam", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{png}: I think it's: ") and "bird" in out
    assert main(["caption", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image"] == str(png)
    assert main(["caption", str(tmp_path / "nope.png")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["caption", str(png), "--captioner", str(tmp_path)]) == 2


def test_train_captioner_command_dry_run_and_errors(tmp_path, capsys):
    from attngan.cli import main

    assert main(["train-captioner", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--config", "synthbirds-captioner", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "synthbirds-captioner"
    assert main(["train-captioner", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--set", "dropout=2", "--dry-run"]) == 2
    assert "dropout" in capsys.readouterr().err


def test_resolve_captioner_names():
    import attngan

    assert attngan.Captioner is Captioner
    with pytest.raises(AttnGANError):
        Captioner.from_pretrained("no-such-captioner-folder", device="cpu")
    assert resolve_captioner("some/folder").name == "folder"


def test_eval_roundtrip_metric_on_real_images(birds, tmp_path):
    """`attngan eval --images` with the real test images and their captions: the round trip
    recovers most attributes, and the report carries the ceiling and the chance level."""
    from attngan.metrics import evaluate
    from attngan.metrics.report import report_rows
    from attngan.training.captioner_loop import CaptionedImages
    from attngan.viz import to_pil

    cap = _shipped()
    ds = CaptionedImages(birds, "test", cap.config, cap.vocab, train=False)
    folder = tmp_path / "images"
    folder.mkdir()
    captions = {}
    for i in range(len(ds)):
        to_pil(ds.images[i]["images"][0]).save(folder / f"{i:03d}.png")
        captions[f"{i:03d}.png"] = ds.texts[i][0]
    (folder / "captions.json").write_text(json.dumps(captions))
    report = evaluate(birds, images_dir=folder, metrics=["roundtrip"], captioner="synthbirds-captioner",
                      splits=1, device="cpu", progress=False, cache_dir=str(tmp_path / "cache"))
    row = report_rows(report)[0]
    assert row["name"] == "roundtrip" and row["per_attribute"]["wing"] > 70 and row["per_attribute"]["belly"] > 70
    assert row["value"] > 2 * row["real_shuffled"]["recall"]
    assert row["real_ceiling"]["recall"] > row["real_shuffled"]["recall"] + 20
    assert 0 <= row["bleu4"] <= 1 and row["cider_d"] >= 0
    with pytest.raises(AttnGANError, match="'roundtrip' needs --captioner"):
        evaluate(birds, images_dir=folder, metrics=["roundtrip"], splits=1, device="cpu", progress=False)


# The web page and the report show what the captioner reads.

def test_web_api_captions_every_sample(tiny_model_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from attngan.metrics.extractors import quantize
    from attngan.pipeline import AttnGANPipeline
    from attngan.serve.app import create_app

    pipe = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    cap = Captioner(_small_cfg(max_len=6), captioner_vocabulary(["<end>", "a", "bird", "red"]),
                    _random_model(n_words=5))
    body = {"caption": "a bird with black wings", "seed": 3, "n": 2, "attention": False}
    with TestClient(create_app(pipe, captioner=cap)) as c:
        assert c.get("/api/v1/model").json()["captioner"] == cap.config.name
        samples = c.post("/api/v1/generate", json=body).json()["samples"]
        assert 'id="final-think"' in c.get("/").text
    want = cap(quantize(pipe([body["caption"]] * 2, seed=3).images[-1]))
    assert [s["caption"] for s in samples] == want
    with TestClient(create_app(pipe)) as c:
        assert c.get("/api/v1/model").json()["captioner"] is None
        assert all(s["caption"] is None for s in c.post("/api/v1/generate", json=body).json()["samples"])


def test_report_shows_the_captioner_and_labels_retrieval():
    from attngan.report import PromptResult, Report, Section, render_html, report_json

    p = PromptResult("a bird with black wings", [], [], ["a", "bird"], retrieved=[("a bird with red wings", 0.5)],
                     captioned="a bird with black wings and a <b>", attributes_back={"wing": True})
    r = Report("t", "s", [Section("own", "Own", "", [p], [], [], {})])
    page = render_html(r)
    assert "I think it's: “a bird with black wings and a &lt;b&gt;”" in page
    assert "<strong>Retrieval</strong> (not captioning" in page and "wing ✓" in page
    assert report_json(r)["sections"][0]["prompts"][0]["captioned"] == p.captioned


def test_region_encoder_starts_from_a_damsm_trunk(tmp_path):
    from attngan.config import preset
    from attngan.networks import build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary
    from attngan.training.captioner_loop import init_region_encoder
    from attngan.io import save_damsm_folder

    cfg = preset("tiny")
    cfg.damsm.small_width = 8
    vocab = Vocabulary(["<end>", "bird"])
    torch.manual_seed(0)
    image_encoder = build_image_encoder(cfg)
    save_damsm_folder(tmp_path / "damsm", cfg, vocab, build_text_encoder(cfg, len(vocab)), image_encoder)
    model = build_captioner(_small_cfg(width=8), 5)
    init_region_encoder(model.encoder, str(tmp_path / "damsm"))
    for name in ("stem.0.weight", "mix.1.running_var", "down2.0.weight"):
        assert torch.equal(model.encoder.state_dict()[name], image_encoder.trunk.state_dict()[name])
    with pytest.raises(AttnGANError, match="width"):
        init_region_encoder(build_captioner(_small_cfg(width=16), 5).encoder, str(tmp_path / "damsm"))


def test_page_shows_the_captioner_under_the_final_image(tiny_model_dir):
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")
    from test_browser import CHROMIUM, ServerThread

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing")

    from attngan.metrics.extractors import quantize
    from attngan.pipeline import AttnGANPipeline
    from attngan.serve.app import create_app

    pipe = AttnGANPipeline.from_pretrained(tiny_model_dir, device="cpu")
    cap = Captioner(_small_cfg(max_len=6), captioner_vocabulary(["<end>", "a", "bird", "red"]),
                    _random_model(n_words=5))
    app = create_app(pipe, captioner=cap)
    with ServerThread(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.fill("#caption", "a bird with black wings")
        page.fill("#seed", "3")
        page.click("#generate")
        page.wait_for_selector("#final-think:not([hidden])", timeout=60_000)
        want = cap(quantize(pipe(["a bird with black wings"], seed=3).images[-1]))[0]
        assert page.text_content("#final-think") == f"I think it's: {want}"
        browser.close()
    app.state.shutdown()
