"""Pictures: image grids and per-word attention overlays (the paper's Fig. 1 and Fig. 5 style)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from attngan.fileio import atomic_write_bytes
from attngan.text import Vocabulary


def to_pil(img: torch.Tensor) -> Image.Image:
    """3 x H x W in [-1, 1] -> RGB PIL image (clamped: the original wrapped around instead)."""
    arr = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_png(im: Image.Image, path: str | Path) -> Path:
    atomic_write_bytes(path, png_bytes(im))
    return Path(path)


def image_grid(images: list[Image.Image], ncol: int, pad: int = 2, bg=(255, 255, 255)) -> Image.Image:
    if not images:
        raise ValueError("image_grid needs at least one image")
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    nrow = (len(images) + ncol - 1) // ncol
    grid = Image.new("RGB", (ncol * (w + pad) + pad, nrow * (h + pad) + pad), bg)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        grid.paste(im, (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


# Stops of an inferno-like map (black, purple, red, orange, pale yellow): monotonic in lightness,
# so the brightest region of a caption's tiles is the most attended one in colour and in greyscale alike.
_HEAT_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
DIM = 0.4            # brightness of the image under the heat map
HEAT_OPACITY = 0.9   # the heat's opacity where a map peaks
TOP_WORDS = 5        # words highlighted as attending most (the serve page highlights as many)


def heat_colours(x: np.ndarray) -> np.ndarray:
    """[0, 1] values -> RGB floats along the heat map's stops (piecewise linear)."""
    stops = _HEAT_STOPS
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    t = (pos - lo)[..., None]
    return stops[lo] * (1 - t) + stops[lo + 1] * t


def upsample_maps(att: torch.Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """T x h x w attention -> T x H x W (or size x size), bilinear: the values, not rescaled."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    maps = att.detach().float().cpu()[None]
    return F.interpolate(maps, size=hw, mode="bilinear", align_corners=False)[0].numpy()


def dimmed(image: Image.Image) -> np.ndarray:
    """The image as the heat map's background: half desaturated, at DIM brightness (float RGB)."""
    base = np.asarray(image.convert("RGB"), np.float32)
    return (0.5 * base + 0.5 * base.mean(-1, keepdims=True)) * DIM


def _heat_over(back: np.ndarray, m: np.ndarray) -> Image.Image:
    """[0, 1] map m as heat over the background: its opacity follows the map."""
    a = (HEAT_OPACITY * m)[..., None]
    out = back * (1 - a) + heat_colours(m) * a
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")


def attention_overlays(image: Image.Image, att: torch.Tensor) -> list[Image.Image]:
    """Each word's attention (T x h x w, one caption) as a heat map over the dimmed image, on one
    scale shared by the caption's words (the paper's figures do the same).

    The maps are upsampled to the image bilinearly and stretched together between their common
    minimum and peak: a word that drew one region glows there, a word whose attention is spread
    evenly stays near the dimmed image, so the words that place the parts stand out at a glance.
    Where a word did not attend the image stays dimmed; where it did the colour runs from purple
    to pale yellow. The report, `attngan generate` and the serve page all draw with it.
    """
    maps = upsample_maps(att, (image.height, image.width))
    lo = float(maps.min())
    span = max(float(maps.max()) - lo, 1e-12)
    back = dimmed(image)
    return [_heat_over(back, (m - lo) / span) for m in maps]


def attention_overlay(image: Image.Image, att: torch.Tensor) -> Image.Image:
    """One map alone (h x w) as a heat map over the dimmed image, stretched between its own
    minimum and peak: attention_overlays for a single word."""
    return attention_overlays(image, att[None])[0]


def word_confidence(att: torch.Tensor, cap_len: int) -> torch.Tensor:
    """Per word, the attention mass above twice the uniform level (the original's ranking)."""
    t = 2.0 / max(cap_len, 1)
    flat = att.flatten(1)
    return (flat * (flat > 2 * t)).sum(1) + 1e-6 * flat.sum(1)  # ties broken by total mass


def top_words(att: torch.Tensor, cap_len: int, k: int = TOP_WORDS) -> list[int]:
    """Indices of the k words whose attention is most concentrated, among those with any (the
    serve page ranks its words by the same score)."""
    conf = word_confidence(att[:cap_len], cap_len)
    order = sorted(range(cap_len), key=lambda i: -float(conf[i]))
    return sorted(i for i in order[:k] if float(conf[i]) > 1e-3)


HIGHLIGHT = (255, 140, 0)


def _label(im: Image.Image, text: str, height: int = 18, strong: bool = False) -> Image.Image:
    """The tile with its word above; a highlighted word gets a coloured bar and frame."""
    out = Image.new("RGB", (im.width, im.height + height), HIGHLIGHT if strong else (255, 255, 255))
    out.paste(im, (0, height))
    draw = ImageDraw.Draw(out)
    draw.text((3, 2), text, fill=(0, 0, 0), font=_font(14 if height >= 18 else 12))
    if strong:
        draw.rectangle([0, height, im.width - 1, out.height - 1], outline=HIGHLIGHT, width=3)
    return out


def word_attention_figure(image: torch.Tensor, attention: torch.Tensor, tokens: list[str],
                          top_k: int | None = None, size: int = 128, ncol: int | None = None,
                          highlight: bool = False) -> Image.Image:
    """The image, then one labelled heat map per word (top_k by attention mass if given), in rows
    of `ncol` tiles (default: one row). With `highlight`, the TOP_WORDS most attending words are
    framed.

    `attention` is T x h x w for one caption; padding rows beyond len(tokens) are ignored.
    """
    T = len(tokens)
    att = attention[:T]
    order = list(range(T))
    if top_k is not None and top_k < T:
        conf = word_confidence(att, T)
        order = sorted(torch.topk(conf, top_k).indices.tolist())
    strong = set(top_words(att, T)) if highlight else set()
    base = to_pil(image).resize((size, size), Image.BICUBIC)
    height = 18 if size >= 96 else 16
    overlays = attention_overlays(base, att)  # one scale for all the caption's words, shown or not
    tiles = [_label(base, "image", height)]
    for i in order:
        text = tokens[i][:12] if highlight else f"{i}:{tokens[i][:10]}"
        tiles.append(_label(overlays[i], text, height, strong=i in strong))
    return image_grid(tiles, ncol=min(ncol or len(tiles), len(tiles)))


def caption_strip(text: str, width: int, height: int = 18) -> Image.Image:
    im = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(im).text((3, 2), text, fill=(0, 0, 0), font=_font(13))
    return im


def attention_grid(images: torch.Tensor, attention: list[torch.Tensor], tokens: list[list[str]],
                   rows: int = 8, size: int = 96) -> Image.Image:
    """Several captions, one row each with its caption written above (DAMSM / training previews)."""
    parts = []
    for b in range(min(rows, images.shape[0])):
        row = word_attention_figure(images[b], attention[b], tokens[b], size=size)
        parts.append(caption_strip(" ".join(tokens[b]), row.width))
        parts.append(row)
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out


@torch.no_grad()
def save_samples(G_ema, text_encoder, fixed, vocab: Vocabulary, path: Path) -> None:
    """One row per caption: every stage, then the last stage's per-word attention."""
    dev = next(G_ema.parameters()).device
    captions, cap_lens = fixed["captions"], fixed["cap_lens"]
    T = int(cap_lens.max())
    captions = captions[:, :T]
    words, sent = text_encoder(captions.to(dev), cap_lens.to(dev))
    images, attention, _, _ = G_ema(fixed["z"].to(dev), sent, words, (captions == 0).to(dev),
                                    ca_noise=fixed["eps"].to(dev))
    rows = []
    size = images[-1].shape[-1]
    for b in range(captions.shape[0]):
        tokens = [vocab.id_to_word[int(i)] for i in captions[b, : int(cap_lens[b])]]
        stage_tiles = [to_pil(img[b].cpu()).resize((size, size), Image.NEAREST) for img in images]
        att = attention[-1][b].cpu() if attention else None
        row = Image.new("RGB", (1, 1))
        if att is not None:
            row = word_attention_figure(images[-1][b].cpu(), att, tokens, top_k=5, size=size)
        strip = caption_strip(" ".join(tokens), size * len(stage_tiles) + row.width)
        body = max(size, row.height)  # the attention row carries its own word labels on top
        canvas = Image.new("RGB", (strip.width, strip.height + body), (255, 255, 255))
        canvas.paste(strip, (0, 0))
        for i, t in enumerate(stage_tiles):
            canvas.paste(t, (i * size, strip.height + body - size))
        canvas.paste(row, (size * len(stage_tiles), strip.height))
        rows.append(canvas)
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    save_png(out, path)
