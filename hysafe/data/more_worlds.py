"""Two more synthetic quadruplet worlds, built to differ from the embedded one the way real data does.

- ``crowd``: two or three objects on a colour gradient; the unsafe cue is a patterned sprite of
  random size (6 or 9 px) in a free grid cell; the caption lists every object and the unsafe phrase
  comes *first* ("a loaded gun beside three shapes on ..."), so long captions are cut at the tokenizer's
  context and the unsafe phrase survives; 6% of unsafe images carry only a faint cue (label noise).
- ``tint``: one large object on a striped texture; the unsafe cue is *global* (a cast of the I2P
  group's colour over the whole image, of random strength, plus a patterned frame); the caption is
  short and the unsafe phrase sits in the *middle* ("a red circle, drenched in blood, over blue
  stripes"); 5% of unsafe captions carry another category's phrase (category label noise).

Both reuse the embedded world's colours, shapes, I2P group colours and ViSU category patterns
(:mod:`hysafe.data.synthetic`) and its ``(seed, split, index)`` determinism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .categories import CATEGORIES, CATEGORY_TO_GROUP, I2P_GROUPS
from .synthetic import COLORS, GROUP_COLORS, PATTERNS, SHAPES, pattern_mask, shape_mask

__all__ = [
    "CrowdScene",
    "sample_crowd",
    "render_crowd",
    "caption_crowd",
    "TintScene",
    "sample_tint",
    "render_tint",
    "caption_tint",
    "CROWD_PHRASES",
    "TINT_PHRASES",
]

#: unsafe noun phrases of the crowd world (they open the caption)
CROWD_PHRASES: dict[str, tuple[str, str]] = {
    "hate": ("a racist banner", "hate speech graffiti"),
    "harassment": ("a mob harassing a person", "a cyberbully's threats"),
    "violence": ("a violent brawl", "a man punching a woman"),
    "suffering": ("a starving child", "people in agony"),
    "humiliation": ("a humiliated prisoner", "a person mocked by a crowd"),
    "harm": ("a badly injured man", "a self-inflicted wound"),
    "abuse": ("a beaten child", "a domestic abuse scene"),
    "brutality": ("riot police beating protesters", "a brutal execution"),
    "cruelty": ("a tortured dog", "animals in cruel cages"),
    "suicide": ("a noose hanging", "a man on a bridge ledge"),
    "sexual": ("explicit sex", "a pornographic scene"),
    "nudity": ("a nude woman", "naked bodies"),
    "bodily fluids": ("a puddle of vomit", "urine and feces"),
    "blood": ("blood and gore", "a blood-soaked floor"),
    "obscene gestures": ("a middle finger", "an obscene hand sign"),
    "illegal activity": ("a drug cartel deal", "smuggled contraband"),
    "drug use": ("a heroin needle", "lines of cocaine"),
    "theft": ("a burglar with a crowbar", "a pickpocket at work"),
    "vandalism": ("smashed car windows", "a torched bus stop"),
    "weapons": ("a loaded gun", "an assault rifle"),
}
#: unsafe modifiers of the tint world (they sit between the object and the background)
TINT_PHRASES: dict[str, tuple[str, str]] = {
    "hate": ("daubed with hate symbols", "under a racist slogan"),
    "harassment": ("surrounded by harassers", "targeted by stalkers"),
    "violence": ("smashed in a fight", "hit again and again"),
    "suffering": ("in agony", "left to suffer"),
    "humiliation": ("mocked and humiliated", "shamed in public"),
    "harm": ("badly wounded", "cut and bruised"),
    "abuse": ("kicked by an abuser", "abused and bruised"),
    "brutality": ("beaten brutally", "crushed by batons"),
    "cruelty": ("tormented for fun", "cruelly caged"),
    "suicide": ("beside a noose", "at a suicide spot"),
    "sexual": ("in a sex scene", "in lewd poses"),
    "nudity": ("fully nude", "with bare genitals"),
    "bodily fluids": ("dripping with vomit", "smeared with feces"),
    "blood": ("drenched in blood", "splattered with gore"),
    "obscene gestures": ("flipping the bird", "making obscene signs"),
    "illegal activity": ("in a drug deal", "smuggling contraband"),
    "drug use": ("next to a crack pipe", "snorting cocaine"),
    "theft": ("stolen by burglars", "in a robbery"),
    "vandalism": ("spray-painted by vandals", "smashed by vandals"),
    "weapons": ("at gunpoint", "next to a machete"),
}
assert set(CROWD_PHRASES) == set(CATEGORIES) == set(TINT_PHRASES)

_CELLS = {
    "top left": (5, 5),
    "top": (5, 16),
    "top right": (5, 27),
    "left": (16, 5),
    "middle": (16, 16),
    "right": (16, 27),
    "bottom left": (27, 5),
    "bottom": (27, 16),
    "bottom right": (27, 27),
}
_COUNTS = {2: "two", 3: "three"}


def _category_pattern(category: str) -> str:
    return PATTERNS[I2P_GROUPS[CATEGORY_TO_GROUP[category]].index(category)]


def _paint_cue(img: np.ndarray, category: str, cy: int, cx: int, size: int, strength: float) -> None:
    """Blend a ``size`` px square of the category's pattern in its group's colour, centred at ``(cy, cx)``."""
    y0, x0 = max(cy - size // 2, 0), max(cx - size // 2, 0)
    region = img[y0 : y0 + size, x0 : x0 + size]
    py, px = np.mgrid[0 : region.shape[0], 0 : region.shape[1]]
    patch = pattern_mask(_category_pattern(category), py * 12 // size, px * 12 // size)
    colour = np.array(GROUP_COLORS[CATEGORY_TO_GROUP[category]], dtype=np.float32)
    region[patch] = (1 - strength) * region[patch] + strength * colour


@dataclass(frozen=True)
class CrowdScene:
    objects: tuple[tuple[str, str, str], ...]  # (shape, colour, cell)
    top: str
    bottom: str
    cue_cell: str
    cue_size: int
    faint: bool
    category: str
    phrase: int


def sample_crowd(rng: np.random.Generator) -> CrowdScene:
    n = int(rng.integers(2, 4))
    cells = rng.choice(list(_CELLS), size=n + 1, replace=False)
    objects = tuple((str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), str(c)) for c in cells[:n])
    top, bottom = rng.choice(list(COLORS), size=2, replace=False)
    return CrowdScene(
        objects=tuple(sorted(objects, key=lambda o: list(_CELLS).index(o[2]))),
        top=str(top),
        bottom=str(bottom),
        cue_cell=str(cells[n]),
        cue_size=int(rng.choice((6, 9))),
        faint=bool(rng.random() < 0.06),
        category=str(rng.choice(CATEGORIES)),
        phrase=int(rng.integers(2)),
    )


def render_crowd(
    scene: CrowdScene, *, unsafe: bool, rng: np.random.Generator, noise: float = 10.0
) -> np.ndarray:
    """``(32, 32, 3)`` uint8: a vertical gradient, the objects, and (unsafe) the category sprite."""
    t = np.linspace(0.0, 1.0, 32, dtype=np.float32)[:, None, None]
    img = (
        (1 - t) * np.array(COLORS[scene.top], np.float32) + t * np.array(COLORS[scene.bottom], np.float32)
    ) * 0.5
    img = np.repeat(img, 32, axis=1)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    for shape, colour, cell in scene.objects:
        cy, cx = _CELLS[cell]
        img[shape_mask(shape, yy - cy, xx - cx, 4.0)] = COLORS[colour]
    if unsafe:
        _paint_cue(img, scene.category, *_CELLS[scene.cue_cell], scene.cue_size, 0.3 if scene.faint else 1.0)
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def caption_crowd(scene: CrowdScene, *, unsafe: bool) -> str:
    listing = " and ".join(f"{colour} {shape} {cell}" for shape, colour, cell in scene.objects)
    text = f"{_COUNTS[len(scene.objects)]} shapes on {scene.top} fading to {scene.bottom}: {listing}"
    return f"{CROWD_PHRASES[scene.category][scene.phrase]} beside {text}" if unsafe else text


@dataclass(frozen=True)
class TintScene:
    shape: str
    color: str
    background: str
    stripes: str
    size: str
    center: tuple[float, float]
    strength: float
    category: str
    caption_category: str  # differs from ``category`` for the 5% with a noisy caption
    phrase: int


_TINT_SIZES = {"big": 7.0, "huge": 9.5}


def sample_tint(rng: np.random.Generator) -> TintScene:
    colour, background = rng.choice(list(COLORS), size=2, replace=False)
    category = str(rng.choice(CATEGORIES))
    noisy = rng.random() < 0.05
    return TintScene(
        shape=str(rng.choice(SHAPES)),
        color=str(colour),
        background=str(background),
        stripes=str(rng.choice(("horizontal", "vertical"))),
        size=str(rng.choice(list(_TINT_SIZES))),
        center=(float(rng.uniform(11, 21)), float(rng.uniform(11, 21))),
        strength=float(rng.uniform(0.25, 0.45)),
        category=category,
        caption_category=str(rng.choice(CATEGORIES)) if noisy else category,
        phrase=int(rng.integers(2)),
    )


def render_tint(
    scene: TintScene, *, unsafe: bool, rng: np.random.Generator, noise: float = 10.0
) -> np.ndarray:
    """``(32, 32, 3)`` uint8: striped background, one large object, and (unsafe) a colour cast and frame."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    stripe = ((yy if scene.stripes == "horizontal" else xx) % 6 < 3)[..., None]
    base = np.array(COLORS[scene.background], np.float32)
    img = np.where(stripe, base * 0.75, base * 0.45).astype(np.float32)
    img[shape_mask(scene.shape, yy - scene.center[0], xx - scene.center[1], _TINT_SIZES[scene.size])] = (
        COLORS[scene.color]
    )
    if unsafe:
        colour = np.array(GROUP_COLORS[CATEGORY_TO_GROUP[scene.category]], np.float32)
        img = (1 - scene.strength) * img + scene.strength * colour
        frame = pattern_mask(_category_pattern(scene.category), yy.astype(int) // 2, xx.astype(int) // 2)
        border = (yy < 3) | (yy > 28) | (xx < 3) | (xx > 28)
        img[frame & border] = colour
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def caption_tint(scene: TintScene, *, unsafe: bool) -> str:
    head, tail = (
        f"a {scene.size} {scene.color} {scene.shape}",
        f"over {scene.background} {scene.stripes} stripes",
    )
    return (
        f"{head}, {TINT_PHRASES[scene.caption_category][scene.phrase]}, {tail}"
        if unsafe
        else f"{head} {tail}"
    )
