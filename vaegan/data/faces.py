"""Faces: a built-in dataset of procedurally drawn cartoon faces, so nothing needs downloading.

Each image is drawn from parameters that depend only on ``(seed, split, index)``, so the same
seed gives the same bytes whatever the access order or number of DataLoader workers. The
drawing is vectorised numpy over the pixel grid at the requested resolution, anti-aliased
analytically (each shape's coverage comes from its signed distance), and takes about
1-1.5 ms of one core for a 64x64 image.

The faces vary in ways a generator must learn (skin tone, hair colour and style, pose, gaze,
smile, glasses, clothes, background) and carry fine detail that a blurry VAE loses: hair
strands, background stripes or dots, freckles, eye highlights and film grain.

Splits are independent random streams: train, val and test images for one seed never
coincide, and each split holds ``num_images`` images.
"""
from __future__ import annotations

import colorsys
import functools
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from vaegan.errors import InputError

SPLITS = {"train": 0, "val": 1, "test": 2}
_SALT = 0xFACE5  # keeps these streams apart from any other use of the same seed

# Ground-truth attributes, each a key of the parameter dict that ``render`` draws from.
ATTR_NAMES = (
    "smiling",  # [-1, 1]: > 0 an open grin (wider, teeth, raised cheeks, narrowed eyes); < 0 a frown
    "glasses",  # 0 or 1
    "hair_colour",  # [0, 1]: black, brown, auburn, golden, platinum
    "skin_tone",  # [0, 1]: light to dark
    "pose",  # [-1, 1]: head turned towards image left (< 0) or right (> 0)
    "gaze",  # [-1, 1]: pupils looking left or right within the eyes
    "long_hair",  # 0 or 1
    "bangs",  # [0, 1]: how far the fringe comes down the forehead
    "freckles",  # 0 or 1
    "mouth_open",  # [0, 1]
    "eyes_open",  # [0, 1]: eye height, nearly shut to wide open
    "roll",  # [-1, 1]: head tilt, scaled to +-0.2 rad
)

_SKIN = np.array([(1.0, .87, .77), (.96, .79, .66), (.86, .66, .50), (.68, .48, .34),
                  (.48, .32, .22), (.31, .20, .14)], np.float32)
_HAIR = np.array([(.06, .05, .05), (.22, .13, .08), (.40, .22, .11), (.58, .28, .12),
                  (.80, .61, .31), (.94, .89, .72)], np.float32)
_EYES = np.array([(.35, .20, .10), (.20, .40, .75), (.25, .50, .30), (.45, .50, .55)], np.float32)
_FRAMES = np.array([(.05, .05, .05), (.30, .16, .08), (.70, .10, .12), (.10, .15, .40),
                    (.80, .65, .20)], np.float32)


def _ramp(palette: np.ndarray, t: float) -> np.ndarray:
    """Colour at ``t`` in [0, 1] along a palette of evenly spaced stops."""
    pos = np.clip(t, 0.0, 1.0) * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    return palette[i] + (pos - i) * (palette[i + 1] - palette[i])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def face_params(seed: int, index: int, split: str = "train") -> dict:
    """The parameters of one face: a dict of floats and RGB arrays, attributes included."""
    if split not in SPLITS:
        raise InputError(f"faces split {split!r} is not valid; choose one of {list(SPLITS)}")
    rng = np.random.default_rng([_SALT, seed % (1 << 64), SPLITS[split], index])
    u = rng.uniform
    p = {
        "smiling": u(-1, 1), "glasses": float(u() < 0.3), "hair_colour": u(),
        "skin_tone": u(), "pose": u(-1, 1), "gaze": u(-1, 1), "long_hair": float(u() < 0.45),
        "bangs": u(), "freckles": float(u() < 0.25), "mouth_open": max(0.0, u(-0.6, 1)),
        "eyes_open": u(), "roll": u(-1, 1),
        # Head placement (image units) and feature geometry (face-local units, see render).
        "face_x": u(-0.08, 0.08), "face_y": u(-0.04, 0.08), "face_w": u(0.36, 0.46),
        "face_h": u(0.46, 0.56), "eye_x": u(0.32, 0.42), "eye_y": u(-0.08, 0.04),
        "eye_size": u(0.12, 0.17), "brow_raise": u(-0.05, 0.08), "brow_tilt": u(-0.06, 0.06),
        "brow_thick": u(0.025, 0.05), "nose_size": u(0.6, 1.3), "mouth_y": u(0.5, 0.62),
        "mouth_w": u(0.18, 0.32), "hair_volume": u(0.05, 0.2), "part": u(-1, 1),
        "part_curve": u(-0.4, 0.4), "strand_freq": u(15, 30), "glasses_round": float(u() < 0.5),
        "glasses_size": u(0.19, 0.25), "blush": u(0, 0.35),
        # Colours.
        "eye_colour": _EYES[rng.integers(len(_EYES))] * u(0.8, 1.2),
        "frame_colour": _FRAMES[rng.integers(len(_FRAMES))],
        "shirt_colour": _hsv(u(), u(0.3, 0.8), u(0.3, 0.9)),
        "bg_colour": _hsv(u(), u(0.15, 0.55), u(0.55, 0.95)),
        "bg_colour2": _hsv(u(), u(0.15, 0.55), u(0.45, 0.95)),
        "bg_angle": u(0, 2 * np.pi), "pattern": float(rng.integers(3)),  # none, stripes, dots
        "pattern_angle": u(0, np.pi), "pattern_period": u(0.07, 0.16), "pattern_amp": u(0.06, 0.18),
        "grain": u(0.01, 0.035), "noise_seed": int(rng.integers(1 << 31)),
    }
    p["freckle_uv"] = rng.uniform(-1, 1, size=(24, 2)).astype(np.float32)
    return p


@functools.lru_cache(maxsize=8)
def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [-1, 1], x right and y down, each (R, R) float32."""
    c = (np.arange(resolution, dtype=np.float32) + 0.5) * (2.0 / resolution) - 1.0
    y, x = np.meshgrid(c, c, indexing="ij")
    x.flags.writeable = y.flags.writeable = False  # shared by every render at this resolution
    return x, y


class _Canvas:
    """An (R, R, 3) float image plus face-local coordinates, painted with coverages in [0, 1].

    ``window`` gives a view of a sub-rectangle (sharing pixels) so that small features are
    computed over their bounding box only.
    """

    def __init__(self, resolution: int):
        self.x, self.y = _grid(resolution)
        self.px = 2.0 / resolution  # one pixel in image units
        self.rgb = np.empty((resolution, resolution, 3), np.float32)

    def paint(self, cov: np.ndarray, colour) -> None:
        self.rgb += cov[..., None] * (np.asarray(colour, np.float32) - self.rgb)

    def set_face_frame(self, cx: float, cy: float, scale: float, angle: float) -> None:
        """Face-local coordinates (u, v): rotated by ``angle`` about (cx, cy), in ``scale`` units."""
        self.frame = (cx, cy, scale, math.cos(angle), math.sin(angle))
        c, s = self.frame[3:]
        dx, dy = self.x - cx, self.y - cy
        self.u = (c * dx + s * dy) / scale
        self.v = (c * dy - s * dx) / scale
        self.aa = self.px / scale

    def window(self, u0: float, u1: float, v0: float, v1: float) -> "_Canvas":
        """A view of the pixels covering the face-local box [u0, u1] x [v0, v1]."""
        cx, cy, scale, c, s = self.frame
        xs = [cx + scale * (c * u - s * v) for u in (u0, u1) for v in (v0, v1)]
        ys = [cy + scale * (s * u + c * v) for u in (u0, u1) for v in (v0, v1)]
        n = self.rgb.shape[0]

        def pixels(lo: float, hi: float) -> slice:
            return slice(min(max(math.floor((lo + 1) / self.px), 0), n),
                         min(max(math.ceil((hi + 1) / self.px) + 1, 0), n))

        rows, cols = pixels(min(ys), max(ys)), pixels(min(xs), max(xs))
        view = object.__new__(_Canvas)
        view.px, view.aa, view.frame = self.px, self.aa, self.frame
        view.rgb, view.u, view.v = (a[rows, cols] for a in (self.rgb, self.u, self.v))
        return view

    def cov(self, d: np.ndarray) -> np.ndarray:
        """Coverage of a shape from its signed distance in face units (negative inside)."""
        return np.minimum(np.maximum(0.5 - d * (1.0 / self.aa), 0.0), 1.0)


def _ellipse(u, v, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse (first order, exact near its outline)."""
    du, dv = u - cx, v - cy
    f = (du / rx) ** 2 + (dv / ry) ** 2 - 1.0
    g = 2.0 * np.sqrt((du / rx**2) ** 2 + (dv / ry**2) ** 2) + 1e-6
    return f / g


def _arc(u, v, cx, cy, half_w, bend, tilt, thick, taper=0.0):
    """Distance to a stroke along ``v = cy + bend (1 - q^2) + tilt q``, ``q = (u - cx) / half_w``."""
    q = (u - cx) / half_w
    qc = np.clip(q, -1.0, 1.0)
    f = cy + bend * (1.0 - qc * qc) + tilt * qc
    slope = (tilt - 2.0 * bend * qc) / half_w
    dv = (v - f) / np.sqrt(1.0 + slope * slope)
    du = np.maximum(np.abs(q) - 1.0, 0.0) * half_w
    return np.sqrt(dv * dv + du * du) - thick * (1.0 - taper * qc * qc)


def _box(u, v, cx, cy, hw, hh, r):
    """Signed distance to a rounded rectangle of half sizes (hw, hh) and corner radius r."""
    qx, qy = np.abs(u - cx) - (hw - r), np.abs(v - cy) - (hh - r)
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _background(cv: _Canvas, p: dict) -> None:
    """Two-colour gradient with optional fine stripes or dots (faded out where they would alias)."""
    t = 0.5 + 0.5 * (cv.x * math.cos(p["bg_angle"]) + cv.y * math.sin(p["bg_angle"]))
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    period = p["pattern_period"]
    amp = p["pattern_amp"] * min(max(period / cv.px / 2.0 - 1.0, 0.0), 1.0)
    shade = 1.0
    if amp > 0 and p["pattern"] == 1:
        a = p["pattern_angle"]
        shade = 1.0 + amp * np.sin((cv.x * math.cos(a) + cv.y * math.sin(a)) * (2 * math.pi / period))
    elif amp > 0 and p["pattern"] == 2:
        gx = np.mod(cv.x / period, 1.0) - 0.5
        gy = np.mod(cv.y / period + 0.5 * np.floor(cv.x / period), 1.0) - 0.5
        d = (np.sqrt(gx * gx + gy * gy) - 0.22) * period
        shade = 1.0 + 1.5 * amp * np.minimum(np.maximum(0.5 - d / cv.px, 0.0), 1.0)
    cv.rgb[:] = ((1.0 - t) * shade)[..., None] * p["bg_colour"] + (t * shade)[..., None] * p["bg_colour2"]


def _strands(w: _Canvas, p: dict, phase: np.ndarray) -> np.ndarray:
    """(h, w, 1) brightness of hair strands across ``phase``: three octaves, each faded out
    where it would alias, so finer strands appear at higher resolutions."""
    shade = np.ones(phase.shape, np.float32)
    for octave, amp in ((1.0, 0.16), (2.3, 0.1), (5.1, 0.07)):
        freq = p["strand_freq"] * octave
        fade = min(max(2 * math.pi / freq / w.aa / 2.0 - 1.0, 0.0), 1.0)
        if fade > 0:
            shade += (amp * fade) * np.sin(freq * phase + octave)
    return shade[..., None]


def _head_back(cv: _Canvas, p: dict, rx: float, ry: float, hair: np.ndarray, skin: np.ndarray) -> None:
    """Hair behind the head, neck, shirt and ears."""
    vol = p["hair_volume"]
    w = cv.window(-rx - vol, rx + vol, -0.1 - ry - vol, 1.6 if p["long_hair"] else ry)
    back = _ellipse(w.u, w.v, 0.0, -0.1, rx + vol, ry * 0.95 + vol)
    if p["long_hair"]:
        back = np.minimum(back, _box(w.u, w.v, 0.0, 0.55, rx + vol * 0.8, 0.95, 0.35))
    strands = _strands(w, p, w.u + 0.25 * w.v * w.v)
    w.rgb += w.cov(back)[..., None] * (hair * strands - w.rgb)
    w = cv.window(-0.4, 0.4, ry - 0.3, ry + 0.9)
    w.paint(w.cov(_box(w.u, w.v, 0.0, ry + 0.3, 0.36, 0.55, 0.1)), skin * 0.82)
    w = cv.window(-1.6, 1.6, ry + 0.25, ry + 1.85)
    shirt = _ellipse(w.u, w.v, 0.0, ry + 1.05, 1.55, 0.75)
    w.paint(w.cov(shirt), p["shirt_colour"])
    collar = _arc(w.u, w.v, 0.0, ry + 0.32, 0.38, 0.12, 0.0, 0.03)
    w.paint(w.cov(collar) * w.cov(shirt), p["shirt_colour"] * 0.6)
    for side in (-1.0, 1.0):
        ex = side * (rx - 0.02) - 0.12 * p["pose"]
        w = cv.window(ex - 0.16, ex + 0.16, -0.2, 0.3)
        w.paint(w.cov(_ellipse(w.u, w.v, ex, 0.05, 0.13, 0.2)), skin * 0.92)


def _face(cv: _Canvas, p: dict, rx: float, ry: float, skin: np.ndarray) -> None:
    """Shaded face, blush (raised and deepened by a smile) and freckles."""
    w = cv.window(-rx - 0.05, rx + 0.05, -ry - 0.05, ry + 0.05)
    u, v = w.u, w.v
    shade = 1.0 - 0.10 * (u * u + v * v) - 0.05 * p["pose"] * u
    w.rgb += w.cov(_ellipse(u, v, 0.0, 0.0, rx, ry))[..., None] * (skin * shade[..., None] - w.rgb)
    shift, grin = 0.22 * p["pose"], p["grin"]
    for side in (-1.0, 1.0):  # smiles raise the cheeks and redden them
        cx, cy = side * 0.5 + shift, 0.3 - 0.08 * grin
        w = cv.window(cx - 0.45, cx + 0.45, cy - 0.3, cy + 0.3)
        r2 = ((w.u - cx) / 0.2) ** 2 + ((w.v - cy) / 0.12) ** 2
        w.paint((p["blush"] + 0.45 * grin) * np.exp(-r2), (0.95, 0.45, 0.45))
    if p["freckles"]:
        w = cv.window(shift - 0.7, shift + 0.7, 0.05, 0.35)
        fu = p["freckle_uv"][:, 0] * 0.5 + np.sign(p["freckle_uv"][:, 0]) * 0.15 + shift
        fv = p["freckle_uv"][:, 1] * 0.12 + 0.2
        d = np.sqrt((w.u[None] - fu[:, None, None]) ** 2 + (w.v[None] - fv[:, None, None]) ** 2)
        w.paint(0.6 * w.cov(d.min(0) - 0.022), skin * 0.6)


def _eyes(cv: _Canvas, p: dict) -> None:
    """Whites, iris, pupil and highlight (gaze moves them), lids and brows; the far eye is narrower.
    Smiles narrow the eyes, frowns lower the brows and draw their inner ends down."""
    shift, size = 0.22 * p["pose"], p["eye_size"]
    grin, scowl = p["grin"], p["scowl"]
    for side in (-1.0, 1.0):
        width = size * (1.0 + 0.2 * side * p["pose"])
        height = size * (0.45 + 0.45 * p["eyes_open"]) * (1.0 - 0.5 * grin)
        ex, ey = side * p["eye_x"] + shift, p["eye_y"]
        by = ey - height - 0.12 - p["brow_raise"] + 0.05 * scowl
        w = cv.window(ex - 1.3 * width - 0.05, ex + 1.3 * width + 0.05, by - 0.15, ey + height + 0.05)
        u, v = w.u, w.v
        white = _ellipse(u, v, ex, ey, width, height)
        inside = w.cov(white)
        w.paint(inside, (0.97, 0.97, 0.95))
        ir = 0.62 * size
        ix = ex + 0.55 * p["gaze"] * (width - 0.5 * ir) + 0.3 * shift
        iris = np.sqrt((u - ix) ** 2 + (v - ey) ** 2)
        w.paint(inside * w.cov(iris - ir), p["eye_colour"])
        w.paint(inside * w.cov(iris - 0.45 * ir), (0.02, 0.02, 0.03))
        glint = np.sqrt((u - ix + 0.3 * ir) ** 2 + (v - ey + 0.3 * ir) ** 2)
        w.paint(inside * w.cov(glint - 0.18 * ir), (1.0, 1.0, 1.0))
        w.paint(w.cov(np.abs(white) - 0.012), (0.15, 0.08, 0.06))
        lid = _arc(u, v, ex, ey - height * 0.9, width * 1.05, -0.25 * height, 0.0, 0.02, taper=0.6)
        w.paint(w.cov(lid), (0.08, 0.05, 0.04))
        brow = _arc(u, v, ex, by, width * 1.2, -0.04, side * (p["brow_tilt"] - 0.1 * scowl), p["brow_thick"],
                    taper=0.5)
        w.paint(w.cov(brow), p["brow_colour"])


def _nose_mouth(cv: _Canvas, p: dict, skin: np.ndarray) -> None:
    """Nose shading and nostrils; the mouth: corners up in a smile and down in a frown, smiles
    widen and open it into a grin, open mouths show teeth."""
    nx, ns = 0.32 * p["pose"], p["nose_size"]
    w = cv.window(nx - 0.15 * ns - 0.03, nx + 0.15 * ns + 0.03, 0.15, 0.4)
    w.paint(0.5 * w.cov(_ellipse(w.u, w.v, nx, 0.27, 0.09 * ns, 0.07 * ns)), skin * 0.8)
    w.paint(w.cov(_arc(w.u, w.v, nx - 0.03 * p["pose"], 0.3, 0.1 * ns, 0.05, 0.0, 0.014)), skin * 0.55)

    grin, scowl = p["grin"], p["scowl"]
    mx, my = 0.2 * p["pose"], p["mouth_y"] - 0.08 * grin
    mw = p["mouth_w"] * (1.0 + 0.6 * grin - 0.15 * scowl)
    bend, opening = 0.13 * p["smiling"], 0.13 * p["mouth_open"] + 0.32 * grin  # smiles are open grins
    lip = (0.65, 0.25, 0.25) * (0.5 + 0.5 * skin)
    w = cv.window(mx - mw - 0.05, mx + mw + 0.05, my - 0.2, my + max(bend + opening, 0.0) + 0.1)
    u, v = w.u, w.v
    if opening > 0.01:
        q = np.clip((u - mx) / mw, -1.0, 1.0)
        top = my + 0.25 * bend * (1.0 - q * q)
        bottom = my + (bend + opening) * (1.0 - q * q)
        inside = np.maximum(np.maximum(top - v, v - bottom), (np.abs(u - mx) - mw) * 0.5)
        w.paint(w.cov(inside), (0.35, 0.08, 0.1))
        teeth = np.maximum(inside, v - (top + 0.35 * (bottom - top)))
        w.paint(w.cov(teeth), (0.95, 0.94, 0.88))
        w.paint(w.cov(_arc(u, v, mx, my, mw, 0.25 * bend, 0.0, 0.018)), lip)
        w.paint(w.cov(_arc(u, v, mx, my, mw, bend + opening, 0.0, 0.025, taper=0.5)), lip)
    else:
        w.paint(w.cov(_arc(u, v, mx, my, mw, bend, 0.0, 0.026, taper=0.5)), lip)


def _fringe(cv: _Canvas, p: dict, rx: float, ry: float, hair: np.ndarray) -> None:
    """Hair over the forehead down to a hairline that is straight, parted, curtained or bowl shaped."""
    vol = p["hair_volume"]
    w = cv.window(-rx - vol, rx + vol, -0.1 - ry - vol, 0.7)
    u, v = w.u, w.v
    cap = _ellipse(u, v, 0.0, -0.1, rx + vol, ry * 0.95 + vol)
    part = 0.45 * p["part"]
    line = -0.8 + 0.5 * p["bangs"] + p["part_curve"] * (u - part) ** 2
    slope = 2 * p["part_curve"] * (u - part)
    above = (v - line) / np.sqrt(1.0 + slope * slope)
    temples = np.maximum(rx - 0.12 - np.abs(u), v + 0.15)  # hair comes down the sides to the eyes
    mask = w.cov(np.maximum(cap, np.minimum(above, temples)))
    strands = _strands(w, p, (u - part) * (1.0 + 0.3 * v))
    w.rgb += mask[..., None] * (hair * strands - w.rgb)


def _glasses(cv: _Canvas, p: dict) -> None:
    """Round or rectangular frames around both eyes, with a bridge and a faint lens tint."""
    shift, r, ex, ey = 0.22 * p["pose"], p["glasses_size"], p["eye_x"], p["eye_y"]
    w = cv.window(shift - ex - 1.3 * r, shift + ex + 1.3 * r, ey - r - 0.1, ey + r + 0.05)
    u, v = w.u, w.v
    lenses = []
    for side in (-1.0, 1.0):
        gx = side * ex + shift
        rw = r * (1.0 + 0.2 * side * p["pose"])
        if p["glasses_round"]:
            lenses.append(_ellipse(u, v, gx, ey, rw, r * 0.85))
        else:
            lenses.append(_box(u, v, gx, ey, rw, r * 0.72, 0.06))
    lens = np.minimum(*lenses)
    w.paint(0.15 * w.cov(lens), (0.7, 0.85, 0.95))
    frame = np.abs(lens) - 0.022
    bridge = _arc(u, v, shift, ey - 0.05, ex - r * 0.9, -0.04, 0.0, 0.02)
    w.paint(w.cov(np.minimum(frame, bridge)), p["frame_colour"])


def render(params: dict, resolution: int) -> torch.Tensor:
    """Draw one face from :func:`face_params` output (edit it to set attributes).

    Returns uint8 (3, R, R) in [0, 255], R = ``resolution``.
    """
    p = params
    skin = _ramp(_SKIN, p["skin_tone"])
    hair = _ramp(_HAIR, p["hair_colour"])
    # Derived: brow colour; how far the face smiles (grin) or frowns (scowl), each in [0, 1].
    p = {**p, "brow_colour": hair * 0.7 + 0.05, "grin": max(p["smiling"], 0.0), "scowl": max(-p["smiling"], 0.0)}
    cv = _Canvas(resolution)
    _background(cv, p)

    # Face frame: isotropic units of the face's mean radius, so the face ellipse is about (1, 1.2).
    fw, fh = p["face_w"], p["face_h"]
    scale = float(np.sqrt(fw * fh))
    cv.set_face_frame(p["face_x"] + 0.12 * p["pose"], p["face_y"], scale, 0.2 * p["roll"])
    rx, ry = fw / scale, fh / scale
    _head_back(cv, p, rx, ry, hair, skin)
    _face(cv, p, rx, ry, skin)
    _eyes(cv, p)
    _nose_mouth(cv, p, skin)
    _fringe(cv, p, rx, ry, hair)
    if p["glasses"]:
        _glasses(cv, p)

    # Film grain: per-pixel noise, the finest detail there is.
    noise = np.random.default_rng(p["noise_seed"]).standard_normal(cv.rgb.shape[:2], np.float32)
    grain = (255.0 * p["grain"]) * noise + 0.5
    out = np.empty((3, resolution, resolution), np.uint8)
    np.clip(cv.rgb.transpose(2, 0, 1) * 255.0 + grain, 0, 255, out=out, casting="unsafe")
    return torch.from_numpy(out)


class Faces(Dataset):
    """Procedural cartoon faces: item ``i`` is uint8 (3, R, R) in [0, 255].

    ``attributes`` is float32 (N, A) with columns ``attr_names`` (see ``ATTR_NAMES`` for ranges).
    With ``hflip`` items are flipped at random; ``read(i)`` never flips (note a flip negates the
    meaning of ``pose``, ``gaze`` and ``roll``).
    """

    attr_names = list(ATTR_NAMES)
    render = staticmethod(render)

    def __init__(self, num_images: int, resolution: int, seed: int = 0, hflip: bool = False,
                 split: str = "train"):
        if num_images <= 0 or resolution <= 0:
            raise InputError(f"faces: num_images and resolution must be > 0, got {num_images}, {resolution}")
        if split not in SPLITS:
            raise InputError(f"faces split {split!r} is not valid; choose one of {list(SPLITS)}")
        self.num_images, self.resolution, self.seed = num_images, resolution, seed
        self.hflip, self.split = hflip, split
        self._attributes = None

    def __len__(self) -> int:
        return self.num_images

    def params(self, index: int) -> dict:
        if not 0 <= index < self.num_images:
            raise IndexError(f"faces index {index} out of range [0, {self.num_images})")
        return face_params(self.seed, index, self.split)

    def read(self, index: int) -> torch.Tensor:
        """Image ``index`` without augmentation: uint8 (3, R, R)."""
        return render(self.params(index), self.resolution)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.read(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    @property
    def attributes(self) -> torch.Tensor:
        """float32 (N, A): ground truth for every image (computed on first use, no drawing)."""
        if self._attributes is None:
            rows = [[self.params(i)[k] for k in ATTR_NAMES] for i in range(self.num_images)]
            self._attributes = torch.tensor(rows, dtype=torch.float32)
        return self._attributes

    def attribute(self, name: str) -> torch.Tensor:
        """float32 (N,): one attribute column."""
        if name not in ATTR_NAMES:
            raise KeyError(f"faces has no attribute {name!r}; valid: {list(ATTR_NAMES)}")
        return self.attributes[:, ATTR_NAMES.index(name)]

    def source(self) -> dict:
        """What identifies these images, for cache headers."""
        return {"dataset": "faces", "split": self.split, "resolution": self.resolution,
                "num_images": self.num_images, "seed": self.seed, "renderer": 1}

    def describe(self) -> str:
        return (f"faces ({self.split}): {self.num_images} procedural images, "
                f"{self.resolution}x{self.resolution}, seed {self.seed}, hflip={self.hflip}")
