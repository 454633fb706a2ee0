"""A parametric family of quadruplet worlds: ``synthetic:param:SEED`` draws one world from it.

The hand-made worlds (``shapes``, ``crowd``, ``tint``) are three points; defaults chosen on them fit
them. This family varies what real data varies, one draw per seed (:func:`sample_spec`):

- the unsafe **cue**: a separate sprite in a free cell, a mark *inside* an object, or a global colour
  cast; its size (or strength);
- one to three **objects**; **distractors** in the unsafe groups' colours, in both images of a pair;
- the **caption**: where the unsafe phrase sits (start, middle, end), how many words of scene
  description surround it (so long captions meet the text context), and whether the test split uses
  unsafe **wordings** never seen in training;
- **label noise** (a share of unsafe images with a faint cue), pixel noise, the image **format**
  (PNG or JPEG) and **size** (the model's preprocess resizes).

Everything follows from ``(spec seed)`` and ``(world seed, split, index)``, as in the other worlds.
A protocol draws *validation* worlds from one seed range to choose defaults, then *fresh test* worlds
from another after the choices are frozen (bench/protocol.py, docs/worlds.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .categories import CATEGORIES, CATEGORY_TO_GROUP, I2P_GROUPS
from .more_worlds import CROWD_PHRASES, TINT_PHRASES
from .synthetic import COLORS, GROUP_COLORS, PATTERNS, SHAPES, UNSAFE_PHRASES, pattern_mask, shape_mask

__all__ = [
    "WorldSpec",
    "ParamScene",
    "sample_spec",
    "ParamWorld",
    "CUES",
    "PHRASE_PLACES",
    "train_wordings",
    "cell_name",
]

CUES = ("sprite", "inside", "cast")
PHRASE_PLACES = ("start", "middle", "end")
#: scene words a caption can carry besides its objects (drawn in order, as many as ``filler_words``)
FILLER = (
    "in a quiet scene",
    "seen from slightly above",
    "photographed in soft evening light",
    "with a plain floor in front",
    "next to nothing else of note",
    "in a picture taken on an ordinary day",
    "with the camera held steady",
)


@dataclass(frozen=True)
class WorldSpec:
    """One member of the family: every knob :func:`sample_spec` draws."""

    cue: str = "sprite"  # one of CUES
    cue_size: int = 8  # px of a sprite / inside mark; a cast's strength is cue_size / 32
    objects: int = 2  # 1 to 3
    distractor_rate: float = 0.3  # chance that a pair gets a blob in an unsafe group's colour
    phrase_at: str = "end"  # one of PHRASE_PLACES
    filler_words: int = 0  # phrases of FILLER added to the caption
    unseen_wordings: bool = False  # the test split's unsafe phrases are never used in train/validation
    label_noise: float = 0.0  # share of unsafe images with a faint cue
    noise: float = 10.0  # pixel noise std (0-255)
    image_format: str = "png"  # png or jpeg
    image_size: int = 32

    def __post_init__(self):
        if self.cue not in CUES or self.phrase_at not in PHRASE_PLACES:
            raise ValueError(
                f"bad world spec: cue {self.cue!r} (one of {CUES}), phrase_at {self.phrase_at!r}"
            )
        if not 1 <= self.objects <= 3 or self.image_format not in ("png", "jpeg"):
            raise ValueError(f"bad world spec: objects {self.objects} (1-3), format {self.image_format!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def sample_spec(seed: int) -> WorldSpec:
    """The world of the family at ``seed`` (every knob drawn independently)."""
    rng = np.random.default_rng([7919, seed])
    cue = str(rng.choice(CUES))
    return WorldSpec(
        cue=cue,
        cue_size=int(rng.integers(5, 11)) if cue != "cast" else int(rng.integers(6, 12)),
        objects=int(rng.integers(1, 4)),
        distractor_rate=float(rng.choice([0.0, 0.3, 0.6])),
        phrase_at=str(rng.choice(PHRASE_PLACES)),
        filler_words=int(rng.integers(0, len(FILLER) + 1)),
        unseen_wordings=bool(rng.random() < 0.5),
        label_noise=float(rng.choice([0.0, 0.03, 0.08])),
        noise=float(rng.choice([5.0, 10.0, 15.0])),
        image_format=str(rng.choice(["png", "jpeg"])),
        image_size=int(rng.choice([32, 40, 48])),
    )


def train_wordings(category: str) -> list[str]:
    """Six unsafe wordings per category: the embedded world's, tint's, and crowd's as "with ..."
    (a world with ``unseen_wordings`` keeps the last two for its test split)."""
    return [
        *UNSAFE_PHRASES[category],
        *TINT_PHRASES[category],
        *(f"with {p}" for p in CROWD_PHRASES[category]),
    ]


@dataclass(frozen=True)
class ParamScene:
    objects: tuple[tuple[str, str, int, int, float], ...]  # (shape, colour, cy, cx, radius)
    background: str
    category: str
    phrase: str
    cue_at: tuple[int, int]  # sprite centre
    distractor: tuple[str, int, int] | None  # (group, cy, cx)
    faint: bool
    filler: tuple[str, ...]


_CELL_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "middle",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def cell_name(cy: float, cx: float, size: int) -> str:
    """The name of the third-by-third cell of a ``size`` px image that holds the point (cy, cx)."""
    step = size / 3
    return _CELL_NAMES[int(cy // step) * 3 + int(cx // step)]


def _cell_centre(cell: int, size: int) -> tuple[int, int]:
    step = size / 3
    return int(step * (cell // 3) + step / 2), int(step * (cell % 3) + step / 2)


class ParamWorld:
    """The sample / render / caption functions of one :class:`WorldSpec`
    (wrapped as a :class:`~hysafe.data.worlds.World` by :func:`~hysafe.data.worlds.world_for`)."""

    def __init__(self, spec: WorldSpec):
        self.spec = spec

    def sample(self, rng: np.random.Generator, split: str = "train") -> ParamScene:
        s, size = self.spec, self.spec.image_size
        cells = rng.permutation(9)
        colours = rng.choice(list(COLORS), size=s.objects + 1, replace=False)
        objects = tuple(
            (str(rng.choice(SHAPES)), str(colours[i + 1]), *_cell_centre(int(cells[i]), size),
             float(rng.uniform(0.10, 0.17) * size))
            for i in range(s.objects)
        )  # fmt: skip
        category = str(rng.choice(CATEGORIES))
        wordings = train_wordings(category)
        held_out = s.unseen_wordings and split == "test"
        pool = wordings[4:] if held_out else (wordings[:4] if s.unseen_wordings else wordings)
        distractor = None
        if rng.random() < s.distractor_rate:
            distractor = (str(rng.choice(list(GROUP_COLORS))), *_cell_centre(int(cells[s.objects + 1]), size))
        return ParamScene(
            objects=objects,
            background=str(colours[0]),
            category=category,
            phrase=str(rng.choice(pool)),
            cue_at=_cell_centre(int(cells[s.objects]), size),
            distractor=distractor,
            faint=bool(rng.random() < s.label_noise),
            filler=tuple(FILLER[: s.filler_words]),
        )

    def render(
        self, scene: ParamScene, *, unsafe: bool, rng: np.random.Generator, noise: float
    ) -> np.ndarray:
        size = self.spec.image_size
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = np.array(COLORS[scene.background], dtype=np.float32) * 0.6
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        masks = []
        for shape, colour, cy, cx, r in scene.objects:
            mask = shape_mask(shape, yy - cy, xx - cx, r)
            img[mask] = COLORS[colour]
            masks.append(mask)
        if scene.distractor is not None:  # in both images of the pair
            group, cy, cx = scene.distractor
            img[np.hypot(yy - cy, xx - cx) <= 0.08 * size] = GROUP_COLORS[group]
        if unsafe:
            self._paint_cue(img, scene, masks[0], 0.3 if scene.faint else 1.0)
        img += rng.normal(0.0, self.spec.noise, size=img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _paint_cue(
        self, img: np.ndarray, scene: ParamScene, first_object: np.ndarray, strength: float
    ) -> None:
        group = CATEGORY_TO_GROUP[scene.category]
        colour = np.array(GROUP_COLORS[group], dtype=np.float32)
        pattern = PATTERNS[I2P_GROUPS[group].index(scene.category)]
        s, size = self.spec, img.shape[0]
        if s.cue == "cast":
            weight = strength * s.cue_size / 32
            img[:] = (1 - weight) * img + weight * colour
            return
        # a mark inside the first object, or a sprite in a free cell: the pattern in patch coordinates
        cy, cx = scene.objects[0][2:4] if s.cue == "inside" else scene.cue_at
        y0, x0 = cy - s.cue_size // 2, cx - s.cue_size // 2
        yy, xx = np.mgrid[0:size, 0:size]
        py, px = yy - y0, xx - x0
        inside = (py >= 0) & (py < s.cue_size) & (px >= 0) & (px < s.cue_size)
        marks = inside & pattern_mask(pattern, py * 12 // s.cue_size, px * 12 // s.cue_size)
        where = marks & first_object if s.cue == "inside" else marks
        img[where] = (1 - strength) * img[where] + strength * colour

    def caption(self, scene: ParamScene, *, unsafe: bool) -> str:
        parts = [
            f"a {colour} {shape} at the {cell_name(cy, cx, self.spec.image_size)}"
            for shape, colour, cy, cx, _ in scene.objects
        ]
        head, rest = parts[0], parts[1:]
        phrase = scene.phrase if unsafe else None
        if phrase and self.spec.phrase_at == "middle":
            head = f"{head} {phrase}"
        text = " and ".join([head, *rest]) + f" on a {scene.background} background"
        text = ", ".join([text, *scene.filler])
        if phrase and self.spec.phrase_at == "start":
            text = f"{phrase}: {text}"
        if phrase and self.spec.phrase_at == "end":
            text = f"{text}, {phrase}"
        return text
