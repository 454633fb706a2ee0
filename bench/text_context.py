"""What the embedded tiny CLIP's 77-token text context costs, with and without trimming the padding.

    python bench/text_context.py --out bench/results/text_context.json

One training forward + backward of the text tower (``hysafe-tiny``, fp32) on a batch of captions of a given
world: at a 24-token context (v0.5 and before), at 77 tokens through open_clip's ``encode_text`` (every
column), and at 77 tokens through :func:`hysafe.models.text_trim.trimmed_text_features` (the columns up to the
batch's last end-of-text token). Medians of timed repeats after warm-up (with their spread), in one
process; on a host shared with other jobs the spread shows when the ratios are not to be trusted.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch

from hysafe.data.worlds import world_for
from hysafe.models.backbone import TINY_MODEL, register_model_configs
from hysafe.models.text_trim import trimmed_text_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timed  # noqa: E402


def captions(world: str, count: int, seed: int = 0) -> list[str]:
    """``count`` captions of ``world``, safe and unsafe alternating."""
    spec = world_for(world)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count // 2):
        scene = spec.sample(rng, "train")
        out += [spec.caption(scene, unsafe=False), spec.caption(scene, unsafe=True)]
    return out


def tower(context: int) -> torch.nn.Module:
    register_model_configs()
    cfg = copy.deepcopy(open_clip.get_model_config(TINY_MODEL))
    cfg["text_cfg"]["context_length"] = context
    torch.manual_seed(0)
    return open_clip.model.CLIP(**cfg)


def step_seconds(model, tokens, forward, repeats: int) -> list[float]:
    """Seconds of each timed forward + backward (after two warm-up steps)."""

    def step():
        model.zero_grad(set_to_none=True)
        forward(model, tokens).square().sum().backward()

    return timed(step, repeats=repeats, warmup=2)


def measure(world: str, batch: int, repeats: int) -> dict:
    texts = captions(world, batch)
    full = tower(77)
    tokens77 = open_clip.tokenize(texts, context_length=77)
    tokens24 = open_clip.tokenize(texts, context_length=24)
    lengths = (tokens77.argmax(-1) + 1).tolist()
    encode = lambda m, t: m.encode_text(t)  # noqa: E731
    times = {
        "context 24": step_seconds(tower(24), tokens24, encode, repeats),
        "context 77": step_seconds(full, tokens77, encode, repeats),
        "context 77 trimmed": step_seconds(full, tokens77, trimmed_text_features, repeats),
    }
    seconds = {k: statistics.median(v) for k, v in times.items()}
    return {
        "world": world,
        "batch": len(texts),
        "longest caption (tokens)": max(lengths),
        "captions cut at 24 tokens": sum(n > 24 for n in lengths),
        "seconds": seconds,
        "spread (min, max)": {k: [min(v), max(v)] for k, v in times.items()},
        "vs context 24": {k: v / seconds["context 24"] for k, v in seconds.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", nargs="+", default=["shapes", "param:1000"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    rows = [measure(w, args.batch, args.repeats) for w in args.worlds]
    record = {"machine": machine(), "rows": rows}
    text = json.dumps(record, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
