"""Synthetic quadruplet worlds by name, and :func:`generate_world`, which writes one as a manifest.

``shapes`` is the embedded default (:mod:`hysafe.data.synthetic`); ``crowd`` and ``tint``
(:mod:`hysafe.data.more_worlds`) differ from it in cue type and size, caption grammar and length,
where the unsafe phrase sits, object count and label noise; ``prose``
(:mod:`hysafe.data.prose_world`) captions in English prose and tests unsafe wordings never seen in
training. They exist so that every claim about
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
from .param_worlds import ParamWorld, sample_spec
from .prose_world import ProseWorld
from .synthetic import caption_scene, render_scene, sample_scene

logger = logging.getLogger(__name__)

__all__ = ["World", "WORLDS", "WorldConfig", "generate_world", "world_for", "PARAM_PREFIX"]

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class World:
    """How one world draws a scene, renders its safe/unsafe image and captions it."""

    sample: Callable[[np.random.Generator, str], Any]  # (rng, split) -> scene
    render: Callable[..., np.ndarray]  # (scene, *, unsafe, rng, noise) -> (H, W, 3) uint8
    caption: Callable[..., str]  # (scene, *, unsafe) -> str
    image_format: str = "png"


def _any_split(sample):
    return lambda rng, split: sample(rng)


_PROSE = ProseWorld()
WORLDS: dict[str, World] = {
    "shapes": World(_any_split(sample_scene), render_scene, caption_scene),
    "crowd": World(_any_split(sample_crowd), render_crowd, caption_crowd),
    "tint": World(_any_split(sample_tint), render_tint, caption_tint),
    "prose": World(_PROSE.sample, _PROSE.render, _PROSE.caption),
}
#: ``param:SEED``: the member of the parametric family (:mod:`hysafe.data.param_worlds`) at SEED
PARAM_PREFIX = "param:"


def world_for(kind: str) -> World:
    """The world named ``kind``: one of :data:`WORLDS` or ``param:SEED``."""
    if kind in WORLDS:
        return WORLDS[kind]
    seed = kind.removeprefix(PARAM_PREFIX)
    if not kind.startswith(PARAM_PREFIX) or not seed.isdigit():
        raise ValueError(
            f"unknown synthetic world {kind!r}; expected one of {sorted(WORLDS)} or 'param:SEED' (SEED >= 0)"
        )
    world = ParamWorld(sample_spec(int(seed)))
    return World(world.sample, world.render, world.caption, world.spec.image_format)


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
        world_for(self.kind)  # a clear error for an unknown kind


def _item_rng(config: WorldConfig, split: str, index: int) -> np.random.Generator:
    key = [config.seed, SPLIT_CODES[split], index]
    if config.kind.startswith(PARAM_PREFIX):  # each member of the family draws its own scenes
        key.append(1 + int(config.kind.removeprefix(PARAM_PREFIX)))
    return np.random.default_rng(key)


def _quadruplet(world: World, config: WorldConfig, split: str, index: int, folder: Path) -> Quadruplet:
    rng = _item_rng(config, split, index)
    scene = world.sample(rng, split)
    qid = f"{split[:2]}{index:06d}"
    paths = {}
    suffix = {"png": "png", "jpeg": "jpg"}[world.image_format]
    for unsafe in (False, True):
        path = folder / f"{qid}_{'unsafe' if unsafe else 'safe'}.{suffix}"
        image = Image.fromarray(world.render(scene, unsafe=unsafe, rng=rng, noise=config.noise))
        image.save(path, **({"quality": 85} if suffix == "jpg" else {}))
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
    world, rows = world_for(config.kind), []
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
    if config.kind.startswith(PARAM_PREFIX):  # what the seed drew, for the reader
        spec = sample_spec(int(config.kind.removeprefix(PARAM_PREFIX)))
        (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    stamp.write_text(json.dumps(asdict(config)))
    logger.info("wrote synthetic world %r (%d quadruplets) to %s", config.kind, len(rows), out)
    return manifest
