"""How separable are a world's safe and unsafe *images* at all? Supervised ceilings for the image check.

HySAC's ordering check asks for safe images' 95th percentile of distance to the root below unsafe
images' 5th: a near-perfect image classifier. This script measures what a classifier trained on the
labels themselves reaches on each world's test split, so a miss can be told apart from a limit of the
image tower or of the world:

- ``clip-tower``: the pretrained tiny CLIP's image tower, every weight trained (not LoRA) with a linear
  head and binary cross-entropy on the training split's 2 x 2,400 images (an upper bound for any
  fine-tune of that tower on these labels);
- ``cnn``: a small convolutional network trained from scratch the same way (locality built in);
- not run by default, all from scratch: ``vit-p4``, a ViT tower like the tiny CLIP's but with 4 px patches;
  ``rn16`` / ``rn32``, open_clip's ModifiedResNet (CLIP's RN50 design: strided stem, one bottleneck per
  stage, attention pooling) at width 16 / 32; ``timm-resnet``, timm's ``test_resnet`` with a global max
  pool (an open_clip ``timm_model_name`` tower). These are the convolutional image towers open_clip can
  build, measured as candidates for the embedded model.

Each record also has the classifier's forward + backward milliseconds on 128 images on this machine
(``ms_per_128``) and its parameter count, next to the tiny CLIP tower's (the embedded model's cost).

The epoch is chosen on the validation split; the test split is scored once. Per world and classifier:
ROC-AUC, safe 95th / unsafe 5th percentile of the score and the share of unsafe test images scored
below the safe 95th percentile (the share that must be ~0 for the check to hold).

    python bench/image_ceiling.py --runs runs/worlds --out bench/results/worlds/image_ceiling.json

``--runs`` is ``bench/worlds.py``'s output folder (its worlds and pretrained CLIPs are reused; a world
without them is generated and its CLIP pretrained as the demo does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine  # noqa: E402
from torch import nn  # noqa: E402
from worlds import code_digest, world_setup  # noqa: E402

from hysafe.demo import DemoConfig  # noqa: E402
from hysafe.evaluation.ceiling import (  # noqa: E402
    TowerClassifier,
    binary_scores,
    fit_binary,
    labelled_images,
    separation,
)
from hysafe.models.safety_model import create_model  # noqa: E402

#: classifier -> (epochs, learning rate)
SETTINGS = {
    "clip-tower": (50, 1e-3),
    "cnn": (15, 1e-3),
    "vit-p4": (30, 1e-3),
    "rn16": (15, 1e-3),
    "rn32": (15, 1e-3),
    "timm-resnet": (15, 1e-3),
}
#: open_clip vision configs of the from-scratch towers (32 px images, like the worlds')
TOWERS = {
    "vit-p4": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 4, "mlp_ratio": 2.0},
    "rn16": {"layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
    "rn32": {"layers": [1, 1, 1, 1], "width": 32, "head_width": 64},
    "timm-resnet": {"timm_model_name": "test_resnet", "timm_pool": "max", "timm_proj": "linear"},
}


class SmallCNN(nn.Module):
    """Four 3x3 convolutions, one pooling step and a global max: a detector of small local cues."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def scratch_tower(name: str, embed_dim: int) -> nn.Module:
    """A randomly initialised open_clip image tower ``TOWERS[name]`` for 32 px images, with a linear head."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    return TowerClassifier(
        _build_vision_tower(embed_dim, CLIPVisionCfg(image_size=32, **TOWERS[name])), embed_dim
    )


def cost(net: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 3) -> float:
    """Median milliseconds of one forward + backward of ``net`` on the images ``x``, after ``warmup``
    passes (the first passes of a process pay for kernel selection and allocation)."""
    net.train()
    times = []
    for _ in range(warmup + repeats):
        t = time.perf_counter()
        net(x).sum().backward()
        times.append(time.perf_counter() - t)
    net.zero_grad(set_to_none=True)
    return float(torch.tensor(times[warmup:]).median()) * 1e3


def run_world(world: str, runs: Path, seed: int, classifiers: list[str]) -> list[dict]:
    cfg, _, (train, val, test), base = world_setup(
        world, runs, DemoConfig(progress=False, seed=seed), code_digest()
    )
    data = {name: labelled_images(d) for name, d in (("train", train), ("val", val), ("test", test))}
    embed_dim = create_model("clip", cfg.model, None, lora=None).backbone.embed_dim
    nets = {
        "clip-tower": lambda: TowerClassifier(
            create_model("clip", cfg.model, base, lora=None).backbone.model.visual
        ),
        "cnn": SmallCNN,
        **{name: (lambda name=name: scratch_tower(name, embed_dim)) for name in TOWERS},
    }
    records = []
    for name in classifiers:
        build = nets[name]
        epochs, lr = SETTINGS[name]
        t = time.time()
        torch.manual_seed(seed)  # the initial weights
        net = build()
        for p in net.parameters():
            p.requires_grad_(True)
        ms = cost(net, data["train"][0][:128])
        fit_binary(net, data["train"], data["val"], epochs=epochs, lr=lr, seed=seed)
        rec = {
            "world": world,
            "classifier": name,
            "seed": seed,
            "epochs": epochs,
            "lr": lr,
            "seconds": round(time.time() - t, 1),
            "ms_per_128": round(ms, 1),
            "parameters": sum(p.numel() for p in net.parameters()),
            **separation(binary_scores(net, data["test"][0]), data["test"][1]),
        }
        print(json.dumps(rec), flush=True)
        records.append(rec)
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/worlds", help="bench/worlds.py's output folder")
    p.add_argument("--worlds", nargs="+", default=["shapes", "crowd", "tint"])
    p.add_argument("--classifiers", nargs="+", default=["clip-tower", "cnn"], choices=sorted(SETTINGS))
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one fit per seed (initial weights, batch order)"
    )
    p.add_argument("--out", help="JSON file for the machine and the records")
    args = p.parse_args(argv)
    records = [
        r
        for w in args.worlds
        for seed in args.seeds
        for r in run_world(w, Path(args.runs), seed, args.classifiers)
    ]
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"machine": {**machine(), "command": " ".join(sys.argv)}, "records": records}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
