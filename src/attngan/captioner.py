"""Captioner: images in, sentences out ("I think it's ...").

`Captioner.from_pretrained(name_or_folder)(images)` is the captioning counterpart of
AttnGANPipeline: a saved captioner folder (config.json, vocab.json, captioner.safetensors) or a
bundled one by name ("synthbirds-captioner"), greedy or beam-search decoding, batched, in eval mode.
Used by `attngan caption`, the round-trip metric of `attngan eval`, the demo report and the web page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from attngan.errors import AttnGANError
from attngan.io import CAPTIONER_FILE, bundled_names, load, resolve, state_dict_for_save, write_folder
from attngan.perf import resolve_device
from attngan.text import END_TOKEN, Vocabulary, tokenize

WEIGHTS_FILE = CAPTIONER_FILE

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


def save_captioner_folder(folder: str | Path, cfg, vocab: Vocabulary, model: torch.nn.Module,
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

@torch.no_grad()
def greedy_decode(model, images: torch.Tensor, max_len: int) -> list[list[int]]:
    """The most likely word at every step until <end> (id 0); word ids without the <end>."""
    dec = model.decoder
    regions = model.encoder(images)
    h, c, proj = dec.init_state(regions)
    B = images.shape[0]
    prev = torch.full((B,), dec.start_id, dtype=torch.long, device=images.device)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=images.device)
    for _ in range(max_len):
        logits, h, c, _ = dec.step(prev, h, c, regions, proj)
        prev = logits.argmax(1)
        for i in (~done).nonzero().flatten().tolist():
            if int(prev[i]) != 0:
                out[i].append(int(prev[i]))
        done |= prev == 0
        if bool(done.all()):
            break
    return out


class _Beams:
    """The live hypotheses of one image's beam search: word ids, summed log-probabilities and
    decoder states, starting from <start> alone."""

    def __init__(self, decoder, regions: torch.Tensor):
        self.decoder, self.regions = decoder, regions
        self.h, self.c, self.proj = decoder.init_state(regions)
        self.seqs: list[list[int]] = [[]]
        self.scores = torch.zeros(1, device=regions.device)
        self.prev = torch.full((1,), decoder.start_id, dtype=torch.long, device=regions.device)

    def log_probs(self) -> torch.Tensor:
        """k x V: each hypothesis's summed log-probability followed by each word."""
        k = len(self.seqs)
        logits, self.h, self.c, _ = self.decoder.step(self.prev, self.h, self.c, self.regions.expand(k, -1, -1),
                                                      self.proj.expand(k, -1, -1))
        return torch.log_softmax(logits.float(), 1) + self.scores[:, None]

    def keep(self, rows: list[int], words: list[int], scores: list[float]) -> None:
        """The next hypotheses: hypothesis rows[i] followed by words[i], scored scores[i]."""
        device = self.scores.device
        self.seqs = [self.seqs[r] + [w] for r, w in zip(rows, words)]
        self.scores = torch.tensor(scores, device=device)
        index = torch.tensor(rows, device=device)
        self.h, self.c = self.h[index], self.c[index]
        self.prev = torch.tensor(words, device=device)


def _image_beams(model, images: torch.Tensor):
    """A fresh _Beams for each image in turn (the encoder reads the batch at once)."""
    regions = model.encoder(images)
    for b in range(images.shape[0]):
        yield _Beams(model.decoder, regions[b:b + 1])


@torch.no_grad()
def beam_decode(model, images: torch.Tensor, max_len: int, beam_size: int) -> list[list[int]]:
    """Beam search per image: the `beam_size` best partial captions by summed log-probability; a
    finished caption is ranked by its mean log-probability per token (<end> included), so longer
    captions are not penalised for their length. Width 1 is greedy decoding exactly."""
    if beam_size < 1:
        raise AttnGANError(f"beam size must be at least 1, got {beam_size}")
    results = []
    for beams in _image_beams(model, images):
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len):
            logp = beams.log_probs()
            flat = logp.flatten()
            # Enough candidates that `beam_size` of them go on even if some end here.
            top_v, top_i = flat.topk(min(flat.numel(), 2 * beam_size))
            keep_rows, keep_words, keep_scores = [], [], []
            for v, i in zip(top_v.tolist(), top_i.tolist()):
                row, word = divmod(i, logp.shape[1])
                if word == 0:
                    finished.append((v / (len(beams.seqs[row]) + 1), beams.seqs[row]))
                else:
                    keep_rows.append(row)
                    keep_words.append(word)
                    keep_scores.append(v)
                if len(keep_rows) == beam_size:
                    break
            # Done once `beam_size` captions have ended (width 1: the first, as greedy decoding).
            if not keep_rows or len(finished) >= beam_size:
                break
            beams.keep(keep_rows, keep_words, keep_scores)
        if not finished:  # max_len reached: the best live beam, unfinished
            finished = [(float(beams.scores[0]) / max(len(beams.seqs[0]), 1), beams.seqs[0])]
        results.append(max(finished, key=lambda x: x[0])[1])
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
                            groups: list[set[int]]) -> list[list[int]]:
    """Constrained beam search (Anderson et al., EMNLP 2017, "Guided open vocabulary image
    captioning with constrained beam search"): one beam of `beam_size` per subset of the word
    groups already used, and only captions that hold a word of every group may end. The words
    around the constraints, colours included, are still the captioner's own choice.

    Why: a caption is one sample of what people wrote, who named 2-5 of a bird's parts at random,
    and the most likely caption tends to skip the parts that take a plural ("black wings" after a
    run of "a white belly, a ..."), although the captioner reads their colours as well as any
    other's when it names them. Asking it to name them makes the caption a description.
    Falls back to the unconstrained beam for an image where no constrained caption ends.
    """
    if not groups:
        return beam_decode(model, images, max_len, beam_size)
    full = (1 << len(groups)) - 1
    bits = {}
    for g, ids in enumerate(groups):
        for w in ids:
            bits[w] = bits.get(w, 0) | (1 << g)
    constraint_words = torch.tensor(sorted(bits))
    results = []
    for b, beams in enumerate(_image_beams(model, images)):
        masks = [0]  # per hypothesis: the groups it has a word of
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len):
            logp = beams.log_probs()
            # Candidates per hypothesis: its best words and every constraint word.
            top = logp.topk(min(beam_size + 1, logp.shape[1]), dim=1).indices
            cands: dict[int, list[tuple[float, int, int]]] = {}
            for row in range(len(beams.seqs)):
                words = set(top[row].tolist()) | set(constraint_words.tolist())
                for w in words:
                    v = float(logp[row, w])
                    mask = masks[row] | bits.get(w, 0)
                    if w == 0:
                        if masks[row] == full:
                            finished.append((v / (len(beams.seqs[row]) + 1), beams.seqs[row]))
                        continue
                    cands.setdefault(mask, []).append((v, row, w))
            keep = []
            for mask, items in cands.items():
                items.sort(key=lambda x: -x[0])
                keep += [(v, row, w, mask) for v, row, w in items[:beam_size]]
            if not keep or len(finished) >= beam_size:
                break
            beams.keep([r for _, r, _, _ in keep], [w for _, _, w, _ in keep], [v for v, *_ in keep])
            masks = [m for *_, m in keep]
        if finished:
            results.append(max(finished, key=lambda x: x[0])[1])
        else:
            results += beam_decode(model, images[b:b + 1], max_len, beam_size)
    return results


class Captioner:
    """A loaded captioner: `captioner(images)` -> one sentence per image."""

    def __init__(self, cfg, vocab: Vocabulary, model: torch.nn.Module, device: str | torch.device = "cpu",
                 meta: dict[str, Any] | None = None):
        self.config, self.vocab, self.meta = cfg, vocab, meta or {}
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path | None = None, device: str = "auto") -> "Captioner":
        """A captioner folder (or a train-captioner run folder: its best/), a bundled captioner by
        name ("synthbirds-captioner"), or None: the default bundled one."""
        dev = resolve_device(device)
        cfg, meta, vocab, model = load_captioner_folder(name_or_dir, dev)
        return cls(cfg, vocab, model, dev, meta)

    @property
    def digest(self) -> str:
        """Identity of the weights (for caches of captions of real images)."""
        import hashlib

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
                   mention: str | None = None) -> list[list[int]]:
        beam = self.config.beam_size if beam_size is None else int(beam_size)
        if beam < 1:
            raise AttnGANError(f"beam size must be at least 1, got {beam}")
        groups = parse_mention(self.config.mention if mention is None else mention, self.vocab)
        x = self.prepare(images)
        out: list[list[int]] = []
        with torch.inference_mode():
            for s in range(0, x.shape[0], batch_size):
                chunk = x[s:s + batch_size].to(self.device)
                if groups:
                    out += constrained_beam_decode(self.model, chunk, self.config.max_len, beam, groups)
                elif beam == 1:
                    out += greedy_decode(self.model, chunk, self.config.max_len)
                else:
                    out += beam_decode(self.model, chunk, self.config.max_len, beam)
        return out

    def __call__(self, images, beam_size: int | None = None, batch_size: int = 64,
                 mention: str | None = None) -> list[str]:
        """One caption per image. `beam_size`: 1 is greedy, None the captioner's default;
        `mention`: word groups every caption must name ("wings|wing;belly"), "" none, None the
        captioner's default (constrained beam search)."""
        return [self.text(ids) for ids in self.decode_ids(images, beam_size, batch_size, mention)]

    def text(self, ids: Sequence[int]) -> str:
        return detokenize([self.vocab.id_to_word[int(i)] for i in ids if int(i) != 0])


def image_tensor(image, size: int) -> torch.Tensor:
    """A PIL image or an image file -> 3 x size x size in [-1, 1]: centre square crop, resized."""
    from PIL import Image

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
