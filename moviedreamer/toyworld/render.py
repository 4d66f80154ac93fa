"""Vectorised renderer of the toy world, with exact optical flow, character boxes and face boxes.

A frame is a list of primitives (ellipses, rectangles, trapezoids, triangles) in world coordinates, painted
back to front over the pixel grid with numpy — no per-pixel Python loops. Every primitive moves rigidly, so
the flow of a pixel is exact: take the world point under it, move it by its front-most primitive's
displacement to the next frame, and project it with the next frame's camera (a similarity transform).
Any frame of any shot renders on its own, from (shot parameters, frame index) alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moviedreamer.toyworld.world import COLOURS, SCENE_BY_ID, ShotParams, character

FEET_BELOW_HORIZON = 0.22  # characters stand this far below the horizon (world units; the world is 1 tall)
VIEW_WIDTH = {"wide": 1.4, "medium": 0.75, "close": 0.34}
SPEED = {"walk": 0.12, "run": 0.3}  # world units per second
# a face turned this far (|facing| in [0, 1]) is drawn in profile: one eye, the mouth to one side. A sideways look
# must be legible in a wide shot at clip resolution (a head is about 12 px there), or no referee can tell a
# character who turned from one who stands
PROFILE = 0.5


@dataclass
class Prim:
    shape: str  # ellipse, rect, trapezoid, triangle, smile
    anchor: tuple[float, float]
    size: tuple[float, ...]
    colour: tuple[int, int, int]
    owner: str | None = None  # character id, or None for the background
    part: str = ""  # "head" marks face boxes


@dataclass
class Frame:
    image: np.ndarray  # uint8 [H, W, 3]
    boxes: dict[str, tuple[int, int, int, int]]  # character id → (x0, y0, x1, y1) pixels, clipped to the frame
    face_boxes: dict[str, tuple[int, int, int, int]]
    flow: np.ndarray | None = None  # float32 [H, W, 2]: forward flow to the next frame, pixels (x, y)
    source: np.ndarray | None = None  # float32 [H, W, 2]: where each pixel's point was in another frame, pixels (x, y)
    source_visible: np.ndarray | None = None  # bool [H, W]: ... and it was in view there (inside, not hidden behind another primitive)
    visible: tuple[str, ...] = ()  # characters whose face is at least half inside the frame


# --- layout and motion ------------------------------------------------------------------------------------
def layout(params: ShotParams) -> list[tuple[str, float, float]]:
    """(character id, x offset from the group centre, depth order) from the shot's layout seed."""
    rng = np.random.default_rng(params.layout_seed)
    n = len(params.characters)
    spacing = 0.17
    xs = (np.arange(n) - (n - 1) / 2) * spacing + rng.uniform(-0.03, 0.03, n)
    depth = rng.permutation(n)
    return [(cid, float(xs[i]), float(depth[i])) for i, cid in enumerate(params.characters)]


def group_x(params: ShotParams, t: float) -> float:
    """Walkers and runners move; the group's x in the world at time t (seconds)."""
    if params.action in SPEED:
        sign = 1.0 if params.direction == "right" else -1.0
        return 1.5 + sign * SPEED[params.action] * (t - params.duration / 2)
    return 1.5


def camera(params: ShotParams, t: float) -> tuple[float, float, float]:
    """(centre x, centre y, view width) at time t. Walk/run shots track the group; pans and zooms add to it."""
    scene = SCENE_BY_ID[params.scene]
    feet = scene.horizon + FEET_BELOW_HORIZON
    u = min(max(t / max(params.duration, 1e-6), 0.0), 1.0)
    vw = VIEW_WIDTH[params.framing]
    cx = group_x(params, t)
    if params.framing == "wide":
        cy = feet - 0.22
    elif params.framing == "medium":
        cy = feet - 0.2
    else:  # close-up on the first character's head
        cx += layout(params)[0][1]
        cy = feet - 0.33 + _offsets(params, t)[1]
    if params.move == "pan_left":
        cx -= 0.3 * vw * (u - 0.5)
    elif params.move == "pan_right":
        cx += 0.3 * vw * (u - 0.5)
    elif params.move == "zoom_in":
        vw *= 1.25 - 0.4 * u
    elif params.move == "zoom_out":
        vw *= 0.85 + 0.4 * u
    return cx, cy, vw


def _offsets(params: ShotParams, t: float) -> tuple[float, float]:
    """Whole-body (dx, dy) from the action, on top of the group's walk."""
    if params.action == "jump":
        return 0.0, -0.12 * abs(math.sin(math.pi * t))
    if params.action == "run":
        return 0.0, -0.015 * abs(math.sin(2 * math.pi * 2 * t))
    if params.action == "sit":
        return 0.0, 0.06 * min(1.0, t)
    return 0.0, 0.0


# --- primitives ---------------------------------------------------------------------------------------------
def background(params: ShotParams) -> list[Prim]:
    s = SCENE_BY_ID[params.scene]
    fc, h = s.feature_colour, s.horizon
    prims = [Prim("rect", (1.5, -50.0 + h), (100.0, 50.0), s.sky), Prim("rect", (1.5, h + 50.0), (100.0, 50.0), s.ground)]
    xs = np.arange(-1.0, 4.01, 0.3)
    if s.features == "sea":
        prims.append(Prim("rect", (1.5, h - 0.04), (100.0, 0.04), fc))
        prims.append(Prim("ellipse", (2.3, 0.12), (0.06, 0.06), (250, 230, 90)))
    elif s.features == "trees":
        for x in xs:
            prims += [Prim("rect", (x, h - 0.04), (0.015, 0.05), (100, 70, 40)), Prim("triangle", (x, h - 0.16), (0.07, 0.1), fc)]
    elif s.features == "buildings":
        for i, x in enumerate(xs):
            hh = 0.12 + 0.06 * ((i * 7) % 3)
            prims += [Prim("rect", (x, h - hh), (0.11, hh), fc if i % 2 else (150, 160, 180)), Prim("rect", (x, h - hh - 0.03), (0.03, 0.02), (250, 240, 150))]
    elif s.features == "stars":
        rng = np.random.default_rng(7)
        for x, y in zip(rng.uniform(-1, 4, 60), rng.uniform(0.0, h - 0.05, 60)):
            prims.append(Prim("ellipse", (float(x), float(y)), (0.008, 0.008), fc))
        prims.append(Prim("ellipse", (2.1, 0.15), (0.07, 0.07), (240, 240, 210)))
    elif s.features == "snowflakes":
        rng = np.random.default_rng(11)
        for x, y in zip(rng.uniform(-1, 4, 80), rng.uniform(0.0, h, 80)):
            prims.append(Prim("ellipse", (float(x), float(y)), (0.01, 0.01), fc))
    elif s.features == "walls":
        for x in np.arange(-1.0, 4.01, 0.8):
            prims += [Prim("rect", (x, h - 0.3), (0.12, 0.09), (150, 200, 240)), Prim("rect", (x + 0.4, h - 0.28), (0.08, 0.06), fc)]
        prims.append(Prim("rect", (1.5, h + 0.005), (100.0, 0.008), (90, 60, 40)))
    elif s.features == "dunes":
        for x in xs:
            prims.append(Prim("ellipse", (x, h + 0.02), (0.2, 0.06), fc))
    elif s.features == "benches":
        for x in np.arange(-1.0, 4.01, 0.6):
            prims += [Prim("rect", (x, h + 0.04), (0.09, 0.015), fc), Prim("rect", (x, h + 0.07), (0.08, 0.02), (80, 60, 40))]
        prims.append(Prim("ellipse", (2.0, 0.1), (0.05, 0.05), (250, 230, 90)))
    return prims


def character_prims(cid: str, x: float, feet: float, params: ShotParams, t: float, looks: dict | None = None) -> list[Prim]:
    c = (looks or {}).get(cid) or character(cid)
    dx, dy = _offsets(params, t)
    x, y = x + dx, feet + dy
    head, cloth, skin = COLOURS[c.head_colour], COLOURS[c.clothes_colour], COLOURS[c.head_colour]
    step = 0.012 * math.sin(2 * math.pi * (2.0 if params.action == "walk" else 4.0) * t) if params.action in ("walk", "run") else 0.0
    prims = [
        Prim("rect", (x - 0.03, y - 0.05 - step), (0.018, 0.05), (60, 60, 70), cid),
        Prim("rect", (x + 0.03, y - 0.05 + step), (0.018, 0.05), (60, 60, 70), cid),
    ]
    body_y = y - 0.17
    facing = _facing(params, t)
    profile = abs(facing) >= PROFILE
    bw = 1.0 - 0.3 * min(1.0, abs(facing))  # a body seen from the side is narrower (smoothly: a turn is not a cut)
    if c.clothes == "dress":
        prims.append(Prim("trapezoid", (x, body_y), (0.05 * bw, 0.09 * bw, 0.075), cloth, cid))
    elif c.clothes == "coat":
        prims.append(Prim("rect", (x, body_y + 0.01), (0.07 * bw, 0.085), cloth, cid))
    else:
        prims.append(Prim("rect", (x, body_y), (0.06 * bw, 0.07), cloth, cid))
    wave = 0.03 * math.sin(2 * math.pi * 1.5 * t) if params.action == "wave" else 0.0
    arm = 0.08 * bw + 0.02 * (1 - bw)
    prims.append(Prim("rect", (x - arm, body_y), (0.015, 0.055), skin, cid))
    if params.action == "wave":
        prims.append(Prim("rect", (x + arm, body_y - 0.1 + wave), (0.015, 0.055), skin, cid))
    else:
        prims.append(Prim("rect", (x + arm, body_y), (0.015, 0.055), skin, cid))
    hy = body_y - 0.15
    hs = {"round": ("ellipse", (0.07, 0.07)), "oval": ("ellipse", (0.058, 0.08)), "square": ("rect", (0.065, 0.065))}[c.head_shape]
    # what makes a cat a cat and a robot a robot: drawn after the hat (below), so that a hat never hides it
    if c.kind == "cat":
        kind_prims = [Prim("triangle", (x - 0.045, hy - 0.075), (0.025, 0.03), head, cid), Prim("triangle", (x + 0.045, hy - 0.075), (0.025, 0.03), head, cid)]
    elif c.kind == "robot":
        lift = 0.03 if c.hat != "none" else 0.0  # in front of the hat, its ball above it
        kind_prims = [Prim("rect", (x, hy - 0.09 - lift), (0.005, 0.025), (60, 60, 70), cid),
                      Prim("ellipse", (x, hy - 0.115 - lift), (0.012, 0.012), (230, 50, 50), cid)]
    else:
        kind_prims = []
    if c.hat == "none":
        prims += kind_prims
    prims.append(Prim(hs[0], (x, hy), hs[1], head, cid, "head"))
    eye = {"big black": ((0.016, 0.016), COLOURS["black"]), "small blue": ((0.01, 0.01), COLOURS["blue"]), "sleepy green": ((0.016, 0.007), COLOURS["green"])}[c.eyes]
    if profile:  # in profile: one eye and the mouth towards the way the character looks
        ex = x + 0.028 * math.copysign(1.0, facing)
        one = Prim("ellipse", (ex + 0.004 * math.copysign(1.0, facing), hy - 0.012), eye[0], eye[1], cid)
        prims += [one, one]  # the other eye hides behind it: frames keep one primitive list, so flow pairs them up
    else:
        ex = x + 0.012 * facing
        prims += [Prim("ellipse", (ex - 0.026, hy - 0.012), eye[0], eye[1], cid), Prim("ellipse", (ex + 0.026, hy - 0.012), eye[0], eye[1], cid)]
    if c.mouth == "smile":
        prims.append(Prim("smile", (ex, hy + 0.022), (0.03 * bw, 0.02), (120, 30, 30), cid))
    elif c.mouth == "open":
        prims.append(Prim("ellipse", (ex, hy + 0.035), (0.014, 0.014), (120, 30, 30), cid))
    else:
        prims.append(Prim("rect", (ex, hy + 0.035), (0.022, 0.004), (120, 30, 30), cid))
    if c.hat != "none":
        colour_name, kind = c.hat.split()
        hc = COLOURS[colour_name]
        top = hy - (0.08 if c.head_shape == "oval" else 0.07)
        if kind == "hat":
            prims += [Prim("rect", (x, top), (0.09, 0.012), hc, cid), Prim("rect", (x, top - 0.035), (0.05, 0.03), hc, cid)]
        elif kind == "cap":
            prims += [Prim("ellipse", (x, top), (0.068, 0.035), hc, cid), Prim("rect", (x + 0.06 * facing, top + 0.012), (0.04, 0.008), hc, cid)]
        else:  # crown
            prims += [Prim("rect", (x, top - 0.005), (0.055, 0.015), hc, cid)] + [
                Prim("triangle", (x + k * 0.035, top - 0.035), (0.018, 0.02), hc, cid) for k in (-1, 0, 1)
            ]
        prims += kind_prims
    return prims


def _facing(params: ShotParams, t: float) -> float:
    if params.action == "turn":
        # looks around: left at the start, right after one second, left again after two ... so that every second of
        # a turn shot shows the head turning (a pose held still would be a stand seen from the side)
        return -math.cos(math.pi * t)
    if params.action in ("walk", "run"):
        return 1.0 if params.direction == "right" else -1.0
    return 0.0


def scene_prims(params: ShotParams, t: float, looks: dict | None = None) -> list[Prim]:
    feet = SCENE_BY_ID[params.scene].horizon + FEET_BELOW_HORIZON
    gx = group_x(params, t)
    prims = background(params)
    for cid, ox, _ in sorted(layout(params), key=lambda item: item[2]):  # back to front
        prims += character_prims(cid, gx + ox, feet, params, t, looks)
    return prims


# --- rasterising ----------------------------------------------------------------------------------------------
def _mask(p: Prim, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    u, v = X - p.anchor[0], Y - p.anchor[1]
    if p.shape == "rect":
        return (np.abs(u) <= p.size[0]) & (np.abs(v) <= p.size[1])
    if p.shape == "ellipse":
        return (u / p.size[0]) ** 2 + (v / p.size[1]) ** 2 <= 1.0
    if p.shape == "trapezoid":
        top, bottom, hh = p.size
        return (np.abs(v) <= hh) & (np.abs(u) <= top + (bottom - top) * (v + hh) / (2 * hh))
    if p.shape == "triangle":
        hw, hh = p.size
        return (np.abs(v) <= hh) & (np.abs(u) <= hw * (v + hh) / (2 * hh))
    if p.shape == "smile":
        rx, ry = p.size
        outer = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        inner = (u / (rx * 0.7)) ** 2 + ((v + ry * 0.35) / (ry * 0.8)) ** 2 <= 1.0
        return outer & ~inner & (v >= 0)
    raise ValueError(p.shape)


def _grid(cam, width: int, height: int):
    cx, cy, vw = cam
    vh = vw * height / width
    xs = cx + ((np.arange(width) + 0.5) / width - 0.5) * vw
    ys = cy + ((np.arange(height) + 0.5) / height - 0.5) * vh
    return np.meshgrid(xs, ys)


def _project(cam, x, y, width: int, height: int):
    cx, cy, vw = cam
    return (x - cx) / vw * width + width / 2 - 0.5, (y - cy) / (vw * height / width) * height + height / 2 - 0.5


def render_frame(params: ShotParams, frame: int, fps: int = 8, size: tuple[int, int] = (128, 128), flow: bool = False,
                 looks: dict | None = None, source: int | None = None) -> Frame:
    """Frame `frame` of the shot at `size` = (width, height); with `flow`, the exact flow to frame + 1; with `source`
    (a frame number), where each pixel's point was in that frame (a backward warp's sampling map). `looks`
    (character id -> Character) draws those characters otherwise than the catalogue (e.g. other clothes)."""
    width, height = size
    image, owner, prims, (X, Y), boxes, faces = _draw(params, frame / fps, width, height, looks)
    out = Frame(image, _clip_boxes(boxes, width, height), _clip_boxes(faces, width, height), visible=_visible(faces, width, height))
    if flow:
        out.flow = _moved_to(params, prims, owner, X, Y, (frame + 1) / fps, looks, width, height)
    if source is not None:
        u0, v0 = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        out.source = _moved_to(params, prims, owner, X, Y, source / fps, looks, width, height) + np.stack([u0, v0], axis=-1)
        # seen there too: the primitive in front at that point of the source frame is the pixel's own
        before = _draw(params, source / fps, width, height, looks)[1]
        sx = np.clip(np.round(out.source[..., 0]).astype(np.int64), 0, width - 1)
        sy = np.clip(np.round(out.source[..., 1]).astype(np.int64), 0, height - 1)
        inside = (out.source[..., 0] > -0.5) & (out.source[..., 0] < width - 0.5) & (out.source[..., 1] > -0.5) & (out.source[..., 1] < height - 0.5)
        out.source_visible = inside & (before[sy, sx] == owner)
    return out


def _draw(params: ShotParams, t: float, width: int, height: int, looks):
    """(image, owner [H, W] (index of the front-most primitive, -1 none), primitives, world grid, boxes, face boxes)."""
    cam = camera(params, t)
    X, Y = _grid(cam, width, height)
    prims = scene_prims(params, t, looks)
    image = np.zeros((height, width, 3), np.uint8)
    owner = np.full((height, width), -1, np.int32)
    boxes: dict[str, list[float]] = {}
    faces: dict[str, list[float]] = {}
    for i, p in enumerate(prims):
        ys, xs = _pixel_window(p, cam, width, height)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        m = _mask(p, X[ys, xs], Y[ys, xs])
        if not m.any():
            continue
        image[ys, xs][m] = p.colour
        owner[ys, xs][m] = i
        if p.owner:
            _grow(boxes, p.owner, p, cam, width, height)
            if p.part == "head":
                _grow(faces, p.owner, p, cam, width, height)
    return image, owner, prims, (X, Y), boxes, faces


def _moved_to(params, prims, owner, X, Y, t: float, looks, width: int, height: int) -> np.ndarray:
    """Each pixel's displacement [H, W, 2] to where its world point (moved with its front-most primitive) is seen at
    time t."""
    cam = camera(params, t)
    other = scene_prims(params, t, looks)
    disp = np.array([[b.anchor[0] - a.anchor[0], b.anchor[1] - a.anchor[1]] for a, b in zip(prims, other)] + [[0.0, 0.0]], np.float64)
    d = disp[owner]  # owner -1 (no primitive) takes the last row: still
    u1, v1 = _project(cam, X + d[..., 0], Y + d[..., 1], width, height)
    u0, v0 = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u1 - u0, v1 - v0], axis=-1).astype(np.float32)


def _extent(p: Prim) -> tuple[float, float]:
    """Half-width and half-height of a primitive's bounding box in world units."""
    return (max(p.size[0], p.size[1]), p.size[2]) if p.shape == "trapezoid" else p.size[:2]


def _pixel_window(p: Prim, cam, width: int, height: int) -> tuple[slice, slice]:
    """The pixel rows/columns a primitive can touch: masks are evaluated only there."""
    ex, ey = _extent(p)
    x0, y0 = _project(cam, p.anchor[0] - ex, p.anchor[1] - ey, width, height)
    x1, y1 = _project(cam, p.anchor[0] + ex, p.anchor[1] + ey, width, height)
    clamp = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return slice(clamp(int(math.floor(y0)), height), clamp(int(math.ceil(y1)) + 1, height)), slice(clamp(int(math.floor(x0)), width), clamp(int(math.ceil(x1)) + 1, width))


def _grow(boxes, cid, p: Prim, cam, width, height):
    ext = _extent(p)
    x0, y0 = _project(cam, p.anchor[0] - ext[0], p.anchor[1] - ext[1], width, height)
    x1, y1 = _project(cam, p.anchor[0] + ext[0], p.anchor[1] + ext[1], width, height)
    b = boxes.setdefault(cid, [x0, y0, x1, y1])
    b[0], b[1], b[2], b[3] = min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1)


def _visible(faces, width, height) -> tuple[str, ...]:
    out = []
    for cid, (x0, y0, x1, y1) in faces.items():
        area = (x1 - x0) * (y1 - y0)
        inside = max(0.0, min(x1, width) - max(x0, 0)) * max(0.0, min(y1, height) - max(y0, 0))
        if area > 0 and inside >= 0.5 * area:
            out.append(cid)
    return tuple(sorted(out))


def _clip_boxes(boxes, width, height):
    out = {}
    for cid, (x0, y0, x1, y1) in boxes.items():
        box = (max(0, int(math.floor(x0 + 0.5))), max(0, int(math.floor(y0 + 0.5))), min(width, int(math.ceil(x1 + 0.5))), min(height, int(math.ceil(y1 + 0.5))))
        if box[2] > box[0] and box[3] > box[1]:
            out[cid] = box
    return out


def render_clip(params: ShotParams, n_frames: int, fps: int = 8, size=(128, 128)):
    """Yield the frames of a shot one at a time (streaming)."""
    for i in range(n_frames):
        yield render_frame(params, i, fps, size).image
