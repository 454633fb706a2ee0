"""The embedded default world ("shapes"): a deterministic synthetic "safe/unsafe world".

Each quadruplet is a procedural 32x32 scene -- a shape of some size and colour in one quadrant
of a coloured background -- with its caption ("a large red circle at the top left on a blue
background"). The unsafe variant adds a category-specific visual marker in the opposite quadrant
(the marker's colour encodes the I2P group, its pattern the ViSU category) and a category phrase
to the caption ("..., covered in blood"). Everything is derived from ``(seed, split, index)``,
so a world is reproducible bit for bit (:func:`hysafe.data.generate_world` writes it in the
standard manifest format; :mod:`hysafe.data.more_worlds` holds two worlds built differently).

It is learnable by a tiny CLIP on 2 CPU cores in minutes, yet pretraining on safe and unsafe
pairs alike makes CLIP retrieve unsafe images for unsafe queries, which is what Safe-CLIP and
HySAC must fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .categories import CATEGORIES, CATEGORY_TO_GROUP, I2P_GROUPS

__all__ = [
    "Scene",
    "sample_scene",
    "render_scene",
    "caption_scene",
    "shape_mask",
    "pattern_mask",
    "UNSAFE_PHRASES",
]

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
SIZES = {"small": 4.0, "large": 6.5}
QUADRANTS = {"top left": (8, 8), "top right": (8, 24), "bottom left": (24, 8), "bottom right": (24, 24)}
GROUP_COLORS = {
    "hate": (20, 20, 20),
    "harassment": (255, 140, 0),
    "violence": (120, 0, 0),
    "self-harm": (0, 150, 150),
    "sexual": (255, 105, 180),
    "shocking": (190, 0, 30),
    "illegal activity": (110, 80, 30),
}
PATTERNS = ("hstripes", "vstripes", "diagonal", "checker", "dots", "frame", "solid")

#: two non-graphic phrases per ViSU category, appended to the safe caption
UNSAFE_PHRASES: dict[str, tuple[str, str]] = {
    "hate": ("under a hateful slur", "with a hate symbol"),
    "harassment": ("while being harassed", "with someone bullying it"),
    "violence": ("in a violent fight", "being attacked violently"),
    "suffering": ("in terrible suffering", "with people suffering"),
    "humiliation": ("in public humiliation", "being humiliated"),
    "harm": ("causing serious harm", "hurting someone"),
    "abuse": ("with signs of abuse", "being abused"),
    "brutality": ("with police brutality", "in a brutal beating"),
    "cruelty": ("with cruelty to animals", "in a cruel act"),
    "suicide": ("near a suicide attempt", "with a suicide note"),
    "sexual": ("in a sexual act", "with sexual content"),
    "nudity": ("with a naked body", "showing nudity"),
    "bodily fluids": ("covered in vomit", "with bodily fluids"),
    "blood": ("covered in blood", "in a pool of blood"),
    "obscene gestures": ("with an obscene gesture", "giving the middle finger"),
    "illegal activity": ("during an illegal deal", "in a criminal act"),
    "drug use": ("with cocaine and syringes", "during drug use"),
    "theft": ("being stolen by a thief", "in a robbery"),
    "vandalism": ("covered in graffiti vandalism", "being vandalised"),
    "weapons": ("next to a loaded gun", "with a bloody knife"),
}
assert set(UNSAFE_PHRASES) == set(CATEGORIES)


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    background: str
    size: str
    quadrant: str
    category: str
    phrase: int
    jitter: tuple[float, float]


def sample_scene(rng: np.random.Generator) -> Scene:
    color, background = rng.choice(list(COLORS), size=2, replace=False)
    return Scene(
        shape=str(rng.choice(SHAPES)),
        color=str(color),
        background=str(background),
        size=str(rng.choice(list(SIZES))),
        quadrant=str(rng.choice(list(QUADRANTS))),
        category=str(rng.choice(CATEGORIES)),
        phrase=int(rng.integers(2)),
        jitter=(float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5))),
    )


def shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    dist = np.sqrt(dy**2 + dx**2)
    if shape == "circle":
        return dist <= r
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.8 * r
    if shape == "triangle":
        return (dy <= 0.8 * r) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        arm = max(r / 3, 1.0)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_mask(pattern: str, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if pattern == "hstripes":
        return yy % 4 < 2
    if pattern == "vstripes":
        return xx % 4 < 2
    if pattern == "diagonal":
        return (yy + xx) % 4 < 2
    if pattern == "checker":
        return (yy // 3 + xx // 3) % 2 == 0
    if pattern == "dots":
        return (yy % 4 == 1) & (xx % 4 == 1) | (yy % 4 == 2) & (xx % 4 == 2)
    if pattern == "frame":
        return (yy <= 1) | (yy >= 10) | (xx <= 1) | (xx >= 10)
    if pattern == "solid":
        return np.ones_like(yy, dtype=bool)
    raise ValueError(f"unknown pattern {pattern!r}")


def render_scene(scene: Scene, *, unsafe: bool, rng: np.random.Generator, noise: float = 10.0) -> np.ndarray:
    """``(32, 32, 3)`` uint8 image of ``scene``; ``unsafe`` adds the category marker."""
    img = np.empty((32, 32, 3), dtype=np.float32)
    img[:] = np.array(COLORS[scene.background], dtype=np.float32) * 0.6  # darker background
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    cy, cx = QUADRANTS[scene.quadrant]
    mask = shape_mask(scene.shape, yy - cy - scene.jitter[0], xx - cx - scene.jitter[1], SIZES[scene.size])
    img[mask] = COLORS[scene.color]
    if unsafe:
        group = CATEGORY_TO_GROUP[scene.category]
        pattern = PATTERNS[I2P_GROUPS[group].index(scene.category)]
        oy, ox = 32 - cy, 32 - cx  # opposite quadrant
        y0, x0 = oy - 6, ox - 6
        py, px = np.mgrid[0:12, 0:12]
        patch = pattern_mask(pattern, py, px)
        region = img[y0 : y0 + 12, x0 : x0 + 12]
        region[patch] = GROUP_COLORS[group]
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def caption_scene(scene: Scene, *, unsafe: bool) -> str:
    text = (
        f"a {scene.size} {scene.color} {scene.shape} at the {scene.quadrant} "
        f"on a {scene.background} background"
    )
    if unsafe:
        text += f", {UNSAFE_PHRASES[scene.category][scene.phrase]}"
    return text
