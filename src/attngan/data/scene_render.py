"""SynthScenes renderer: a background with sky and ground, and groups of objects drawn on it, with exact instance labels.

Every factor is drawn independently: the background (street, grass, lake, beach, snow), each
object's category, colour, count, and whether a group stands on the ground or flies in the sky.
Objects are polygons in "object units" (x across, y up from the object's base), drawn with PIL at
`ss` x the output size into a colour canvas and a label canvas, then box-filtered down (exact
coverage for anti-aliasing; each output pixel's label is its centre sub-sample), and composited
over the background. Label 0 is sky and scenery above the horizon, 1 the ground, 2 + k object k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# COCO 2014's ids and super-categories for the categories drawn here.
CATEGORIES: dict[str, tuple[int, str]] = {
    "car": (3, "vehicle"), "airplane": (5, "vehicle"), "bus": (6, "vehicle"), "boat": (9, "vehicle"),
    "fire hydrant": (11, "outdoor"), "stop sign": (13, "outdoor"), "sheep": (20, "animal"),
    "cow": (21, "animal"), "umbrella": (28, "accessory"), "kite": (38, "sports"),
    "banana": (52, "food"), "clock": (85, "indoor"),
}
CATEGORY_NAMES = tuple(CATEGORIES)
# Well-separated object colours; every object's main body is drawn in one of them.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35), "orange": (245, 125, 20), "yellow": (245, 212, 35),
    "green": (40, 140, 50), "blue": (35, 80, 215), "purple": (125, 45, 165),
    "pink": (245, 135, 190), "brown": (115, 68, 32), "white": (242, 242, 238),
    "black": (28, 28, 30),
}
COLOURS = tuple(COLOUR_RGB)
BACKGROUNDS = ("street", "grass", "lake", "beach", "snow")
PLACES = ("sky",) + BACKGROUNDS        # a group's place: the sky, or the background's ground
MASK_SKY, MASK_GROUND, MASK_FIRST_OBJECT = 0, 1, 2
# Per-image shade noise on an object's colour: brightness factor and per-channel offset.
SHADE_LUM = 0.06
SHADE_JITTER = 6.0

# Shape extents in object units (width, height) and the size of one unit as a share of the
# image side at the nearest depth: chosen so one object of each is clearly readable at 64 px.
EXTENT: dict[str, tuple[float, float]] = {
    "car": (1.0, 0.5), "bus": (1.0, 0.62), "boat": (1.0, 1.0), "airplane": (1.0, 0.46),
    "kite": (0.62, 1.0), "stop sign": (0.48, 1.0), "fire hydrant": (0.46, 0.76),
    "clock": (0.52, 1.0), "cow": (1.0, 0.72), "sheep": (0.92, 0.64), "banana": (0.98, 0.42),
    "umbrella": (0.92, 0.95),
}
UNIT: dict[str, float] = {
    "car": 0.36, "bus": 0.46, "boat": 0.32, "airplane": 0.44, "kite": 0.3, "stop sign": 0.36,
    "fire hydrant": 0.3, "clock": 0.36, "cow": 0.36, "sheep": 0.32, "banana": 0.36,
    "umbrella": 0.32,
}
FACES = {"car", "bus", "boat", "airplane", "cow", "sheep", "banana"}  # drawn facing left or right


@dataclass
class ObjectSpec:
    """One object to draw: where its base centre is (pixels), how big one unit is, which way."""

    category: str
    colour: str
    cx: float
    base_y: float
    unit: float
    facing: int = 1

    def box(self) -> tuple[float, float, float, float]:
        w, h = EXTENT[self.category]
        return (self.cx - w * self.unit / 2, self.base_y - h * self.unit,
                self.cx + w * self.unit / 2, self.base_y)


@dataclass
class RenderedScene:
    image: np.ndarray                  # H x W x 3 uint8
    labels: np.ndarray                 # H x W uint8: MASK_SKY, MASK_GROUND, 2 + object index
    polygons: list[list[list[float]]]  # per object: every polygon drawn of it, flat [x0, y0, x1, ...]
    bboxes: list[tuple[float, float, float, float]]   # per object: x, y, w, h of what is visible
    areas: list[int]                   # per object: visible pixels
    drawn: list[int]                   # per object: pixels it covered when drawn (before occlusion)


# ---------------------------------------------------------------------------------------------
# Colours.

def _tone(rgb, k: float) -> tuple[int, int, int]:
    """A darker shade of `rgb`, or a lighter one for very dark colours (outlines, details)."""
    if sum(rgb) < 3 * 70:
        return tuple(int(min(255, v + (1 - k) * 150)) for v in rgb)  # type: ignore[return-value]
    return tuple(int(v * k) for v in rgb)  # type: ignore[return-value]


def object_rgb(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(COLOUR_RGB[colour], dtype=np.float64)
    rgb = base * (1 + rng.uniform(-SHADE_LUM, SHADE_LUM)) + rng.uniform(-SHADE_JITTER, SHADE_JITTER, 3)
    return tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))  # type: ignore[return-value]


def _j(rng: np.random.Generator, rgb, a: float = 12.0) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(rgb) + rng.uniform(-a, a, 3), 0, 255))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Backgrounds, drawn at twice the output size and halved (smooth horizon and details).

def sky_floor(background: str, horizon: float, size: int) -> float:
    """The lowest y (pixels) a flying object may reach: above the buildings, hills, trees."""
    return horizon - 0.1 * size


def render_background(background: str, horizon: float, size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Sky above `horizon` (pixels), the background's ground below; float32 H x W x 3."""
    s2 = 2 * size
    hz = horizon * 2
    pale = background == "snow"
    top = np.array(_j(rng, (170, 190, 210) if pale else (95, 150, 225), 10), dtype=np.float64)
    low = np.array(_j(rng, (215, 222, 230) if pale else (190, 215, 240), 8), dtype=np.float64)
    t = np.clip(np.arange(s2, dtype=np.float64) / max(1.0, hz), 0, 1)[:, None]
    sky = (top * (1 - t) + low * t).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(sky[:, None, :], (s2, s2, 3))))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):   # clouds
        cx, cy = rng.uniform(0, s2), rng.uniform(0.05, 0.6) * hz
        for _ in range(3):
            r = rng.uniform(0.04, 0.08) * s2
            ox = cx + rng.uniform(-1.5, 1.5) * r
            d.ellipse([ox - r * 1.4, cy - r * 0.6, ox + r * 1.4, cy + r * 0.6], fill=_j(rng, (246, 247, 250), 4))

    if background == "street":
        x = -rng.uniform(0, 0.1) * s2
        while x < s2:                          # skyline
            w, h = rng.uniform(0.08, 0.16) * s2, rng.uniform(0.03, 0.1) * s2
            c = _j(rng, (150, 140, 135), 25)
            d.rectangle([x, hz - h, x + w, hz], fill=c)
            for wy in np.arange(hz - h + 0.02 * s2, hz - 0.015 * s2, 0.025 * s2):
                for wx in np.arange(x + 0.015 * s2, x + w - 0.015 * s2, 0.025 * s2):
                    d.rectangle([wx, wy, wx + 0.008 * s2, wy + 0.008 * s2], fill=_tone(c, 0.7))
            x += w
        d.rectangle([0, hz, s2, s2], fill=_j(rng, (112, 112, 116), 8))           # asphalt
        d.rectangle([0, hz, s2, hz + 0.04 * s2], fill=_j(rng, (175, 170, 160), 8))  # far kerb
        lane_y = hz + rng.uniform(0.45, 0.6) * (s2 - hz)
        for x0 in np.arange(-rng.uniform(0, 0.1) * s2, s2, 0.16 * s2):
            d.rectangle([x0, lane_y - 0.006 * s2, x0 + 0.08 * s2, lane_y + 0.006 * s2],
                        fill=(235, 235, 225))
    elif background == "grass":
        for x0 in np.arange(-0.05 * s2, s2, 0.05 * s2):   # tree line
            r = rng.uniform(0.03, 0.06) * s2
            d.ellipse([x0 - r, hz - r * 1.4, x0 + r, hz + r * 0.4], fill=_j(rng, (40, 90, 45), 10))
        d.rectangle([0, hz, s2, s2], fill=_j(rng, (115, 170, 70), 8))
        for x0, y0, dx, c in _scatter(rng, int(60 * size / 64), s2, hz, (85, 140, 55), 10):   # tufts
            d.line([(x0, y0), (x0 + dx, y0 - 0.012 * s2)], fill=c, width=2)
    elif background == "lake":
        for x0 in np.arange(-0.1 * s2, s2, 0.12 * s2):    # far shore hills
            r = rng.uniform(0.08, 0.14) * s2
            d.ellipse([x0 - r, hz - r * 0.5, x0 + r, hz + r * 0.5], fill=_j(rng, (70, 110, 80), 10))
        d.rectangle([0, hz, s2, s2], fill=_j(rng, (55, 105, 160), 8))
        for x0, y0, _, c in _scatter(rng, int(40 * size / 64), s2, hz + 0.01 * s2, (120, 165, 205), 10):
            w = (0.02 + 0.05 * (y0 - hz) / (s2 - hz)) * s2                          # ripples
            d.line([(x0, y0), (x0 + w, y0)], fill=c, width=2)
    elif background == "beach":
        sea = hz + rng.uniform(0.12, 0.2) * (s2 - hz)
        d.rectangle([0, hz, s2, sea], fill=_j(rng, (45, 120, 170), 8))
        d.rectangle([0, sea, s2, s2], fill=_j(rng, (225, 200, 150), 8))
        d.line([(0, sea), (s2, sea)], fill=(245, 245, 240), width=3)          # surf
        for x0, y0, _, c in _scatter(rng, int(30 * size / 64), s2, sea, (200, 175, 130), 10):
            d.point([(x0, y0)], fill=c)
    elif background == "snow":
        for x0 in np.arange(-0.1 * s2, s2, 0.18 * s2):    # mountains
            w, h = rng.uniform(0.12, 0.2) * s2, rng.uniform(0.06, 0.1) * s2
            d.polygon([(x0 - w, hz), (x0, hz - h), (x0 + w, hz)], fill=_j(rng, (120, 130, 150), 10))
            d.polygon([(x0 - w * 0.3, hz - h * 0.7), (x0, hz - h), (x0 + w * 0.3, hz - h * 0.7)],
                      fill=(245, 248, 252))
        d.rectangle([0, hz, s2, s2], fill=_j(rng, (228, 234, 242), 5))
        for x0, y0, _, c in _scatter(rng, int(20 * size / 64), s2, hz, (0, 0, 0), 0):   # drifts
            d.arc([x0 - 0.05 * s2, y0 - 0.01 * s2, x0 + 0.05 * s2, y0 + 0.01 * s2], 180, 360,
                  fill=(200, 210, 225), width=2)
    else:
        raise ValueError(f"unknown background {background!r}")
    return np.asarray(img.reduce(2), dtype=np.float32)


def _scatter(rng: np.random.Generator, n: int, s2: int, y_lo: float, rgb, a: float):
    """n random (x, y, dx, colour) for texture marks below y_lo, drawn at once."""
    xs, ys = rng.uniform(0, s2, n), rng.uniform(y_lo, s2, n)
    dx = rng.uniform(-2, 2, n)
    cols = np.clip(np.array(rgb) + rng.uniform(-a, a, (n, 3)), 0, 255).astype(int)
    return [(float(x), float(y), float(d), tuple(int(v) for v in c)) for x, y, d, c in zip(xs, ys, dx, cols)]


# ---------------------------------------------------------------------------------------------
# Objects: (polygon, colour) lists in object units, facing right, y up from the base.

def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20, t0: float = 0,
             t1: float = 360) -> np.ndarray:
    t = np.radians(np.linspace(t0, t1, n, endpoint=(t1 - t0) < 360))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _bar(a, b, w: float) -> np.ndarray:
    """A straight stroke from a to b, `w` units wide, as a polygon."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    n = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d))) * w / 2
    return np.array([a + n, b + n, b - n, a - n])


_GLASS = (165, 195, 215)
_TYRE = (30, 30, 32)
_METAL = (125, 125, 130)
_DARK = (45, 42, 40)


def _shape(category: str, rgb, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple, bool]]:
    """(polygon, fill, is-body) in drawing order; is-body parts get the object's outline."""
    dark, light = _tone(rgb, 0.62), _tone(rgb, 0.85)
    P: list[tuple[np.ndarray, tuple, bool]] = []
    add = lambda pts, fill, body=False: P.append((np.asarray(pts, float), fill, body))  # noqa: E731
    if category == "car":
        add([[-0.5, 0.08], [0.5, 0.08], [0.5, 0.24], [0.42, 0.29], [0.2, 0.3], [0.08, 0.48],
             [-0.28, 0.48], [-0.4, 0.3], [-0.5, 0.27]], rgb, True)
        add([[0.03, 0.32], [0.17, 0.32], [0.07, 0.45], [0.03, 0.45]], _GLASS)
        add([[-0.25, 0.32], [-0.01, 0.32], [-0.01, 0.45], [-0.21, 0.45]], _GLASS)
        add(_rect(0.44, 0.19, 0.5, 0.23), (250, 235, 150))
        for x in (-0.3, 0.3):
            add(_ellipse(x, 0.1, 0.1, 0.1, 16), _TYRE)
            add(_ellipse(x, 0.1, 0.045, 0.045, 10), _METAL)
    elif category == "bus":
        add([[-0.5, 0.06], [0.5, 0.06], [0.5, 0.55], [0.46, 0.62], [-0.5, 0.62]], rgb, True)
        add([[0.38, 0.36], [0.49, 0.36], [0.49, 0.55], [0.44, 0.58], [0.38, 0.58]], _GLASS)
        for x in np.arange(-0.45, 0.25, 0.16):
            add(_rect(x, 0.38, x + 0.12, 0.54), _GLASS)
        add(_rect(0.25, 0.1, 0.35, 0.5), dark)
        for x in (-0.3, 0.33):
            add(_ellipse(x, 0.08, 0.09, 0.09, 16), _TYRE)
            add(_ellipse(x, 0.08, 0.04, 0.04, 10), _METAL)
    elif category == "boat":
        add(_bar((0.0, 0.28), (0.0, 1.0), 0.04), (110, 80, 50))
        add([[0.04, 0.36], [0.04, 0.96], [0.4, 0.38]], (246, 246, 242))
        add([[-0.04, 0.4], [-0.04, 0.86], [-0.32, 0.4]], (238, 238, 232))
        add([[-0.5, 0.32], [0.5, 0.32], [0.36, 0.0], [-0.38, 0.0]], rgb, True)
        add(_rect(-0.42, 0.24, 0.45, 0.28), dark)
    elif category == "airplane":
        add([[-0.38, 0.26], [-0.5, 0.46], [-0.41, 0.46], [-0.26, 0.28]], rgb, True)     # fin
        body = np.concatenate([_ellipse(0.0, 0.2, 0.5, 0.105, 24, -90, 90),
                               [[-0.44, 0.305], [-0.5, 0.2], [-0.44, 0.095]]])
        add(body, rgb, True)
        add([[0.1, 0.17], [-0.1, 0.17], [-0.3, 0.0], [-0.18, 0.0]], light, True)         # wing
        add([[-0.36, 0.2], [-0.5, 0.12], [-0.43, 0.12], [-0.3, 0.19]], light, True)
        for x in np.arange(-0.28, 0.36, 0.08):
            add(_ellipse(x, 0.225, 0.018, 0.022, 8), (40, 55, 75))
        add([[0.38, 0.2], [0.45, 0.25], [0.47, 0.21]], (40, 55, 75))
    elif category == "kite":
        k = np.linspace(0, 1, 7)
        tail = np.stack([0.08 * np.sin(k * 9), 0.35 - 0.35 * k], axis=1)
        for a, b in zip(tail[:-1], tail[1:]):
            add(_bar(a, b, 0.015), _DARK)
        for p in tail[2::2]:
            add([[p[0] - 0.06, p[1] + 0.03], [p[0] + 0.06, p[1] - 0.03], [p[0] + 0.06, p[1] + 0.03],
                 [p[0] - 0.06, p[1] - 0.03]], rgb)
        add([[0.0, 1.0], [0.31, 0.7], [0.0, 0.35], [-0.31, 0.7]], rgb, True)
        add([[0.0, 1.0], [0.31, 0.7], [0.0, 0.7]], light)
        add(_bar((0, 0.99), (0, 0.36), 0.02), _DARK)
        add(_bar((-0.3, 0.7), (0.3, 0.7), 0.02), _DARK)
    elif category == "stop sign":
        add(_rect(-0.03, 0.0, 0.03, 0.6), _METAL)
        octagon = _ellipse(0.0, 0.76, 0.24, 0.24, 8, 22.5, 382.5)
        add(octagon, (245, 245, 245), True)
        add(_ellipse(0.0, 0.76, 0.205, 0.205, 8, 22.5, 382.5), rgb)
        add(_rect(-0.14, 0.735, 0.14, 0.785), (245, 245, 245))
    elif category == "fire hydrant":
        add(_rect(-0.21, 0.0, 0.21, 0.06), rgb, True)
        add(_rect(-0.13, 0.06, 0.13, 0.56), rgb, True)
        add(_rect(-0.23, 0.3, 0.23, 0.42), rgb, True)
        add(_ellipse(0.0, 0.56, 0.15, 0.14, 16, 0, 180), rgb, True)
        add(_rect(-0.04, 0.68, 0.04, 0.76), dark)
        for x in (-0.2, 0.2):
            add(_ellipse(x, 0.36, 0.035, 0.035, 8), dark)
        add(_rect(-0.15, 0.5, 0.15, 0.55), dark)
    elif category == "clock":
        add(_rect(-0.035, 0.0, 0.035, 0.52), _DARK)
        # A thick case around a small face, so the case's colour is what one sees.
        add(_ellipse(0.0, 0.74, 0.26, 0.26, 28), rgb, True)
        add(_ellipse(0.0, 0.74, 0.15, 0.15, 24), (248, 246, 238))
        for t in range(0, 12, 3):
            a = math.radians(t * 30)
            add(_bar((0.11 * math.cos(a), 0.74 + 0.11 * math.sin(a)),
                     (0.14 * math.cos(a), 0.74 + 0.14 * math.sin(a)), 0.025), _DARK)
        h, m = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
        add(_bar((0, 0.74), (0.07 * math.sin(h), 0.74 + 0.07 * math.cos(h)), 0.03), _DARK)
        add(_bar((0, 0.74), (0.12 * math.sin(m), 0.74 + 0.12 * math.cos(m)), 0.02), _DARK)
    elif category == "cow":
        for x in (-0.3, -0.2, 0.16, 0.26):
            add(_rect(x - 0.035, 0.0, x + 0.035, 0.32), rgb, True)
        add(_bar((-0.38, 0.55), (-0.46, 0.3), 0.025), dark)                             # tail
        add([[-0.4, 0.3], [0.3, 0.3], [0.33, 0.38], [0.3, 0.6], [-0.38, 0.6], [-0.42, 0.5]], rgb, True)
        add([[0.25, 0.52], [0.38, 0.6], [0.5, 0.44], [0.48, 0.36], [0.4, 0.35], [0.27, 0.44]], rgb, True)
        add([[0.33, 0.6], [0.3, 0.72], [0.37, 0.62]], (235, 225, 195))                    # horns
        add([[0.42, 0.58], [0.42, 0.7], [0.46, 0.6]], (235, 225, 195))
        add(_ellipse(0.48, 0.4, 0.035, 0.04, 8), (230, 160, 165))                         # muzzle
        for cx, cy, r in ((-0.2, 0.48, 0.055), (0.05, 0.42, 0.045)):
            add(_ellipse(cx + rng.uniform(-0.03, 0.03), cy, r * 1.3, r, 12), light)
    elif category == "sheep":
        for x in (-0.26, -0.16, 0.12, 0.22):
            add(_rect(x - 0.03, 0.0, x + 0.03, 0.28), (50, 45, 42), True)
        bumps = [_ellipse(-0.38 + 0.14 * i, 0.44 + 0.12 * (i % 2 - 0.5), 0.12, 0.11, 12) for i in range(6)]
        add(_ellipse(-0.03, 0.42, 0.38, 0.17, 24), rgb, True)
        for b in bumps:
            add(b, rgb, True)
        add(_ellipse(0.38, 0.44, 0.085, 0.12, 14), (50, 45, 42), True)                   # head
        add(_ellipse(0.32, 0.53, 0.05, 0.025, 8), (50, 45, 42))                          # ear
    elif category == "banana":
        # A curved band, thickest in the middle and tapering to both ends, a stem at one end.
        t = np.linspace(0, 1, 25)
        u = 2 * t - 1
        x, yc = 0.45 * u, 0.1 + 0.24 * u ** 2
        th = 0.2 * np.sin(np.pi * t) ** 0.7 + 0.015
        band = lambda lo, hi: np.concatenate([np.stack([x, yc + hi * th], 1),  # noqa: E731
                                              np.stack([x, yc + lo * th], 1)[::-1]])
        add(band(-0.5, 0.5), rgb, True)
        add(band(0.1, 0.35)[3:-3], light)
        add(_bar((0.44, 0.33), (0.48, 0.4), 0.045), (95, 70, 35))
        add(_ellipse(-0.44, 0.335, 0.02, 0.02, 8), (60, 45, 25))
    elif category == "umbrella":
        add(_bar((0.0, 0.62), (0.0, 0.1), 0.035), _DARK)
        hook = _ellipse(0.06, 0.1, 0.06, 0.07, 8, 180, 360)
        for a, b in zip(hook[:-1], hook[1:]):
            add(_bar(a, b, 0.035), _DARK)
        top = _ellipse(0.0, 0.55, 0.46, 0.4, 24, 0, 180)
        scallop = np.concatenate([_ellipse(-0.46 + 0.115 * (2 * i + 1), 0.55, 0.115, 0.06, 8, 180, 360)
                                  for i in range(4)][::-1])[::-1]
        add(np.concatenate([top, scallop[::-1]]), rgb, True)
        for x in (-0.23, 0.0, 0.23):
            add(_bar((0.0, 0.95), (x, 0.55), 0.02), dark)
    else:
        raise ValueError(f"unknown category {category!r}")
    return P


# ---------------------------------------------------------------------------------------------
# The scene.

def supersampling(size: int) -> int:
    """Sub-samples per output pixel side: 4x4 at 128 px and below, 2x2 above."""
    return 4 if size <= 128 else 2


def render_scene(background: str, horizon: float, objects: list[ObjectSpec], size: int,
                 rng: np.random.Generator) -> RenderedScene:
    """Draw the background, then `objects` in the given order (later ones in front)."""
    ss = supersampling(size)
    bg = render_background(background, horizon, size, rng)
    big = size * ss
    rgb_c = Image.new("RGB", (big, big))
    lab_c = Image.new("L", (big, big))
    d_rgb, d_lab = ImageDraw.Draw(rgb_c), ImageDraw.Draw(lab_c)
    outline_w = max(1, int(round(size * ss / 150)))
    polygons: list[list[list[float]]] = []
    drawn: list[int] = []
    windows: list[tuple[int, int, int, int]] = []   # per object: canvas pixels it may cover
    for k, obj in enumerate(objects):
        rgb = object_rgb(obj.colour, rng)
        edge = _tone(rgb, 0.78)
        label = MASK_FIRST_OBJECT + k
        flat = []
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for pts, fill, body in _shape(obj.category, rgb, rng):
            px = np.stack([obj.cx + obj.facing * pts[:, 0] * obj.unit, obj.base_y - pts[:, 1] * obj.unit], axis=1)
            xy = [(float(x * ss - 0.5), float(y * ss - 0.5)) for x, y in px]
            if body:
                d_rgb.polygon(xy, fill=fill, outline=edge, width=outline_w)
                d_lab.polygon(xy, fill=label, outline=label, width=outline_w)
            else:
                d_rgb.polygon(xy, fill=fill)
                d_lab.polygon(xy, fill=label)
            flat.append([round(float(v), 2) for v in np.clip(px, 0, size).reshape(-1)])
            lo, hi = np.minimum(lo, px.min(axis=0)), np.maximum(hi, px.max(axis=0))
        polygons.append(flat)
        # Its polygons' extent, widened by the outline, in whole pixels on the canvas's grid.
        x0, y0 = (max(0, int(math.floor(v)) - 2) * ss for v in lo)
        x1, y1 = (min(size, int(math.ceil(v)) + 2) * ss for v in hi)
        windows.append((x0, y0, max(x0, x1), max(y0, y1)))
        # Pixels it covers now, counted at pixel centres as the labels are, before anything
        # nearer is drawn over it.
        crop = np.asarray(lab_c.crop(windows[-1]))
        drawn.append(int((crop[ss // 2::ss, ss // 2::ss] == label).sum()))

    lab_ss = np.asarray(lab_c)
    labels = np.ascontiguousarray(lab_ss[ss // 2::ss, ss // 2::ss])
    fg = np.asarray(rgb_c.reduce(ss), dtype=np.float32)
    alpha = (np.asarray(lab_c.point([0] + [255] * 255).reduce(ss), dtype=np.float32) / 255.0)[..., None]
    bg = _shade_ground(bg, objects, horizon, size)
    out = fg + bg * (1.0 - alpha)
    out += (rng.random((size, size, 3), dtype=np.float32) - 0.5) * 6.0   # photographic grain
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    ground = (np.arange(size, dtype=np.float32)[:, None] + 0.5 >= horizon)
    base = np.where(ground, MASK_GROUND, MASK_SKY).astype(np.uint8)
    labels = np.where(labels >= MASK_FIRST_OBJECT, labels, np.broadcast_to(base, labels.shape)).astype(np.uint8)
    bboxes, areas = [], []
    for k, (ox, oy, x1, y1) in enumerate(windows):
        hit = lab_ss[oy:y1, ox:x1] == MASK_FIRST_OBJECT + k
        rows, cols = np.nonzero(hit.any(axis=1))[0] + oy, np.nonzero(hit.any(axis=0))[0] + ox
        if len(rows):
            x0, x1, y0, y1 = cols[0] / ss, (cols[-1] + 1) / ss, rows[0] / ss, (rows[-1] + 1) / ss
            bboxes.append((round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                           round(float(y1 - y0), 2)))
        else:
            bboxes.append((0.0, 0.0, 0.0, 0.0))
        areas.append(int((labels == MASK_FIRST_OBJECT + k).sum()))
    return RenderedScene(image, labels, polygons, bboxes, areas, drawn)


def _shade_ground(bg: np.ndarray, objects: list[ObjectSpec], horizon: float, size: int) -> np.ndarray:
    """Soft contact shadows under the objects that stand on the ground."""
    shade = np.ones((size, size), dtype=np.float32)
    for o in objects:
        if o.base_y < horizon:
            continue
        w = max(1.0, EXTENT[o.category][0] * o.unit / 2)
        h = max(1.0, 0.06 * o.unit)
        x0, x1 = max(0, int(o.cx - w)), min(size, int(o.cx + w) + 2)
        y0, y1 = max(0, int(o.base_y - h)), min(size, int(o.base_y + h) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        r = ((xx - o.cx) / w) ** 2 + ((yy - o.base_y) / h) ** 2
        shade[y0:y1, x0:x1] *= np.where(r < 1, 0.72 + 0.28 * r, 1.0).astype(np.float32)
    return bg * shade[..., None]
