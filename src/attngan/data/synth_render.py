"""SynthBirds renderer: a stylised bird on a perch over a blurred background, with exact part labels.

Shapes are drawn with PIL at `ss`x the output size into two canvases (colour and part label),
then box-filtered down, which anti-aliases the colour and keeps the labels exact (each output
pixel takes the label of its centre sub-sample). The bird is composited over a background drawn
at a quarter of the size and upscaled (a cheap depth-of-field blur).

Coordinates: the bird is built in "bird units" (body half-length ~1), x towards the bill, y up.
`_Pose` maps them to output pixels (scale, facing left/right, a small rotation, placement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Well-separated RGB prototypes for CUB's 15 colour names. The key parts (wing, belly, crown,
# bill) only use KEY_COLOURS, whose closest pair (yellow/orange) is ~95 apart in RGB.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30), "white": (240, 240, 234), "grey": (135, 135, 140),
    "brown": (112, 66, 34), "yellow": (246, 214, 28), "green": (40, 150, 55),
    "blue": (35, 85, 215), "purple": (120, 45, 160), "pink": (245, 135, 185),
    "orange": (248, 122, 18), "red": (200, 22, 30), "buff": (222, 190, 140),
    "rufous": (180, 82, 38), "olive": (118, 122, 42), "iridescent": (20, 105, 115),
}
KEY_COLOURS = ("black", "white", "grey", "brown", "yellow", "green", "blue", "purple", "pink",
               "orange", "red")
BILL_COLOURS = ("black", "grey", "white", "yellow", "orange", "red", "pink", "brown")
LEG_COLOURS = ("black", "grey", "pink", "orange", "brown", "yellow")
EYE_COLOURS = ("black", "black", "brown", "red", "yellow")
EYERING_COLOURS = ("white", "yellow", "orange", "red", "blue")
SHEEN_COLOURS = ("iridescent",)       # rendered with a hue-shifting sheen, not a flat shade
SHEEN_RGB = ((120, 40, 170), (30, 160, 80))  # the sheen drifts towards purple and green

# Part labels in the mask PNGs, in drawing order (later parts cover earlier ones).
MASK_LABELS = ("background", "perch", "tail", "leg", "belly", "breast", "back", "wing", "nape",
               "throat", "crown", "eyering", "eye", "bill")
LABEL = {name: i for i, name in enumerate(MASK_LABELS)}
BIRD_LABELS = tuple(range(LABEL["tail"], len(MASK_LABELS)))
# CUB's 15 part locations, in CUB's order (parts/parts.txt).
CUB_PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
             "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat")

# Per-image shade noise: a brightness factor per part and a small per-channel offset. Together
# with the feather texture, lighting and grain, no pixel well inside a part strays further than
# SHADE_TOLERANCE (RGB distance) from its colour's prototype (tested).
SHADE_LUM = 0.06
SHADE_JITTER = 5.0
SHADE_TOLERANCE = 72.0

_SIZE_GEOMETRY = {  # body half-axes, head radius, tail length, leg length (bird units)
    "small": (1.00, 0.76, 0.56, 0.95, 0.42),
    "medium": (1.10, 0.72, 0.50, 1.15, 0.52),
    "large": (1.25, 0.70, 0.46, 1.45, 0.66),
}
_BILL_LENGTH = {"short": 0.6, "medium": 0.95, "long": 1.45}   # x head diameter (CUB's terms)
_BILL_DEPTH = {"pointed": 0.17, "cone": 0.27, "hooked": 0.19, "curved": 0.13}  # half-height / (2r)


@dataclass
class Species:
    """A class prototype: part colours and shapes; images add pose and shade variation."""

    class_id: int
    name: str
    split: str
    parts: dict[str, str]             # part -> colour name (eyering absent when there is none)
    bill_shape: str
    bill_length: str
    size: str
    tail_shape: str                   # square | rounded | notched | pointed
    belly_pattern: str                # plain | speckled
    tilt: float                       # degrees the body rises towards the head
    wing_length: float                # scales the wing's length
    shade: dict[str, float] = field(default_factory=dict)  # class-level brightness per part

    def truth(self) -> dict:
        return {"parts": dict(self.parts), "bill_shape": self.bill_shape,
                "bill_length": self.bill_length, "size": self.size}


@dataclass
class Rendered:
    image: np.ndarray                 # H x W x 3 uint8
    labels: np.ndarray                # H x W uint8, values index MASK_LABELS
    bbox: tuple[float, float, float, float]    # x, y, w, h around the bird (not the perch)
    part_locs: list[tuple[float, float, int]]  # per CUB_PARTS: x, y, visible
    pose: dict


class _Pose:
    """Bird units -> output pixels: rotate, mirror when facing left, scale, place (y down)."""

    def __init__(self, cx: float, cy: float, scale: float, facing: int, rotation: float):
        self.cx, self.cy, self.s, self.f, self.rot = cx, cy, scale, facing, rotation
        a = math.radians(rotation)
        self.c, self.sn = math.cos(a), math.sin(a)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        x, y = pts[:, 0], pts[:, 1]
        xr = x * self.c - y * self.sn
        yr = x * self.sn + y * self.c
        return np.stack([self.cx + self.s * self.f * xr, self.cy - self.s * yr], axis=1)


def _rot(pts: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return pts @ np.array([[c, s], [-s, c]])


def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int) -> np.ndarray:
    t = np.radians(np.linspace(t0, t1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


class _Canvas:
    """Colour + label canvases at `ss` x the output size; coordinates are output pixels."""

    def __init__(self, size: int, ss: int):
        self.ss = ss
        self.rgb = Image.new("RGB", (size * ss, size * ss))
        self.lab = Image.new("L", (size * ss, size * ss))
        self.d_rgb = ImageDraw.Draw(self.rgb)
        self.d_lab = ImageDraw.Draw(self.lab)

    def _xy(self, pts: np.ndarray) -> list[tuple[float, float]]:
        # Output pixel k spans [k, k+1); canvas pixel m is centred at m.
        q = pts * self.ss - 0.5
        return [(float(x), float(y)) for x, y in q]

    def poly(self, pts: np.ndarray, rgb: tuple[int, int, int], label: str | None) -> None:
        xy = self._xy(pts)
        self.d_rgb.polygon(xy, fill=rgb)
        if label is not None:
            self.d_lab.polygon(xy, fill=LABEL[label])

    def line(self, pts: np.ndarray, rgb: tuple[int, int, int], width: float,
             label: str | None = None) -> None:
        xy = self._xy(pts)
        w = max(1, int(round(width * self.ss)))
        self.d_rgb.line(xy, fill=rgb, width=w, joint="curve")
        if label is not None:
            self.d_lab.line(xy, fill=LABEL[label], width=w, joint="curve")


def _tone(rgb: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    """A texture shade of `rgb`: darker by k, or lighter for very dark colours."""
    if sum(rgb) < 3 * 70:
        return tuple(int(min(255, v + (1 - k) * 110)) for v in rgb)  # type: ignore[return-value]
    return tuple(int(v * k) for v in rgb)  # type: ignore[return-value]


def part_colours(species: Species, rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Per-image RGB of every part: prototype x class shade x image shade, plus channel jitter."""
    out = {}
    for part, name in species.parts.items():
        base = np.array(COLOUR_RGB[name], dtype=np.float64)
        lum = species.shade.get(part, 1.0) * (1.0 + rng.uniform(-SHADE_LUM, SHADE_LUM))
        rgb = base * lum + rng.uniform(-SHADE_JITTER, SHADE_JITTER, 3)
        out[part] = tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))
    return out


# ---------------------------------------------------------------------------------------------
# Geometry in bird units (facing right, y up).

@dataclass
class _Shapes:
    polys: list[tuple[str, np.ndarray]]        # (part, polygon) in drawing order
    texture: list[tuple[str, np.ndarray, float, float]]  # (part, polyline, width, tone)
    keypoints: dict[str, np.ndarray]           # CUB-ish key points
    leg_tops: np.ndarray                       # 2 x 2, where the legs leave the body
    leg_length: float
    eye: tuple[float, float, float, float]     # centre x, y, eye radius, ring radius


def _bird_shapes(sp: Species, rng: np.random.Generator) -> _Shapes:
    rx, ry, hr, tail_len, leg_len = _SIZE_GEOMETRY[sp.size]
    tilt = sp.tilt + rng.uniform(-4, 4)
    jit = lambda a: a * (1 + rng.uniform(-0.04, 0.04))  # noqa: E731 - small per-image proportions
    rx, ry, hr, tail_len = jit(rx), jit(ry), jit(hr), jit(tail_len)
    body = lambda pts: _rot(pts, tilt)  # noqa: E731 - body frame -> bird frame
    polys: list[tuple[str, np.ndarray]] = []
    texture: list[tuple[str, np.ndarray, float, float]] = []
    kp: dict[str, np.ndarray] = {}

    # Tail, behind the body: from the rump, backwards and a little down.
    b1, b2 = np.array([-0.80 * rx, 0.30 * ry]), np.array([-0.90 * rx, -0.22 * ry])
    d = np.array([-math.cos(math.radians(14)), -math.sin(math.radians(14))])
    n = np.array([-d[1], d[0]])                    # across the tail
    c = (b1 + b2) / 2 + d * tail_len
    wt = 0.30 * (1.15 if sp.tail_shape in ("square", "notched") else 1.0)
    if sp.tail_shape == "square":
        tip = [c + n * wt, c - n * wt]
    elif sp.tail_shape == "rounded":
        ang = np.radians(np.linspace(90, -90, 9))
        tip = [c + n * wt * np.sin(a) + d * 0.18 * np.cos(a) for a in ang]
    elif sp.tail_shape == "notched":
        tip = [c + n * wt + d * 0.08, c - d * 0.14, c - n * wt + d * 0.08]
    else:  # pointed
        tip = [c + n * wt * 0.55, c + d * 0.28, c - n * wt * 0.55]
    tail = np.array([b1, *tip, b2])
    polys.append(("tail", body(tail)))
    for o in (-0.12, 0.0, 0.12):
        texture.append(("tail", body(np.array([(b1 + b2) / 2 + d * 0.3 + n * o * 0.6,
                                               c - d * 0.2 + n * o])), 0.035, 0.85))
    kp["tail"] = body(((b1 + b2) / 2 + c)[None] / 2 + d[None] * 0.25)[0]

    # Body: belly is the whole ellipse; back and breast are segments drawn over it.
    polys.append(("belly", body(_arc(0, 0, rx, ry, 0, 360, 48))))
    if sp.belly_pattern == "speckled":
        for _ in range(int(rng.integers(7, 13))):
            t, r = rng.uniform(200, 330), rng.uniform(0.35, 0.8)
            p = np.array([r * rx * math.cos(math.radians(t)), r * ry * math.sin(math.radians(t))])
            texture.append(("belly", body(np.array([p, p + [0.07, -0.03]])), 0.06, 0.82))
    polys.append(("back", body(_arc(0, 0, rx, ry, 20, 165, 24))))
    polys.append(("breast", body(_arc(0, 0, rx, ry, -75, 20, 20))))
    kp["back"] = body(np.array([[-0.1 * rx, 0.82 * ry]]))[0]
    kp["breast"] = body(np.array([[0.72 * rx, -0.25 * ry]]))[0]
    kp["belly"] = body(np.array([[-0.2 * rx, -0.62 * ry]]))[0]

    # Wing: a leaf from the shoulder to a tip past the rump, blunt in front.
    s0 = np.array([0.48 * rx, 0.34 * ry])
    t0 = np.array([-1.18 * rx * sp.wing_length, -0.08 * ry])
    axis = t0 - s0
    length = float(np.linalg.norm(axis))
    dw = axis / length
    nw = np.array([dw[1], -dw[0]])                 # "up" across the wing
    width = 0.62 * ry / 0.72
    s = np.linspace(0, 1, 24)
    h = width * np.sin(np.pi * s ** 0.6)
    upper = s0 + np.outer(s * length, dw) + np.outer(h * 0.58, nw)
    lower = s0 + np.outer(s * length, dw) - np.outer(h * 0.42, nw)
    polys.append(("wing", body(np.concatenate([upper, lower[::-1]]))))
    for k, o in enumerate((-0.14, -0.05, 0.04, 0.13)):   # primaries
        a = s0 + dw * length * (0.5 + 0.05 * k) + nw * o * width
        b = s0 + dw * length * 0.93 + nw * o * width * 0.15
        texture.append(("wing", body(np.array([a, b])), 0.03, 0.8))
    cov = [s0 + dw * length * (0.30 + 0.05 * math.sin(v)) + nw * width * (0.07 + 0.42 * math.cos(v))
           for v in np.linspace(-0.3, math.pi + 0.3, 8)]    # covert edge
    texture.append(("wing", body(np.array(cov)), 0.03, 0.85))
    kp["wing"] = body((s0 + dw * length * 0.45)[None])[0]

    # Legs leave the body's underside; they are drawn straight down to the perch in pixels.
    leg_tops = body(np.array([[0.18 * rx, -0.92 * ry], [-0.08 * rx, -0.95 * ry]]))

    # Head: nape disk, throat sector in front, crown cap on top (world up, not body up).
    hc = body(np.array([[0.93 * rx, 0.58 * ry]]))[0]
    hx, hy = float(hc[0]), float(hc[1])
    polys.append(("nape", _arc(hx, hy, hr, hr, 0, 360, 40)))
    apex = np.array([[hx + 0.05 * hr, hy - 0.02 * hr]])
    polys.append(("throat", np.concatenate([apex, _arc(hx, hy, hr, hr, -115, 5, 20)])))
    polys.append(("crown", _arc(hx, hy, hr, hr, 5, 178, 28)))
    kp["crown"] = np.array([hx - 0.05 * hr, hy + 0.85 * hr])
    kp["forehead"] = np.array([hx + 0.72 * hr, hy + 0.55 * hr])
    kp["nape"] = np.array([hx - 0.75 * hr, hy - 0.25 * hr])
    kp["throat"] = np.array([hx + 0.45 * hr, hy - 0.7 * hr])
    ex, ey = hx + 0.44 * hr, hy + 0.2 * hr
    kp["eye"] = np.array([ex, ey])

    # Bill: from the front of the head along a direction close to horizontal.
    ang = math.radians(rng.uniform(-10, 6))
    u = np.array([math.cos(ang), math.sin(ang)])
    v = np.array([-u[1], u[0]])
    base = np.array([hx, hy]) + hr * 0.86 * np.array([math.cos(ang - 0.12), math.sin(ang - 0.12)])
    L = _BILL_LENGTH[sp.bill_length] * 2 * hr * (1 + rng.uniform(-0.05, 0.05))
    hb = _BILL_DEPTH[sp.bill_shape] * 2 * hr
    if sp.bill_shape == "pointed":
        uv = [(0, hb), (0.5 * L, 0.55 * hb), (L, 0), (0.5 * L, -0.45 * hb), (0, -hb)]
    elif sp.bill_shape == "cone":
        uv = [(0, hb), (0.55 * L, 0.42 * hb), (L, 0.02 * hb), (0.55 * L, -0.42 * hb), (0, -hb)]
    elif sp.bill_shape == "hooked":
        uv = [(0, hb), (0.6 * L, 0.72 * hb), (0.9 * L, 0.4 * hb), (L, -0.05 * hb),
              (0.97 * L, -0.55 * hb), (0.88 * L, -0.3 * hb), (0.8 * L, -0.3 * hb), (0, -hb)]
    else:  # curved: a thin decurved bill
        t = np.linspace(0, 1, 10)
        cy_ = -0.35 * L * t ** 2
        th = hb * (1 - t) + 0.02 * L
        uv = [(L * a, b + w) for a, b, w in zip(t, cy_, th)] + \
             [(L * a, b - w) for a, b, w in zip(t[::-1], cy_[::-1], th[::-1])]
    pts = np.array([base + u * a + v * b for a, b in uv])
    polys.append(("bill", pts))
    if sp.bill_shape != "curved":  # the gape line; a curved bill is too thin for one
        texture.append(("bill", np.array([base + u * 0.05 * L, base + u * 0.55 * L - v * 0.05 * hb]),
                        0.025, 0.85))
    kp["beak"] = base + u * 0.45 * L
    return _Shapes(polys, texture, kp, leg_tops, leg_len, (ex, ey, 0.10 * hr / 0.5, 0.17 * hr / 0.5))


# ---------------------------------------------------------------------------------------------
# Background.

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A blurred sky / foliage / dusk / overcast / marsh backdrop, float32 H x W x 3."""
    n = max(16, size // 4)
    kind = str(rng.choice(["sky", "foliage", "dusk", "overcast", "marsh"],
                          p=[0.3, 0.3, 0.12, 0.13, 0.15]))
    j = lambda rgb, a=18: np.clip(np.array(rgb) + rng.uniform(-a, a, 3), 0, 255)  # noqa: E731
    tops = {"sky": (110, 165, 225), "foliage": (60, 110, 55), "dusk": (235, 150, 110),
            "overcast": (175, 180, 185), "marsh": (150, 190, 225)}
    bottoms = {"sky": (205, 225, 240), "foliage": (130, 165, 90), "dusk": (250, 215, 160),
               "overcast": (215, 215, 210), "marsh": (90, 130, 110)}
    top, bottom = j(tops[kind]), j(bottoms[kind])
    y = np.linspace(0, 1, n)[:, None, None]
    grad = top * (1 - y) + bottom * y
    img = Image.fromarray(np.broadcast_to(grad, (n, n, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    def blob(rgb, r_lo: float, r_hi: float) -> None:
        x, y0, r = rng.uniform(-0.1, 1.1) * n, rng.uniform(-0.1, 1.1) * n, rng.uniform(r_lo, r_hi) * n
        d.ellipse([x - r, y0 - r * rng.uniform(0.5, 1.0), x + r, y0 + r * rng.uniform(0.5, 1.0)],
                  fill=tuple(int(v) for v in rgb))
    if kind == "foliage":
        for _ in range(int(rng.integers(10, 22))):
            g = rng.uniform(0.5, 1.3)
            blob(np.clip(np.array([70, 125, 55]) * g + rng.uniform(-15, 15, 3), 0, 255), 0.05, 0.22)
        for _ in range(int(rng.integers(0, 6))):   # bokeh highlights
            blob(j((220, 235, 190), 20), 0.02, 0.06)
    elif kind in ("sky", "overcast"):
        for _ in range(int(rng.integers(1, 6))):
            blob(j((240, 242, 245), 10), 0.08, 0.3)
    elif kind == "dusk":
        blob(j((255, 235, 180), 10), 0.06, 0.12)
    else:  # marsh: water below a horizon, reeds
        hz = rng.uniform(0.55, 0.8) * n
        d.rectangle([0, hz, n, n], fill=tuple(int(v) for v in j((95, 135, 150))))
        for _ in range(int(rng.integers(4, 12))):
            x = rng.uniform(0, n)
            d.line([(x, n), (x + rng.uniform(-2, 2), hz - rng.uniform(0.05, 0.3) * n)],
                   fill=tuple(int(v) for v in j((85, 110, 50))), width=1)
    img = img.filter(ImageFilter.GaussianBlur(radius=1.0))
    # Low-frequency brightness variation, then a smooth upscale (depth-of-field blur).
    light = Image.fromarray(rng.uniform(200, 255, (4, 4)).astype(np.uint8)).resize((n, n), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) * (np.asarray(light, dtype=np.float32)[..., None] / 235.0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Rendering.

_COVERAGE_LUT = [0] + [255] * 255   # label canvas -> opaque wherever anything was drawn


def supersampling(size: int) -> int:
    """Sub-samples per output pixel side: 4x4 for small images, whose edges matter most;
    2x2 above 128 px (9 would cost a third more time for edges one pixel wide)."""
    return 4 if size <= 128 else 2


def render_bird(sp: Species, rng: np.random.Generator, size: int) -> Rendered:
    """Draw one image of species `sp`; everything random comes from `rng`."""
    ss = supersampling(size)
    colours = part_colours(sp, rng)
    shapes = _bird_shapes(sp, rng)

    # Pose: bird width 60-86% of the image, facing either way, tilted a little, fully inside.
    facing = 1 if rng.random() < 0.5 else -1
    rotation = float(rng.uniform(-12, 12))
    allpts = np.concatenate([p for _, p in shapes.polys])
    probe = _Pose(0.0, 0.0, 1.0, facing, rotation)(allpts)
    tops = _Pose(0.0, 0.0, 1.0, facing, rotation)(shapes.leg_tops)
    w_u = float(probe[:, 0].max() - probe[:, 0].min())
    h_u = float(max(probe[:, 1].max(), tops[:, 1].max() + shapes.leg_length) - probe[:, 1].min())
    scale = min(rng.uniform(0.6, 0.86) * size / w_u, 0.88 * size / h_u)
    margin = 0.04 * size
    x_lo, x_hi = margin - scale * probe[:, 0].min(), size - margin - scale * probe[:, 0].max()
    y_lo = margin - scale * probe[:, 1].min()
    y_hi = size - margin - scale * (tops[:, 1].max() + shapes.leg_length)
    cx = float(rng.uniform(x_lo, max(x_lo, x_hi)))
    cy = float(rng.uniform(y_lo, max(y_lo, y_hi)))
    pose = _Pose(cx, cy, scale, facing, rotation)
    px = lambda pts: pose(np.asarray(pts, dtype=np.float64).reshape(-1, 2))  # noqa: E731

    canvas = _Canvas(size, ss)
    leg_tops = px(shapes.leg_tops)
    feet_y = float(leg_tops[:, 1].max() + shapes.leg_length * scale)
    slope = float(rng.uniform(-0.08, 0.08))
    perch_y = lambda x: feet_y + slope * (x - leg_tops[0, 0])  # noqa: E731

    # Perch: a branch across the image under the feet, with bark marks and maybe a leafy twig.
    thick = 0.3 * scale
    bark = tuple(int(v) for v in np.clip(np.array([98, 72, 50]) * rng.uniform(0.7, 1.25)
                                         + rng.uniform(-12, 12, 3), 0, 255))
    x0, x1 = -0.1 * size, 1.1 * size
    canvas.poly(np.array([[x0, perch_y(x0)], [x1, perch_y(x1)],
                          [x1, perch_y(x1) + thick], [x0, perch_y(x0) + thick]]), bark, "perch")
    for _ in range(int(rng.integers(3, 8))):
        x = rng.uniform(0, size)
        yb = perch_y(x) + thick * rng.uniform(0.3, 0.7)
        canvas.line(np.array([[x, yb], [x + rng.uniform(0.2, 0.6) * scale, yb]]),
                    _tone(bark, 0.75), 0.04 * scale)
    if rng.random() < 0.5:
        xt = float(rng.choice([rng.uniform(0.02, 0.25), rng.uniform(0.75, 0.98)])) * size
        tip = np.array([xt + rng.uniform(-0.6, 0.6) * scale, perch_y(xt) - rng.uniform(0.8, 1.6) * scale])
        canvas.line(np.array([[xt, perch_y(xt) + thick / 2], tip]), bark, 0.1 * scale, "perch")
        leaf = tuple(int(v) for v in np.clip(np.array([60, 135, 50]) * rng.uniform(0.8, 1.2), 0, 255))
        for _ in range(int(rng.integers(2, 5))):
            c = tip + rng.uniform(-0.3, 0.3, 2) * scale
            r = 0.22 * scale
            canvas.poly(_arc(c[0], c[1], r, r * 0.5, 0, 360, 16), leaf, "perch")

    # Legs and toes, straight down to the perch.
    leg_mid = []
    for k in range(2):
        top = leg_tops[k]
        foot = np.array([top[0], perch_y(top[0]) + 0.03 * scale])
        leg_mid.append((top + foot) / 2)
        canvas.line(np.array([top, foot]), colours["leg"], 0.09 * scale, "leg")
        for dx in (-0.16, 0.0, 0.2):
            canvas.line(np.array([foot, foot + [dx * facing * scale, 0.05 * scale]]),
                        colours["leg"], 0.06 * scale, "leg")

    # The bird; each part's feather marks go on right after it, so later parts cover them.
    for part, poly in shapes.polys:
        canvas.poly(px(poly), colours[part], part)
        for tpart, line, width, k in shapes.texture:
            if tpart == part:
                canvas.line(px(line), _tone(colours[part], k), width * scale)
        if part == "crown":  # the eye sits on the crown's lower edge
            ex, ey, er, rr = shapes.eye
            if "eyering" in colours:
                canvas.poly(px(_arc(ex, ey, rr, rr, 0, 360, 20)), colours["eyering"], "eyering")
            canvas.poly(px(_arc(ex, ey, er, er, 0, 360, 16)), colours["eye"], "eye")
            canvas.poly(px(_arc(ex + 0.3 * er, ey + 0.3 * er, 0.3 * er, 0.3 * er, 0, 360, 8)),
                        (250, 250, 250), None)

    # Down-sample: box filter = exact coverage; labels take each pixel's centre sub-sample.
    lab_ss = np.asarray(canvas.lab)
    labels = np.ascontiguousarray(lab_ss[ss // 2::ss, ss // 2::ss])
    fg = np.asarray(canvas.rgb.reduce(ss), dtype=np.float32)
    alpha = (np.asarray(canvas.lab.point(_COVERAGE_LUT).reduce(ss), dtype=np.float32)
             / 255.0)[..., None]
    for part, name in sp.parts.items():
        if name in SHEEN_COLOURS:
            fg = _sheen(fg, lab_ss, LABEL[part], ss, colours[part], rng)

    # Soft light from above over the bird, then the grain of a photograph.
    bird = labels >= LABEL["tail"]
    ys = np.nonzero(bird.any(axis=1))[0]
    yc, yh = (ys.mean(), max(1.0, (ys.max() - ys.min()) / 2)) if len(ys) else (size / 2, size / 2)
    light = 1.0 + 0.05 * np.clip((yc - np.arange(size, dtype=np.float32)) / yh, -1, 1)
    out = fg * light[:, None, None] + _background(rng, size) * (1.0 - alpha)
    out += (rng.random((size, size, 3), dtype=np.float32) - 0.5) * 8.0  # uniform, sd ~2.3
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    bbox = _bbox(lab_ss, ss)
    part_locs = _part_locs({k: px(p)[0] for k, p in shapes.keypoints.items()}, leg_mid, facing, size)
    pose_info = {"cx": round(cx, 2), "cy": round(cy, 2), "scale": round(scale, 3),
                 "facing": "right" if facing > 0 else "left", "rotation": round(rotation, 2)}
    return Rendered(image, labels, bbox, part_locs, pose_info)


def _sheen(fg: np.ndarray, lab_ss: np.ndarray, label: int, ss: int, rgb: tuple[int, int, int],
           rng: np.random.Generator) -> np.ndarray:
    """Iridescence: the part's colour drifts to purple and green in bands across it."""
    size = fg.shape[0]
    cov = (lab_ss == label).reshape(size, ss, size, ss).mean(axis=(1, 3)).astype(np.float32)
    if not cov.any():
        return fg
    phi = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = np.sin((xx * math.cos(phi) + yy * math.sin(phi)) * (2 * math.pi / (0.12 * size))
                  + rng.uniform(0, 2 * math.pi))
    base = np.array(rgb, dtype=np.float32)
    purple, green = (np.array(c, dtype=np.float32) for c in SHEEN_RGB)
    target = base + 0.55 * np.clip(wave, 0, 1)[..., None] * (purple - base) \
        + 0.55 * np.clip(-wave, 0, 1)[..., None] * (green - base)
    return fg + cov[..., None] * (target - base)


def _bbox(lab_ss: np.ndarray, ss: int) -> tuple[float, float, float, float]:
    bird = lab_ss >= LABEL["tail"]
    rows = np.nonzero(bird.any(axis=1))[0]
    cols = np.nonzero(bird.any(axis=0))[0]
    x0, x1 = cols[0] / ss, (cols[-1] + 1) / ss
    y0, y1 = rows[0] / ss, (rows[-1] + 1) / ss
    return (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))


def _part_locs(pts: dict[str, np.ndarray], legs: list[np.ndarray], facing: int,
               size: int) -> list[tuple[float, float, int]]:
    """CUB part locations (pixels). A right-facing bird shows its right eye and wing; both legs
    show (the near one is the front one)."""
    near, far = ("right", "left") if facing > 0 else ("left", "right")
    out = []
    for name in CUB_PARTS:
        side, _, what = name.rpartition(" ")
        if what == "leg":
            x, y = legs[0 if side == near else 1]
        elif side == far:
            out.append((0.0, 0.0, 0))
            continue
        else:
            x, y = pts[what]
        inside = 0 <= x < size and 0 <= y < size
        out.append((round(float(x), 1), round(float(y), 1), int(inside)))
    return out
