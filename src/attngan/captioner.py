"""Captioner: images in, sentences out ("I think it's ...").

`Captioner.from_pretrained(name_or_folder)(images)` is the captioning counterpart of
AttnGANPipeline: a saved captioner folder (config.json, vocab.json, captioner.safetensors) or a
bundled one by name ("synthbirds-captioner", "synthscenes-captioner"), greedy or beam-search decoding, batched, in eval mode.
Used by `attngan caption`, the round-trip metric of `attngan eval`, the demo report and the web page.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from attngan.config import CaptionerConfig
from attngan.data.synth_captions import _PART_PHRASES
from attngan.errors import AttnGANError
from attngan.io import CAPTIONER_FILE, bundled_names, load, resolve, state_dict_for_save, write_folder
from attngan.perf import resolve_device
from attngan.text import END_TOKEN, Vocabulary, tokenize

WEIGHTS_FILE = CAPTIONER_FILE
# The bundled captioner of SynthScenes (io.KINDS), which `attngan eval` uses on SynthScenes data;
# synthbirds-captioner stays the default everywhere else.
SCENES_CAPTIONER = "synthscenes-captioner"

def caption_tokens(text: str) -> list[str]:
    """Words as the original tokenizer reads them, plus commas: a comma is what tells "a bill that
    is short, black wings" from "a bill that is short black wings", and the captions the captioner
    writes are parsed (caption_attributes) as they are written."""
    return tokenize(text, keep_commas=True)


def detokenize(tokens: Sequence[str]) -> str:
    return " ".join(tokens).replace(" ,", ",")


def captioner_vocabulary(words: Sequence[str]) -> Vocabulary:
    """`<end>` (id 0, the token that ends a caption), the comma, then `words` in their order."""
    rest = [w for w in words if w not in (END_TOKEN, ",")]
    return Vocabulary([END_TOKEN, ",", *dict.fromkeys(rest)])


# Bundled captioners and the saved folder (attngan.io's format and loader).

def bundled_captioner_names() -> list[str]:
    return bundled_names("captioner")


def resolve_captioner(name: str | Path | None) -> Path:
    """A captioner folder, a train-captioner run folder (its best/), the name of a bundled one (a
    folder of that name wins), or None: the default bundled captioner."""
    return resolve(name, "captioner")


def save_captioner_folder(folder: str | Path, cfg: CaptionerConfig, vocab: Vocabulary, model: torch.nn.Module,
                          metrics: dict[str, Any] | None = None, half: bool = False,
                          extra: dict[str, Any] | None = None) -> Path:
    """config.json + vocab.json + captioner.safetensors, written beside `folder` and renamed over it.
    `half` stores weights in fp16 (BatchNorm statistics stay fp32)."""
    fields = {"config": cfg.to_dict(), "n_words": len(vocab), "metrics": metrics or {}, **(extra or {})}
    return write_folder(folder, "captioner", fields, {WEIGHTS_FILE: state_dict_for_save(model, half)}, vocab)


def load_captioner_folder(folder: str | Path, device: str | torch.device = "cpu"):
    """(config, metadata, vocabulary, network in eval mode) of a captioner folder, or of a
    train-captioner run folder (its best/)."""
    loaded = load(folder, "captioner", device)
    return loaded.config, loaded.meta, loaded.vocab, loaded.modules["captioner"]


# Decoding.

def _part_phrases() -> list[tuple[tuple[str, ...], str]]:
    """The caption grammar's names of a bird's parts as word tuples, longest first, with the part
    each names ("top of its head" -> crown, "wings" -> wing)."""
    phrases = [(tuple(p.split()), part) for part, names in _PART_PHRASES.items() for p in names]
    return sorted(phrases, key=lambda x: -len(x[0]))


def parts_named(words: Sequence[str], phrases=None) -> list[str]:
    """The parts a caption's words name, in order, one entry per naming; the longest name wins
    ("back of its neck" is the nape, not the back)."""
    phrases = _part_phrases() if phrases is None else phrases
    out, i = [], 0
    while i < len(words):
        for names, part in phrases:
            if tuple(words[i:i + len(names)]) == names:
                out.append(part)
                i += len(names)
                break
        else:
            i += 1
    return out


class RepeatBlock:
    """The words a caption may not take next because they would repeat it: the first word of any
    name of a part the caption has already named, or a word that would make a trigram (three
    tokens in a row, commas included) it already holds. Why: a small attention LSTM loops ("a
    white crown, a white crown and ..."); every caption of the grammar names each part at most
    once. A word that is also another part's whole name stays allowed ("back" after the nape)."""

    def __init__(self, vocab: Vocabulary):
        self.words = vocab.id_to_word
        self.phrases = _part_phrases()
        whole = {names[0]: part for names, part in self.phrases if len(names) == 1}
        ids = vocab.word_to_id
        self.starts: dict[str, set[int]] = {}
        for names, part in self.phrases:
            first = names[0]
            if first in ids and whole.get(first, part) == part:
                self.starts.setdefault(part, set()).add(ids[first])

    def banned(self, seq: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for part in parts_named([self.words[w] for w in seq], self.phrases):
            out |= self.starts.get(part, set())
        if len(seq) >= 2:
            last = (seq[-2], seq[-1])
            out.update(seq[i + 2] for i in range(len(seq) - 2) if (seq[i], seq[i + 1]) == last)
        return out

    def mask(self, logp: torch.Tensor, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """`logp` (one row per caption) with the banned words of each row at -inf."""
        rows, cols = [], []
        for r, seq in enumerate(seqs):
            for w in self.banned(seq):
                rows.append(r)
                cols.append(w)
        if rows:
            logp = logp.clone()
            logp[rows, cols] = float("-inf")
        return logp


@torch.no_grad()
def greedy_decode(model, images: torch.Tensor, max_len: int, block: RepeatBlock | None = None) -> list[list[int]]:
    """The most likely word at every step until <end> (id 0); word ids without the <end>.
    `block`: words that would repeat the caption are not taken."""
    dec = model.decoder
    regions = model.encoder(images)
    h, c, proj = dec.init_state(regions)
    B = images.shape[0]
    prev = torch.full((B,), dec.start_id, dtype=torch.long, device=images.device)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=images.device)
    for _ in range(max_len):
        logits, h, c, _ = dec.step(prev, h, c, regions, proj)
        if block is not None:
            logits = block.mask(logits, out)
        prev = logits.argmax(1)
        for i in (~done).nonzero().flatten().tolist():
            if int(prev[i]) != 0:
                out[i].append(int(prev[i]))
        done |= prev == 0
        if bool(done.all()):
            break
    return out


# A finished caption's rank: its summed log-probability over (tokens, <end> included) ** 1.5. With
# the power 1 (the mean per token) the widest searches ended on "the wings and belly are white",
# which names two parts; above 1 a caption that goes on to name more parts outranks it. Chosen
# among 1, 1.5 and 2 on 200 images of training species (beam 3: 37, 58, 59% attribute recall;
# 2 gives 31-word captions), never on the test split.
LENGTH_POWER = 1.5


def _rank(total: float, tokens: int) -> float:
    return total / tokens ** LENGTH_POWER


class _Beams:
    """The live hypotheses of one image's beam search: word ids, summed log-probabilities and
    decoder states, starting from <start> alone."""

    def __init__(self, decoder, regions: torch.Tensor):
        self.decoder, self.regions = decoder, regions
        self.h, self.c, self.proj = decoder.init_state(regions)
        self.seqs: list[list[int]] = [[]]
        self.scores = torch.zeros(1, device=regions.device)
        self.prev = torch.full((1,), decoder.start_id, dtype=torch.long, device=regions.device)

    def log_probs(self, block: RepeatBlock | None = None) -> torch.Tensor:
        """k x V: each hypothesis's summed log-probability followed by each word (-inf for the
        words `block` bans)."""
        k = len(self.seqs)
        logits, self.h, self.c, _ = self.decoder.step(self.prev, self.h, self.c, self.regions.expand(k, -1, -1),
                                                      self.proj.expand(k, -1, -1))
        logp = torch.log_softmax(logits.float(), 1) + self.scores[:, None]
        return logp if block is None else block.mask(logp, self.seqs)

    def keep(self, rows: list[int], words: list[int], scores: list[float]) -> None:
        """The next hypotheses: hypothesis rows[i] followed by words[i], scored scores[i]."""
        device = self.scores.device
        self.seqs = [self.seqs[r] + [w] for r, w in zip(rows, words)]
        self.scores = torch.tensor(scores, device=device)
        index = torch.tensor(rows, device=device)
        self.h, self.c = self.h[index], self.c[index]
        self.prev = torch.tensor(words, device=device)

    def can_beat(self, best: float, max_len: int) -> bool:
        """Whether a live hypothesis could still end ranked above `best`: more words only lower
        its sum, and the most tokens it can reach (`max_len` words and <end>) divide that sum the
        most, so its best possible rank is _rank(sum, max_len + 1)."""
        return _rank(float(self.scores.max()), max_len + 1) > best


def _image_beams(model, images: torch.Tensor):
    """A fresh _Beams for each image in turn (the encoder reads the batch at once)."""
    regions = model.encoder(images)
    for b in range(images.shape[0]):
        yield _Beams(model.decoder, regions[b:b + 1])


@torch.no_grad()
def beam_decode(model, images: torch.Tensor, max_len: int, beam_size: int,
                block: RepeatBlock | None = None) -> list[list[int]]:
    """Beam search per image: the `beam_size` best partial captions by summed log-probability; a
    finished caption is ranked by _rank (summed log-probability over its length, <end> included,
    to LENGTH_POWER), so longer captions are not penalised for their length. The search goes on until no live caption can
    end above the best finished one (or at `max_len` words, where every caption ends): stopping at
    the first `beam_size` finished captions would keep the short ones that end early. Width 1
    follows greedy decoding and returns its caption or one that ranks higher.
    `block`: words that would repeat a caption are not taken."""
    if beam_size < 1:
        raise AttnGANError(f"beam size must be at least 1, got {beam_size}")
    results = []
    for beams in _image_beams(model, images):
        best: tuple[float, list[int]] | None = None
        for step in range(max_len + 1):
            logp = beams.log_probs(block)
            for row, seq in enumerate(beams.seqs):
                score = _rank(float(logp[row, 0]), len(seq) + 1)
                if best is None or score > best[0]:
                    best = (score, seq)
            if step == max_len:
                break
            logp[:, 0] = float("-inf")
            flat = logp.flatten()
            top_v, top_i = flat.topk(min(flat.numel(), beam_size))
            keep = [(v, *divmod(i, logp.shape[1])) for v, i in zip(top_v.tolist(), top_i.tolist())
                    if v > float("-inf")]
            if not keep:
                break
            beams.keep([r for _, r, _ in keep], [w for *_, w in keep], [v for v, *_ in keep])
            if not beams.can_beat(best[0], max_len):
                break
        results.append(best[1])
    return results


def parse_mention(spec: str, vocab: Vocabulary) -> list[set[int]]:
    """`"wings|wing;belly|abdomen"` -> word-id groups; a caption must hold a word of every group.
    Words the vocabulary lacks are left out; a group left empty is an error."""
    groups = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        ids = {vocab.word_to_id[w.strip()] for w in part.split("|") if w.strip() in vocab.word_to_id}
        if not ids:
            raise AttnGANError(f"mention group '{part}' has no word in the captioner's vocabulary")
        groups.append(ids)
    return groups


@torch.no_grad()
def constrained_beam_decode(model, images: torch.Tensor, max_len: int, beam_size: int,
                            groups: list[set[int]], block: RepeatBlock | None = None) -> list[list[int]]:
    """Constrained beam search (Anderson et al., EMNLP 2017, "Guided open vocabulary image
    captioning with constrained beam search"): one beam of `beam_size` per subset of the word
    groups already used, and only captions that hold a word of every group may end. The words
    around the constraints, colours included, are still the captioner's own choice. Finished
    captions are ranked and the search stops as in `beam_decode`.

    Why: a caption is one sample of what people wrote, who named 2-5 of a bird's parts at random,
    and the most likely caption tends to skip the parts that take a plural ("black wings" after a
    run of "a white belly, a ..."), although the captioner reads their colours as well as any
    other's when it names them. Asking it to name them makes the caption a description.
    Falls back to the unconstrained beam for an image where no constrained caption ends.
    """
    if not groups:
        return beam_decode(model, images, max_len, beam_size, block)
    full = (1 << len(groups)) - 1
    bits = {}
    for g, ids in enumerate(groups):
        for w in ids:
            bits[w] = bits.get(w, 0) | (1 << g)
    constraint_words = sorted(bits)
    results = []
    for b, beams in enumerate(_image_beams(model, images)):
        masks = [0]  # per hypothesis: the groups it has a word of
        best: tuple[float, list[int]] | None = None
        for step in range(max_len + 1):
            logp = beams.log_probs(block)
            for row, seq in enumerate(beams.seqs):
                score = _rank(float(logp[row, 0]), len(seq) + 1)
                if masks[row] == full and (best is None or score > best[0]):
                    best = (score, seq)
            if step == max_len:
                break
            # Candidates per hypothesis: its best words and every constraint word.
            top = logp[:, 1:].topk(min(beam_size, logp.shape[1] - 1), dim=1).indices + 1
            cands: dict[int, list[tuple[float, int, int]]] = {}
            for row in range(len(beams.seqs)):
                for w in set(top[row].tolist()) | set(constraint_words):
                    v = float(logp[row, w])
                    if v > float("-inf"):
                        cands.setdefault(masks[row] | bits.get(w, 0), []).append((v, row, w))
            keep = []
            for mask, items in cands.items():
                items.sort(key=lambda x: -x[0])
                keep += [(v, row, w, mask) for v, row, w in items[:beam_size]]
            if not keep:
                break
            beams.keep([r for _, r, _, _ in keep], [w for _, _, w, _ in keep], [v for v, *_ in keep])
            masks = [m for *_, m in keep]
            if best is not None and not beams.can_beat(best[0], max_len):
                break
        if best is not None:
            results.append(best[1])
        else:
            results += beam_decode(model, images[b:b + 1], max_len, beam_size, block)
    return results


class Captioner:
    """A loaded captioner: `captioner(images)` -> one sentence per image."""

    def __init__(self, cfg: CaptionerConfig, vocab: Vocabulary, model: torch.nn.Module, device: str | torch.device = "cpu",
                 meta: dict[str, Any] | None = None):
        self.config, self.vocab, self.meta = cfg, vocab, meta or {}
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path | None = None, device: str = "auto") -> "Captioner":
        """A captioner folder (or a train-captioner run folder: its best/), a bundled captioner by
        name ("synthbirds-captioner", "synthscenes-captioner"), or None: the default bundled one
        (synthbirds-captioner)."""
        dev = resolve_device(device)
        cfg, meta, vocab, model = load_captioner_folder(name_or_dir, dev)
        return cls(cfg, vocab, model, dev, meta)

    @property
    def digest(self) -> str:
        """Identity of the weights (for caches of captions of real images)."""
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()[:16]

    def prepare(self, images) -> torch.Tensor:
        """A B x 3 x H x W tensor in [-1, 1], a list of PIL images, or a list of image paths."""
        if isinstance(images, torch.Tensor):
            x = images if images.dim() == 4 else images[None]
            if x.dim() != 4 or x.shape[1] != 3:
                raise AttnGANError(f"images must be B x 3 x H x W, got {tuple(images.shape)}")
            return x.float()
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise AttnGANError("no images given")
        return torch.stack([image_tensor(im, self.config.image_size) for im in images])

    def decode_ids(self, images, beam_size: int | None = None, batch_size: int = 64,
                   mention: str | None = None, block_repeats: bool = True) -> list[list[int]]:
        beam = self.config.beam_size if beam_size is None else int(beam_size)
        if beam < 1:
            raise AttnGANError(f"beam size must be at least 1, got {beam}")
        groups = parse_mention(self.config.mention if mention is None else mention, self.vocab)
        block = RepeatBlock(self.vocab) if block_repeats else None
        x = self.prepare(images)
        out: list[list[int]] = []
        with torch.inference_mode():
            for s in range(0, x.shape[0], batch_size):
                chunk = x[s:s + batch_size].to(self.device)
                if groups:
                    out += constrained_beam_decode(self.model, chunk, self.config.max_len, beam, groups, block)
                elif beam == 1:
                    out += greedy_decode(self.model, chunk, self.config.max_len, block)
                else:
                    out += beam_decode(self.model, chunk, self.config.max_len, beam, block)
        return out

    def __call__(self, images, beam_size: int | None = None, batch_size: int = 64,
                 mention: str | None = None, block_repeats: bool = True) -> list[str]:
        """One caption per image. `beam_size`: 1 is greedy, None the captioner's default;
        `mention`: word groups every caption must name ("wings|wing;belly"), "" none, None the
        captioner's default (constrained beam search); `block_repeats`: no part named twice and
        no trigram repeated (RepeatBlock)."""
        return [self.text(ids) for ids in self.decode_ids(images, beam_size, batch_size, mention, block_repeats)]

    def text(self, ids: Sequence[int]) -> str:
        return detokenize([self.vocab.id_to_word[int(i)] for i in ids if int(i) != 0])


def image_tensor(image, size: int) -> torch.Tensor:
    """A PIL image or an image file -> 3 x size x size in [-1, 1]: centre square crop, resized."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except FileNotFoundError:
            raise AttnGANError(f"image not found: {path}") from None
        except Image.DecompressionBombError as e:  # a small file that decodes to gigapixels
            raise AttnGANError(f"cannot read image {path}: {e}".splitlines()[0]) from None
        except OSError as e:
            raise AttnGANError(f"cannot read image {path}: {e}".splitlines()[0]) from None
    elif isinstance(image, Image.Image):
        im = image.convert("RGB")
    else:
        raise AttnGANError(f"expected a PIL image or an image path, got {type(image).__name__}")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.BICUBIC if s < size else Image.LANCZOS)
    arr = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1
