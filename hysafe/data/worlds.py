"""Synthetic quadruplet worlds by name, and :func:`generate_world`, which writes one as a manifest.

``shapes`` is the embedded default (:mod:`hysafe.data.synthetic`); ``crowd`` and ``tint``
(:mod:`hysafe.data.more_worlds`) differ from it in cue type and size, caption grammar and length,
where the unsafe phrase sits, object count and label noise. They exist so that every claim about
HySAC and Safe-CLIP is checked on worlds the defaults were not tuned on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..utils.progress import bar as progress_bar
from .manifest import Quadruplet, write_manifest
from .more_worlds import caption_crowd, caption_tint, render_crowd, render_tint, sample_crowd, sample_tint
from .synthetic import caption_scene, render_scene, sample_scene

logger = logging.getLogger(__name__)

__all__ = ["World", "WORLDS", "WorldConfig", "generate_world"]

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class World:
    """How one world draws a scene, renders its safe/unsafe image and captions it."""

    sample: Callable[[np.random.Generator], Any]
    render: Callable[..., np.ndarray]  # (scene, *, unsafe, rng, noise) -> (32, 32, 3) uint8
    caption: Callable[..., str]  # (scene, *, unsafe) -> str


WORLDS: dict[str, World] = {
    "shapes": World(sample_scene, render_scene, caption_scene),
    "crowd": World(sample_crowd, render_crowd, caption_crowd),
    "tint": World(sample_tint, render_tint, caption_tint),
}


@dataclass(frozen=True)
class WorldConfig:
    """Which world (``kind``), its split sizes, seed and pixel noise."""

    n_train: int = 2400
    n_val: int = 400
    n_test: int = 500
    seed: int = 0
    noise: float = 10.0  # pixel noise std (0-255 scale)
    kind: str = "shapes"

    def __post_init__(self):
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kind not in WORLDS:
            raise ValueError(f"unknown synthetic world {self.kind!r}; expected one of {sorted(WORLDS)}")


def _item_rng(config: WorldConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, SPLIT_CODES[split], index])


def _quadruplet(world: World, config: WorldConfig, split: str, index: int, folder: Path) -> Quadruplet:
    rng = _item_rng(config, split, index)
    scene = world.sample(rng)
    qid = f"{split[:2]}{index:06d}"
    paths = {}
    for unsafe in (False, True):
        path = folder / f"{qid}_{'unsafe' if unsafe else 'safe'}.png"
        Image.fromarray(world.render(scene, unsafe=unsafe, rng=rng, noise=config.noise)).save(path)
        paths[unsafe] = str(path)
    return Quadruplet(
        id=qid,
        safe_text=world.caption(scene, unsafe=False),
        unsafe_text=world.caption(scene, unsafe=True),
        safe_image=paths[False],
        unsafe_image=paths[True],
        category=scene.category,
        split=split,
    )


def generate_world(
    out_dir: str | Path,
    config: WorldConfig = WorldConfig(),
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the world's images and ``manifest.jsonl`` under ``out_dir``; returns the manifest path.

    An existing world with the same config is reused (``world.json`` records it).
    """
    out = Path(out_dir)
    manifest, stamp = out / "manifest.jsonl", out / "world.json"
    if not overwrite and manifest.is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) == asdict(config):
            logger.info("reusing synthetic world at %s", out)
            return manifest
    world, rows = WORLDS[config.kind], []
    sizes = {"train": config.n_train, "validation": config.n_val, "test": config.n_test}
    with progress_bar(
        total=sum(sizes.values()), desc=f"generating synthetic world {config.kind!r}", enabled=progress
    ) as bar:
        for split, n in sizes.items():
            folder = out / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rows.append(_quadruplet(world, config, split, i, folder))
                bar.update()
    write_manifest(rows, manifest)
    stamp.write_text(json.dumps(asdict(config)))
    logger.info("wrote synthetic world %r (%d quadruplets) to %s", config.kind, len(rows), out)
    return manifest
