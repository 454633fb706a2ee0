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
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402
from worlds import code_digest, world_setup  # noqa: E402

from hysafe.demo import DemoConfig  # noqa: E402
from hysafe.models.safety_model import create_model  # noqa: E402
from hysafe.training.validation import distance_stats  # noqa: E402

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


def image_labels(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Safe then unsafe images of a quadruplet split, labels 0 / 1."""
    rows = [dataset[i] for i in range(len(dataset))]
    x = torch.stack([r["image"] for r in rows] + [r["unsafe_image"] for r in rows])
    return x, torch.cat([torch.zeros(len(rows)), torch.ones(len(rows))])


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


class TowerClassifier(nn.Module):
    """An open_clip image tower with a linear head on its embedding."""

    def __init__(self, tower: nn.Module, embed_dim: int | None = None):
        super().__init__()
        self.tower, self.head = tower, nn.Linear(embed_dim or tower.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(x)).squeeze(1)


@torch.no_grad()
def scores(net: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)])


def fit(
    net: nn.Module, train: tuple, val: tuple, *, epochs: int, lr: float, batch: int = 64, seed: int = 0
) -> nn.Module:
    """Binary cross-entropy with AdamW; returns ``net`` with the weights of its best validation ROC-AUC."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(train[0])).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(net(train[0][idx]), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = roc_auc_score(val[1].numpy(), scores(net, val[0]).numpy())
        if auc > best:
            best, state = auc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return net


def separation(s: torch.Tensor, y: torch.Tensor) -> dict:
    """ROC-AUC and the ordering check's percentiles for scores ``s`` (higher: unsafe)."""
    safe, unsafe = distance_stats(s[y == 0]), distance_stats(s[y == 1])
    return {
        "roc_auc": float(roc_auc_score(y.numpy(), s.numpy())),
        "safe_up_95": safe["up_95"],
        "unsafe_low_05": unsafe["low_05"],
        "unsafe_below_safe_95": float((s[y == 1] < safe["up_95"]).float().mean()),
        "separated": unsafe["low_05"] > safe["up_95"],
    }


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
    data = {name: image_labels(d) for name, d in (("train", train), ("val", val), ("test", test))}
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
        fit(net, data["train"], data["val"], epochs=epochs, lr=lr, seed=seed)
        rec = {
            "world": world,
            "classifier": name,
            "seed": seed,
            "epochs": epochs,
            "lr": lr,
            "seconds": round(time.time() - t, 1),
            "ms_per_128": round(ms, 1),
            "parameters": sum(p.numel() for p in net.parameters()),
            **separation(scores(net, data["test"][0]), data["test"][1]),
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
