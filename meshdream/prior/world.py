"""The latent prior's small world: coloured primitives, composite objects and two-object scenes.

Every object is a union of parts; a part is one of the primitives' signed distance functions
(:data:`meshdream.prior.primitives.SDFS`, at size 1) placed by a per-axis scale, a rotation and a
centre, with its own albedo. Images come from the primitives' sphere tracer
(:func:`meshdream.prior.primitives.render_field`) and the coarse stage's cameras and shading, and
are captioned with the coarse stage's view-dependent prompts (``"a snowman, front view"``).

Conventions (those of :mod:`meshdream.render.cameras`): +Y up, the object's front faces +Z (azimuth 0), so a
view caption names the side of the object the camera sees. Asymmetric objects keep their front
within +-20 degrees of +Z; symmetric ones turn freely about Y.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..render.cameras import CameraConfig, Cameras, coarse_camera_config, make_cameras, sample_cameras, view_label, view_prompt
from .primitives import COLOURS as PRIMITIVE_COLOURS, SDFS, SHAPES, render_field

# Prompt colours (the words a user types) and the albedo the world paints them with.
COLOURS: Dict[str, Tuple[float, float, float]] = dict(
    PRIMITIVE_COLOURS, white=(0.93, 0.93, 0.90), black=(0.08, 0.08, 0.08), brown=(0.50, 0.30, 0.12), pink=(1.00, 0.50, 0.72))
# Part colours of composite objects beyond the prompt colours (never words of a caption).
PALETTE: Dict[str, Tuple[float, float, float]] = dict(
    COLOURS, grey=(0.55, 0.55, 0.58), tan=(0.85, 0.62, 0.35), dark_green=(0.05, 0.40, 0.10),
    light_blue=(0.55, 0.80, 1.00), dark_brown=(0.30, 0.17, 0.07), cream=(1.00, 0.95, 0.80))

# A person's other words for a thing: (word in the world's names, synonym).
SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "sphere": ("ball",), "cube": ("box", "block"), "donut": ("doughnut",), "hamburger": ("burger",), "mug": ("cup",),
}
VIEWS = ("front", "side", "back", "overhead")


@dataclass(frozen=True)
class Part:
    """One primitive of an object: ``shape`` in SHAPES, a PALETTE ``colour``, ``scale`` [3] of the size-1
    primitive per axis, ``rotation`` (degrees about X, then Y, then Z) and ``centre`` [3]."""

    shape: str
    colour: str
    centre: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: Tuple[float, float, float] = (0.0, 0.0, 0.0)


# --- parts in world units (the primitives' size-1 extents: sphere r 1, cube half 0.75, cylinder r 0.65
# half-height 0.8, cone base r 0.75 half-height 0.85 apex up, torus 0.62 / 0.28) ---

def ball(c, r, colour, squash=1.0, rot=(0.0, 0.0, 0.0)) -> Part:
    return Part("sphere", colour, tuple(c), (r, r * squash, r), rot)


def box(c, half, colour, rot=(0.0, 0.0, 0.0)) -> Part:
    return Part("cube", colour, tuple(c), tuple(h / 0.75 for h in half), rot)


def cyl(c, radius, half_h, colour, rot=(0.0, 0.0, 0.0)) -> Part:
    return Part("cylinder", colour, tuple(c), (radius / 0.65, half_h / 0.8, radius / 0.65), rot)


def cone(c, radius, half_h, colour, rot=(0.0, 0.0, 0.0)) -> Part:
    return Part("cone", colour, tuple(c), (radius / 0.75, half_h / 0.85, radius / 0.75), rot)


def ring(c, major, colour, flat=1.0, rot=(0.0, 0.0, 0.0)) -> Part:
    """A torus of ``major`` radius (tube 0.45 x major), its tube squashed by ``flat`` along its axis."""
    s = major / 0.62
    return Part("torus", colour, tuple(c), (s, s * flat, s), rot)


# --- composite objects: name -> parts (front = +Z, resting around the origin, inside radius ~1) ---

def _snowman():
    return [ball((0, -0.5, 0), 0.45, "white"), ball((0, 0.13, 0), 0.33, "white"), ball((0, 0.62, 0), 0.24, "white"),
            cone((0, 0.62, 0.32), 0.06, 0.14, "orange", (90, 0, 0)),
            ball((-0.09, 0.7, 0.2), 0.04, "black"), ball((0.09, 0.7, 0.2), 0.04, "black")]


def _mushroom():
    return [cyl((0, -0.35, 0), 0.2, 0.4, "cream"), ball((0, 0.12, 0), 0.62, "red", squash=0.55),
            ball((0.25, 0.4, 0.2), 0.08, "white"), ball((-0.3, 0.37, -0.1), 0.08, "white")]


def _hamburger():
    return [cyl((0, -0.38, 0), 0.62, 0.1, "tan"), cyl((0, -0.2, 0), 0.64, 0.09, "dark_brown"),
            cyl((0, -0.08, 0), 0.68, 0.035, "green"), cyl((0, 0.0, 0), 0.63, 0.04, "yellow"),
            ball((0, 0.05, 0), 0.62, "tan", squash=0.55)]


def _tree():
    return [cyl((0, -0.6, 0), 0.13, 0.3, "brown"), cone((0, 0.2, 0), 0.6, 0.55, "dark_green")]


def _house():
    return [box((0, -0.3, 0), (0.55, 0.4, 0.5), "cream"), box((0, 0.18, 0), (0.62, 0.38, 0.38), "red", (45, 0, 0)),
            box((0, -0.45, 0.5), (0.13, 0.25, 0.03), "brown"),
            box((0.33, -0.2, 0.5), (0.1, 0.1, 0.03), "light_blue"), box((-0.33, -0.2, 0.5), (0.1, 0.1, 0.03), "light_blue")]


def _table():
    legs = [cyl((x, -0.35, z), 0.06, 0.4, "brown") for x in (-0.55, 0.55) for z in (-0.35, 0.35)]
    return [box((0, 0.1, 0), (0.75, 0.06, 0.5), "brown")] + legs


def _chair():
    legs = [cyl((x, -0.55, z), 0.05, 0.3, "brown") for x in (-0.35, 0.35) for z in (-0.35, 0.35)]
    return [box((0, -0.2, 0), (0.45, 0.07, 0.45), "red"), box((0, 0.35, -0.4), (0.45, 0.48, 0.06), "brown")] + legs


def _lamp():
    return [cyl((0, -0.75, 0), 0.35, 0.06, "black"), cyl((0, -0.2, 0), 0.04, 0.5, "grey"),
            cone((0, 0.45, 0), 0.45, 0.3, "yellow"), ball((0, 0.3, 0), 0.12, "cream")]


def _rocket():
    fins = [box((0.28 * math.cos(a), -0.6, 0.28 * math.sin(a)), (0.2, 0.15, 0.03), "red", (0, -math.degrees(a), 0))
            for a in (0.0, math.pi / 2, math.pi, 1.5 * math.pi)]
    return [cyl((0, -0.15, 0), 0.25, 0.55, "white"), cone((0, 0.62, 0), 0.25, 0.25, "red"),
            ball((0, 0.05, 0.22), 0.08, "light_blue")] + fins


def _dumbbell():
    return [cyl((0, 0, 0), 0.07, 0.6, "grey", (0, 0, 90)), ball((-0.6, 0, 0), 0.3, "black"), ball((0.6, 0, 0), 0.3, "black")]


def _lollipop():
    return [cyl((0, -0.35, 0), 0.04, 0.55, "white"), cyl((0, 0.4, 0), 0.42, 0.1, "pink", (90, 0, 0)),
            ring((0, 0.4, 0), 0.27, "white", flat=0.5, rot=(90, 0, 0))]


def _ice_cream():
    return [cone((0, -0.25, 0), 0.35, 0.55, "tan", (180, 0, 0)), ball((0, 0.4, 0), 0.38, "pink"),
            ball((0, 0.8, 0), 0.08, "red")]


def _mug():  # the handle on the object's right (+X): seen from the front on the right, from the back on the left
    return [cyl((-0.1, 0, 0), 0.42, 0.5, "blue"), ring((0.38, 0, 0), 0.25, "blue", flat=0.7, rot=(90, 0, 0))]


def _donut():
    return [ring((0, -0.05, 0), 0.55, "tan", flat=0.9), ring((0, 0.04, 0), 0.55, "pink", flat=0.75)]


def _pyramid():
    return [box((0, -0.55, 0), (0.75, 0.15, 0.75), "tan"), box((0, -0.25, 0), (0.55, 0.15, 0.55), "tan"),
            box((0, 0.05, 0), (0.35, 0.15, 0.35), "tan"), box((0, 0.33, 0), (0.17, 0.13, 0.17), "yellow")]


def _hourglass():
    return [cone((0, 0.28, 0), 0.42, 0.3, "yellow", (180, 0, 0)), cone((0, -0.28, 0), 0.42, 0.3, "yellow"),
            cyl((0, 0.66, 0), 0.5, 0.07, "brown"), cyl((0, -0.66, 0), 0.5, 0.07, "brown")]


def _barrel():
    return [cyl((0, 0, 0), 0.5, 0.65, "brown"), ball((0, 0, 0), 0.56, "brown", squash=1.1),
            ring((0, 0.4, 0), 0.52, "black", flat=0.35), ring((0, -0.4, 0), 0.52, "black", flat=0.35)]


def _traffic_cone():
    return [box((0, -0.72, 0), (0.55, 0.05, 0.55), "black"), cone((0, 0.0, 0), 0.45, 0.7, "orange"),
            cyl((0, 0.05, 0), 0.23, 0.08, "white")]


def _candle():
    return [cyl((0, -0.7, 0), 0.45, 0.06, "grey"), cyl((0, -0.15, 0), 0.2, 0.5, "white"),
            ball((0, 0.5, 0), 0.1, "orange", squash=1.8)]


def _car():  # headlights (yellow) at the front, tail lights (red) at the back
    wheels = [cyl((x, -0.35, z), 0.2, 0.06, "black", (90, 0, 0)) for x in (-0.4, 0.4) for z in (-0.5, 0.5)]
    return [box((0, -0.15, 0), (0.42, 0.18, 0.8), "red"), box((0, 0.15, -0.1), (0.36, 0.15, 0.4), "light_blue"),
            ball((-0.25, -0.1, 0.78), 0.08, "yellow"), ball((0.25, -0.1, 0.78), 0.08, "yellow"),
            box((0, -0.12, -0.79), (0.35, 0.05, 0.03), "dark_brown")] + [replace(w, rotation=(0, 0, 90)) for w in wheels]


def _robot():  # a face (eyes, mouth) at the front only
    return [box((0, -0.3, 0), (0.4, 0.4, 0.3), "grey"), box((0, 0.38, 0), (0.27, 0.22, 0.22), "grey"),
            ball((-0.1, 0.43, 0.22), 0.06, "light_blue"), ball((0.1, 0.43, 0.22), 0.06, "light_blue"),
            box((0, 0.28, 0.22), (0.1, 0.025, 0.02), "black"), box((0, -0.25, 0.3), (0.15, 0.12, 0.02), "red")]


def _apple():
    return [ball((0, -0.1, 0), 0.55, "red", squash=0.9), cyl((0, 0.5, 0), 0.04, 0.12, "dark_brown"),
            ball((0.15, 0.52, 0), 0.13, "green", squash=0.35, rot=(0, 0, -30))]


def _umbrella():
    return [cone((0, 0.35, 0), 0.8, 0.22, "purple"), cyl((0, -0.25, 0), 0.04, 0.6, "black"),
            ring((0.1, -0.85, 0), 0.1, "black", flat=0.5, rot=(90, 0, 0))]


OBJECTS: Dict[str, Callable[[], List[Part]]] = {
    "snowman": _snowman, "mushroom": _mushroom, "hamburger": _hamburger, "tree": _tree, "house": _house, "table": _table,
    "chair": _chair, "lamp": _lamp, "rocket": _rocket, "dumbbell": _dumbbell, "lollipop": _lollipop,
    "ice cream cone": _ice_cream, "mug": _mug, "donut": _donut, "pyramid": _pyramid, "hourglass": _hourglass,
    "barrel": _barrel, "traffic cone": _traffic_cone, "candle": _candle, "car": _car, "robot": _robot, "apple": _apple,
    "umbrella": _umbrella,
}
# Objects whose front differs from their back: the feature the view caption must show.
ASYMMETRIC: Dict[str, str] = {
    "snowman": "carrot nose and eyes at the front", "house": "door and windows at the front",
    "chair": "backrest at the back", "mug": "handle on the right seen from the front",
    "car": "headlights at the front, tail light at the back", "robot": "face at the front",
}
RELATIONS = ("next to", "on top of")
# Every class of the world: primitives, composite objects, and the two scene layouts.
CLASSES: Tuple[str, ...] = SHAPES + tuple(OBJECTS) + tuple(f"scene {r}" for r in RELATIONS)


def article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def vocabulary() -> List[str]:
    """Every word a caption of the world can contain (the tokenizer's vocabulary)."""
    words = ["a", "an", ",", "view"] + list(VIEWS) + list(COLOURS) + list(SHAPES)
    for name in OBJECTS:
        words += name.split()
    for r in RELATIONS:
        words += r.split()
    for syns in SYNONYMS.values():
        words += list(syns)
    return list(dict.fromkeys(words))


# --- a sample: what is shown, with its caption and labels ---

@dataclass
class Sample:
    """One image's content. ``kind``: "primitive" | "object" | "scene"; ``cls``: CLASSES index;
    ``colour``: COLOURS index of a primitive (-1 otherwise); ``pair``: (shape A, colour A, shape B,
    colour B) of a scene (-1s otherwise); ``parts`` in world coordinates; ``text``: caption without the view."""

    kind: str
    cls: int
    colour: int
    pair: Tuple[int, int, int, int]
    parts: List[Part]
    text: str
    asymmetric: bool


def _primitive_part(shape: str, colour: str, size: float) -> Part:
    return Part(shape, colour, (0.0, 0.0, 0.0), (size, size, size))


def _transform(parts: Sequence[Part], scale: float, yaw: float, offset=(0.0, 0.0, 0.0)) -> List[Part]:
    """Scale the object about the origin, turn it by ``yaw`` degrees about +Y, move it by ``offset``."""
    c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    out = []
    for p in parts:
        x, y, z = (scale * v for v in p.centre)
        x, z = c * x + s * z, -s * x + c * z
        out.append(Part(p.shape, p.colour, (x + offset[0], y + offset[1], z + offset[2]), tuple(scale * v for v in p.scale),
                        p.rotation + (yaw,)))  # a fourth angle: the object's yaw, applied last
    return out


def _name_word(noun: str, rng: random.Random, synonym_rate: float) -> str:
    syns = SYNONYMS.get(noun)
    return rng.choice(syns) if syns and rng.random() < synonym_rate else noun


def sample_content(rng: random.Random, mix=(0.3, 0.45, 0.25), synonym_rate: float = 0.15) -> Sample:
    """A random primitive, composite object or two-object scene with its caption (no view yet)."""
    u = rng.random()
    colours = list(COLOURS)
    if u < mix[0]:
        si, ci = rng.randrange(len(SHAPES)), rng.randrange(len(colours))
        size = rng.uniform(0.6, 0.85)
        tilt = 0.0 if SHAPES[si] == "sphere" else rng.uniform(0, 20)
        parts = [replace(_primitive_part(SHAPES[si], colours[ci], size), rotation=(tilt, rng.uniform(0, 360), 0.0))]
        text = article(f"{colours[ci]} {_name_word(SHAPES[si], rng, synonym_rate)}")
        return Sample("primitive", si, ci, (-1, -1, -1, -1), parts, text, False)
    if u < mix[0] + mix[1]:
        names = list(OBJECTS)
        oi = rng.randrange(len(names))
        name = names[oi]
        asym = name in ASYMMETRIC
        yaw = rng.uniform(-20, 20) if asym else rng.uniform(0, 360)
        parts = _transform(OBJECTS[name](), rng.uniform(0.85, 1.05), yaw)
        words = name.split()
        text = article(" ".join(words[:-1] + [_name_word(words[-1], rng, synonym_rate)]))
        return Sample("object", len(SHAPES) + oi, -1, (-1, -1, -1, -1), parts, text, asym)
    ri = rng.randrange(len(RELATIONS))
    a, b = rng.randrange(len(SHAPES)), rng.randrange(len(SHAPES))
    ca, cb = rng.randrange(len(colours)), rng.randrange(len(colours))
    while (a, ca) == (b, cb):  # two different things
        b, cb = rng.randrange(len(SHAPES)), rng.randrange(len(colours))
    size = rng.uniform(0.38, 0.45)
    pa, pb = _primitive_part(SHAPES[a], colours[ca], size), _primitive_part(SHAPES[b], colours[cb], size)
    if RELATIONS[ri] == "next to":
        side = rng.choice((-1.0, 1.0))  # A left or right of B: "next to" does not say
        yaw = rng.uniform(0, 360)
        parts = _transform([replace(pa, centre=(side * 0.52, 0.0, 0.0)), replace(pb, centre=(-side * 0.52, 0.0, 0.0))], 1.0, yaw)
    else:
        extent = {"sphere": 1.0, "cube": 0.75, "cylinder": 0.8, "cone": 0.85, "torus": 0.28}
        top_b = extent[SHAPES[b]] * size
        bottom_a = extent[SHAPES[a]] * size
        yb = -0.5
        ya = yb + top_b + bottom_a
        parts = _transform([replace(pa, centre=(0.0, ya, 0.0)), replace(pb, centre=(0.0, yb, 0.0))], 1.0, rng.uniform(0, 360))
    text = (f"{article(colours[ca] + ' ' + _name_word(SHAPES[a], rng, synonym_rate))} {RELATIONS[ri]} "
            f"{article(colours[cb] + ' ' + _name_word(SHAPES[b], rng, synonym_rate))}")
    return Sample("scene", len(SHAPES) + len(OBJECTS) + ri, -1, (a, ca, b, cb), parts, text, False)


def canonical(name: str) -> List[Part]:
    """The parts of class ``name`` (a primitive or a composite object) without random variation."""
    if name in SHAPES:
        return [_primitive_part(name, "red", 0.75)]
    if name in OBJECTS:
        return _transform(OBJECTS[name](), 1.0, 0.0)
    raise ValueError(f"unknown class {name!r}; classes with a single shape: {', '.join(SHAPES + tuple(OBJECTS))}")


# --- packed parts and their field ---

def _rotations(angles: torch.Tensor) -> torch.Tensor:
    """[..., 4] degrees (X, Y, Z, then the object's yaw about Y) -> [..., 3, 3] part-to-world rotations."""
    a = torch.deg2rad(angles)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[..., 0]), torch.zeros_like(c[..., 0])

    def rx(i):
        return torch.stack([one, zero, zero, zero, c[..., i], -s[..., i], zero, s[..., i], c[..., i]], -1)

    def ry(i):
        return torch.stack([c[..., i], zero, s[..., i], zero, one, zero, -s[..., i], zero, c[..., i]], -1)

    def rz(i):
        return torch.stack([c[..., i], -s[..., i], zero, s[..., i], c[..., i], zero, zero, zero, one], -1)

    shape = angles.shape[:-1] + (3, 3)
    return ry(3).view(shape) @ rz(2).view(shape) @ ry(1).view(shape) @ rx(0).view(shape)


@dataclass
class PackedParts:
    """B objects of up to P parts: shape [B, P] (-1 = empty slot), centre [B, P, 3], scale [B, P, 3],
    rotation [B, P, 3, 3] part-to-world, albedo [B, P, 3]."""

    shape: torch.Tensor
    centre: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    albedo: torch.Tensor


def pack(objects: Sequence[Sequence[Part]], jitter: float = 0.0, generator: random.Random | None = None) -> PackedParts:
    """Pack objects' parts into tensors; ``jitter`` perturbs each part's albedo by up to +-jitter."""
    B, P = len(objects), max(len(o) for o in objects)
    shape = torch.full((B, P), -1, dtype=torch.long)
    centre, scale = torch.zeros(B, P, 3), torch.ones(B, P, 3)
    angles, albedo = torch.zeros(B, P, 4), torch.ones(B, P, 3)
    for i, parts in enumerate(objects):
        for j, p in enumerate(parts):
            shape[i, j] = SHAPES.index(p.shape)
            centre[i, j] = torch.tensor(p.centre)
            scale[i, j] = torch.tensor(p.scale)
            angles[i, j, : len(p.rotation)] = torch.tensor(p.rotation, dtype=torch.float32)
            col = PALETTE[p.colour]
            if jitter and generator is not None:
                col = tuple(min(1.0, max(0.0, v + generator.uniform(-jitter, jitter))) for v in col)
            albedo[i, j] = torch.tensor(col)
    return PackedParts(shape, centre, scale, _rotations(angles), albedo)


def part_distances(points: torch.Tensor, parts: PackedParts, item: torch.Tensor) -> torch.Tensor:
    """[N, P] lower bounds of the distance from ``points`` [N, 3] to each part of object ``item`` [N]
    (+inf for empty slots): SDF of the size-1 primitive at R^T (p - c) / scale, times the smallest scale."""
    N, P = points.shape[0], parts.shape.shape[1]
    out = torch.full((N * P,), float("inf"))
    kind = parts.shape[item].reshape(-1)  # [N * P], all (point, slot) pairs flattened: one SDF call per kind
    pair = (kind >= 0).nonzero().squeeze(1)
    n, j = pair // P, pair % P
    obj = item[n]
    local = torch.einsum("nji,nj->ni", parts.rotation[obj, j], points[n] - parts.centre[obj, j])
    sc = parts.scale[obj, j]
    q, smin, kind = local / sc, sc.min(-1).values, kind[pair]
    for k, fn in enumerate(SDFS):
        m = (kind == k).nonzero().squeeze(1)
        if m.numel():
            out[pair[m]] = fn(q[m], torch.ones(m.numel())) * smin[m]
    return out.view(N, P)


def parts_field(parts: PackedParts):
    """(distance, albedo) callables of the union of each object's parts, for ``render_field``."""

    def distance(points, item):
        return part_distances(points, parts, item).min(-1).values

    def albedo(points, item):
        nearest = part_distances(points, parts, item).argmin(-1)
        return parts.albedo[item, nearest]

    return distance, albedo


# --- cameras, rendering and data sets ---

def world_cameras(n: int, generator: torch.Generator, coarse_fraction: float = 0.5) -> Cameras:
    """The coarse stage's cameras (40-60 degrees up) for ``coarse_fraction`` of the views, the default
    orbit (-10-45 degrees, refine's) for the rest: the prior must answer both stages' renders."""
    coarse = sample_cameras(n, coarse_camera_config(), generator)
    wide = sample_cameras(n, CameraConfig(), generator)
    pick = torch.rand(n, generator=generator) < coarse_fraction
    fields = {}
    for f in ("c2w", "fov_y", "azimuth", "elevation", "distance", "light_position"):
        a, b = getattr(coarse, f), getattr(wide, f)
        fields[f] = torch.where(pick.view(-1, *([1] * (a.ndim - 1))), a, b)
    return Cameras(**fields)


def render_objects(objects: Sequence[Sequence[Part]], cameras: Cameras, resolution: int, supersample: int = 1,
                   shading: Sequence[str] | None = None, steps: int = 64, jitter: float = 0.0,
                   rng: random.Random | None = None) -> torch.Tensor:
    """Images [B, 3, R, R] in [0, 1] on white of ``objects`` (one per camera)."""
    parts = pack(objects, jitter, rng)
    distance, albedo = parts_field(parts)
    return render_field(distance, albedo, cameras, resolution, supersample, shading, steps, bounding_radius(parts))


def bounding_radius(parts: PackedParts) -> torch.Tensor:
    """[B] radius about the origin of a sphere holding each object (1.3: the size-1 cube's corner)."""
    r = parts.centre.norm(dim=-1) + 1.3 * parts.scale.max(-1).values + 0.02
    return torch.where(parts.shape >= 0, r, torch.zeros_like(r)).max(-1).values


LABEL_FIELDS = ("cls", "colour", "pair", "view", "asymmetric", "azimuth", "elevation")


def render_batch(n: int, seed: int, resolution: int = 128, supersample: int = 1, albedo_fraction: float = 0.25,
                 view_caption_rate: float = 0.9) -> Tuple[np.ndarray, List[str], Dict[str, np.ndarray]]:
    """``n`` random captioned images of the world, all drawn from ``seed``.

    Returns images uint8 [n, R, R, 3], captions, and labels: cls [n], colour [n], pair [n, 4],
    view [n] (VIEWS index of the camera), asymmetric [n] bool, azimuth, elevation [n] degrees."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    samples = [sample_content(rng) for _ in range(n)]
    cams = world_cameras(n, g)
    modes = ["albedo" if rng.random() < albedo_fraction else "lambertian" for _ in range(n)]
    images = render_objects([s.parts for s in samples], cams, resolution, supersample, modes, jitter=0.06, rng=rng)
    captions, views = [], []
    for i, s in enumerate(samples):
        label = view_label(float(cams.azimuth[i]), float(cams.elevation[i]))
        views.append(VIEWS.index(label))
        captions.append(view_prompt(s.text, label) if rng.random() < view_caption_rate else s.text)
    labels = {
        "cls": np.array([s.cls for s in samples], dtype=np.int16),
        "colour": np.array([s.colour for s in samples], dtype=np.int16),
        "pair": np.array([s.pair for s in samples], dtype=np.int16).reshape(n, 4),
        "view": np.array(views, dtype=np.int8),
        "asymmetric": np.array([s.asymmetric for s in samples]),
        "azimuth": cams.azimuth.numpy().astype(np.float32),
        "elevation": cams.elevation.numpy().astype(np.float32),
    }
    uint8 = (images.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return uint8, captions, labels


def ground_truth_mesh(name: str, resolution: int = 96, bound: float = 1.2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface of class ``name`` by our marching cubes on its SDF: vertices [V, 3], faces [F, 3]
    and vertex colours [V, 3] (the albedo of the nearest part)."""
    from ..mesh.marching_cubes import marching_cubes

    distance, albedo = parts_field(pack([canonical(name)]))
    axis = torch.linspace(-bound, bound, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    item = torch.zeros(grid.shape[0], dtype=torch.long)
    sdf = torch.cat([distance(grid[i:i + 65536], item[i:i + 65536]) for i in range(0, grid.shape[0], 65536)])
    verts, faces = marching_cubes(-sdf.view(resolution, resolution, resolution), 0.0, ((-bound,) * 3, (bound,) * 3))
    colours = albedo(torch.from_numpy(verts).float(), torch.zeros(len(verts), dtype=torch.long)).numpy()
    return verts, faces, colours


def front_view_cameras(azimuths: Sequence[float], elevation: float = 20.0, distance: float = 2.5, fov: float = 45.0) -> Cameras:
    """Cameras at the given azimuths (degrees; 0 = front) for evaluation renders."""
    n = len(azimuths)
    return make_cameras(torch.tensor(list(azimuths), dtype=torch.float32), torch.full((n,), elevation), torch.full((n,), distance),
                        torch.full((n,), fov))
