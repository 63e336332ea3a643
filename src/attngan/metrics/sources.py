"""The images `attngan eval` scores: a model's samples for the test split's captions or for a
prompt file, or a folder of images, each read as batches of `ScoredBatch`.

Generation follows the paper's protocol: captions of the test split are cycled (each pass over the
test images gives every image its next caption, so 30,000 samples cover CUB's 2,933 test images x
10 captions about once; image order and first caption seeded), one fixed noise draw per sample
from `seed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from attngan.data.layout import raw_caption_lines
from attngan.errors import AttnGANError
from attngan.metrics.extractors import quantize

if TYPE_CHECKING:
    from attngan.pipeline import AttnGANPipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class ScoredBatch:
    images: torch.Tensor                  # B x 3 x H x W in [-1, 1], quantised to 8 bits
    captions: list[str] | None            # the text each image was generated from
    full_captions: list[str] | None       # the whole caption (before words_num subsampling)
    class_ids: np.ndarray | None
    # Every stage's images, smallest first, unquantised (None: `images` is the only one). Only
    # streams with `reads_stages` look at them; `images` is always the top stage.
    stages: list[torch.Tensor] | None = None
    # The word ids and lengths G was conditioned on (generated images only).
    caption_ids: torch.Tensor | None = None
    caption_lens: torch.Tensor | None = None
    # G's word attention per attentional stage (B x T x h x w) and the words it attended over.
    attention: list[torch.Tensor] | None = None
    tokens: list[list[str]] | None = None
    # What each prompt asks for, {part: colour}, where a prompt file states it (None: parse the text).
    attributes: list[dict[str, str] | None] | None = None


class GeneratedImages:
    """Samples of a pipeline for the test split's captions, cycled as the paper's protocol."""

    def __init__(self, pipe: AttnGANPipeline, dataset, num_images: int, batch: int, seed: int):
        self.pipe, self.ds, self.num_images, self.batch = pipe, dataset, num_images, batch
        n, cpi = len(dataset), dataset.cfg.captions_per_image
        idx = np.arange(num_images)
        # Images in a seeded order, so a run shorter than the test split still spans its classes;
        # each pass over the images gives every image its next caption, starting from a seeded
        # one (CUB-style caption files put different parts first in different lines).
        rng = np.random.default_rng(seed)
        order, first = rng.permutation(n), rng.integers(cpi, size=n)
        self.items = order[idx % n]
        self.caption_k = (idx // n + first[self.items]) % cpi
        # One draw for the whole run, so a sample's noise does not depend on the batch size.
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn(num_images, pipe.config.gan.z_dim, generator=g)
        self.eps = torch.randn(num_images, pipe.config.gan.condition_dim, generator=g)
        self.image_size = pipe.config.data.image_size
        data, gan = pipe.config.data, pipe.config.gan
        # The DCGAN variant draws one image, at the top stage's size.
        self.stage_ids = [data.branch_num - 1] if gan.dcgan else list(range(data.branch_num))
        self.stage_sizes = [data.base_size * 2 ** i for i in self.stage_ids]
        self.raw_lines = raw_caption_lines(dataset)
        self.description = (f"{num_images} samples of {len(dataset)} {dataset.split} images x "
                            f"{cpi} captions (cycled), seed {seed}")

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self) -> Iterator[ScoredBatch]:
        vocab = self.pipe.vocab
        for s in range(0, self.num_images, self.batch):
            e = min(s + self.batch, self.num_images)
            caps, lens, texts, full = [], [], [], []
            for i, k in zip(self.items[s:e], self.caption_k[s:e]):
                ids, n = self.ds.padded_caption(int(i), int(k))
                caps.append(ids)
                lens.append(n)
                texts.append(vocab.decode(ids[:n].tolist()))
                raw = self.raw_lines[int(i)] if self.raw_lines is not None else None
                full.append(raw[int(k) % len(raw)] if raw else self.ds.caption_text(int(i), int(k)))
            out = self.pipe.generate_from_ids(torch.stack(caps), torch.tensor(lens), noise=self.z[s:e],
                                              ca_noise=self.eps[s:e])
            yield ScoredBatch(quantize(out.images[-1]), texts, full, self.ds.class_ids[self.items[s:e]],
                              stages=out.images, caption_ids=torch.stack(caps), caption_lens=torch.tensor(lens),
                              attention=out.attention, tokens=out.tokens)


# Prompt sets shipped with the package, by name.
PROMPT_SETS = {"synthbirds-free": Path(__file__).parent.parent / "assets" / "prompts" / "synthbirds-free.json"}


def read_prompts(path: str | Path) -> list[tuple[str, dict[str, str] | None]]:
    """A prompt file: one prompt per line (blank lines skipped), or a JSON list whose items are
    prompts or {"prompt": str, "attributes": {part: colour}}. Attributes, where given, are what
    binding and the round trip compare with; otherwise the caption grammar reads the prompt, which
    misses phrasings outside it ("the belly of this bird is pink")."""
    path = PROMPT_SETS[str(path)] if not Path(path).exists() and str(path) in PROMPT_SETS else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AttnGANError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AttnGANError(f"cannot read prompt file {path}: {e}".splitlines()[0]) from None
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise AttnGANError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(items, list):
            raise AttnGANError(f"{path}: expected a JSON list of prompts")
        out = []
        for k, item in enumerate(items):
            if isinstance(item, str):
                out.append((item, None))
            elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
                attrs = item.get("attributes")
                if attrs is not None and not (isinstance(attrs, dict) and all(
                        isinstance(a, str) and isinstance(v, str) for a, v in attrs.items())):
                    raise AttnGANError(f"{path}: item {k}: \"attributes\" must map parts to colours")
                out.append((item["prompt"], attrs))
            else:
                raise AttnGANError(f"{path}: item {k} is neither a prompt nor {{\"prompt\": ...}}")
    else:
        out = [(line.strip(), None) for line in text.splitlines() if line.strip()]
    out = [(p.strip(), a) for p, a in out]
    if not out or any(not p for p, _ in out):
        raise AttnGANError(f"{path}: no prompts" if not out else f"{path}: an empty prompt")
    return out


class PromptImages:
    """Samples of a pipeline for a list of prompts, cycled to `num_images` (one noise draw per
    sample from `seed`, as GeneratedImages): binding, the round trip and the attention metrics on
    prompts written by anyone, not only the test split's captions."""

    def __init__(self, pipe: AttnGANPipeline, prompts: list[tuple[str, dict[str, str] | None]], num_images: int, batch: int,
                 seed: int, name: str = "prompts"):
        self.pipe, self.prompts, self.num_images, self.batch = pipe, prompts, num_images, batch
        for text, _ in prompts:  # every prompt must have a word the model reads: fail before generating
            try:
                pipe.encode_caption(text)
            except AttnGANError as e:
                raise AttnGANError(f"prompt {text[:60]!r}: {e}".splitlines()[0]) from None
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn(num_images, pipe.config.gan.z_dim, generator=g)
        self.eps = torch.randn(num_images, pipe.config.gan.condition_dim, generator=g)
        data, gan = pipe.config.data, pipe.config.gan
        self.image_size = data.image_size
        self.stage_ids = [data.branch_num - 1] if gan.dcgan else list(range(data.branch_num))
        self.stage_sizes = [data.base_size * 2 ** i for i in self.stage_ids]
        self.description = f"{num_images} samples of {len(prompts)} prompts of {name} (cycled), seed {seed}"

    def __len__(self) -> int:
        return self.num_images

    def __iter__(self) -> Iterator[ScoredBatch]:
        n = len(self.prompts)
        for s in range(0, self.num_images, self.batch):
            e = min(s + self.batch, self.num_images)
            chosen = [self.prompts[i % n] for i in range(s, e)]
            ids, lens, _, _ = self.pipe.tokenize([p for p, _ in chosen])
            texts = [self.pipe.vocab.decode(row[:int(m)].tolist()) for row, m in zip(ids, lens)]
            out = self.pipe.generate_from_ids(ids, lens, noise=self.z[s:e], ca_noise=self.eps[s:e])
            yield ScoredBatch(quantize(out.images[-1]), texts, [p for p, _ in chosen], None,
                              stages=out.images, caption_ids=ids, caption_lens=lens,
                              attention=out.attention, tokens=out.tokens, attributes=[a for _, a in chosen])


class FolderImages:
    """Images of a folder (other systems' samples), sorted by name; captions from captions.json.

    captions.json maps file name -> caption, or -> {"caption": str, "class_id": int}; class ids
    let R-precision draw negatives from other classes (without them: from other captions).
    """

    def __init__(self, folder: str | Path, batch: int, num_images: int | None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AttnGANError(f"image folder not found: {self.folder}")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise AttnGANError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self.files = files[:num_images] if num_images else files
        self.batch = batch
        # True when captions.json gives the data set's class ids (not stand-ins made from the text).
        self.class_ids_given = False
        self.captions, self.class_ids = self._read_captions()

        with Image.open(self.files[0]) as im:
            if im.width != im.height:
                raise AttnGANError(f"{self.files[0]} is {im.width}x{im.height}; square images are expected")
            self.image_size = im.width
        # One set of images of unknown origin: scored as a top stage.
        self.stage_ids, self.stage_sizes = [None], [self.image_size]
        self.description = f"{len(self.files)} images of {self.folder}"

    def _read_captions(self) -> tuple[list[str] | None, np.ndarray | None]:
        path = self.folder / "captions.json"
        if not path.is_file():
            return None, None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AttnGANError(f"cannot parse {path}: {e}") from None
        if not isinstance(raw, dict):
            raise AttnGANError(f"{path} must map file names to captions")
        captions, classes = [], []
        for f in self.files:
            entry = raw.get(f.name)
            if entry is None:
                raise AttnGANError(f"{path} has no caption for {f.name}")
            if isinstance(entry, dict):
                captions.append(str(entry.get("caption", "")))
                classes.append(entry.get("class_id"))
            else:
                captions.append(str(entry))
                classes.append(None)
        if any(not c.strip() for c in captions):
            raise AttnGANError(f"{path} has an empty caption")
        if all(c is not None for c in classes):
            self.class_ids_given = True
            return captions, np.asarray(classes, dtype=np.int64)
        # No classes: captions with the same text stand for one class, so a duplicate caption is
        # never taken as a negative for its twin.
        ids: dict[str, int] = {}
        return captions, np.asarray([ids.setdefault(c, len(ids)) for c in captions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[ScoredBatch]:
        s = self.image_size
        for b in range(0, len(self.files), self.batch):
            arrs = []
            for f in self.files[b:b + self.batch]:
                try:
                    with Image.open(f) as im:
                        im = im.convert("RGB")
                        if im.size != (s, s):
                            im = im.resize((s, s), Image.BICUBIC)
                        arrs.append(np.asarray(im, dtype=np.uint8))
                except OSError as e:
                    raise AttnGANError(f"cannot read image {f}: {e}") from None
            x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 127.5 - 1
            caps = self.captions[b:b + self.batch] if self.captions else None
            cls = self.class_ids[b:b + self.batch] if self.class_ids is not None else None
            yield ScoredBatch(x, caps, caps, cls)
