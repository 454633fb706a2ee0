"""The image tower's supervised ceiling: how far a tower can separate safe from unsafe images at all.

HySAC's ordering check asks for the safe images' 95th percentile of distance to the root below the
unsafe images' 5th: a near-perfect image classifier that HySAC reaches without image labels, only
through its losses. Where the pretrained image tower cannot separate a world's images even when
*every* weight is trained on the labels, no fine-tune can pass that check, and a miss says nothing
about the objective. :func:`image_tower_ceiling` measures that ceiling: the pretrained tower with a
linear head, binary cross-entropy on the training split's safe and unsafe images, the epoch chosen on
the validation split's ROC-AUC, the test split scored once. Its ``unsafe_below_safe_95`` (the share
of unsafe test images scored below the safe 95th percentile) is what the ordering check compares
HySAC's own share with (:func:`hysafe.evaluation.checks.safety_checks`, ``image_ceiling``).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from tqdm.auto import tqdm

from .metrics import distance_stats

__all__ = [
    "CeilingConfig",
    "TowerClassifier",
    "labelled_images",
    "fit_binary",
    "binary_scores",
    "separation",
    "image_tower_ceiling",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CeilingConfig:
    """How the ceiling's classifier is trained (AdamW, every weight of the tower and the head)."""

    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CeilingConfig.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise ValueError(f"CeilingConfig.lr must be a positive finite number, got {self.lr!r}")


class TowerClassifier(nn.Module):
    """An image tower with a linear head on its embedding: one logit, higher for unsafe."""

    def __init__(self, tower: nn.Module, embed_dim: int | None = None):
        super().__init__()
        self.tower, self.head = tower, nn.Linear(embed_dim or tower.output_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.tower(x)).squeeze(1)


def labelled_images(dataset) -> tuple[Tensor, Tensor]:
    """The safe then the unsafe images of a quadruplet split (preprocessed), labels 0 / 1."""
    rows = [dataset[i] for i in range(len(dataset))]
    if not rows:
        raise ValueError("the split has no quadruplets: the image ceiling needs images of both labels")
    x = torch.stack([r["image"] for r in rows] + [r["unsafe_image"] for r in rows])
    return x, torch.cat([torch.zeros(len(rows)), torch.ones(len(rows))])


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def binary_scores(net: nn.Module, x: Tensor, batch: int = 512) -> Tensor:
    """The classifier's logits for ``x`` (on the CPU), in evaluation mode, in batches."""
    net.eval()
    device = _device(net)
    return torch.cat([net(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def _auc(net: nn.Module, data: tuple[Tensor, Tensor]) -> float:
    return float(roc_auc_score(data[1].numpy(), binary_scores(net, data[0]).numpy()))


def fit_binary(
    net: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    epochs: int,
    lr: float,
    batch: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Binary cross-entropy with AdamW on ``train``; returns ``net`` with the weights of its best
    validation ROC-AUC (the first epoch's on ties)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    best, state = -1.0, None
    device = _device(net)
    for _ in tqdm(range(epochs), desc="image ceiling", disable=not progress, leave=False):
        net.train()
        for idx in torch.randperm(len(train[0])).split(batch):
            logits = net(train[0][idx].to(device))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, train[1][idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = _auc(net, val)
        if auc > best:
            best, state = auc, copy.deepcopy(net.state_dict())
    net.load_state_dict(state)
    return net


def separation(s: Tensor, y: Tensor) -> dict:
    """ROC-AUC and the ordering check's percentiles for scores ``s`` (higher: unsafe)."""
    s, y = s.double(), y.double()
    safe, unsafe = distance_stats(s[y == 0]), distance_stats(s[y == 1])
    return {
        "roc_auc": float(roc_auc_score(y.numpy(), s.numpy())),
        "safe_up_95": safe["up_95"],
        "unsafe_low_05": unsafe["low_05"],
        "unsafe_below_safe_95": float((s[y == 1] < safe["up_95"]).double().mean()),
        "separated": unsafe["low_05"] > safe["up_95"],
    }


def image_tower_ceiling(
    tower: nn.Module, splits: tuple, config: CeilingConfig | None = None, *, progress: bool = False
) -> dict:
    """Train a copy of ``tower`` (every weight) with a linear head on the labels of ``splits`` =
    (train, validation, test) quadruplet datasets; the test split's :func:`separation` plus the
    settings and the seconds it took. ``tower`` itself is not changed."""
    config = config or CeilingConfig()
    t = time.time()
    train, val, test = (labelled_images(d) for d in splits)
    torch.manual_seed(config.seed)  # the head's initial weights
    net = TowerClassifier(copy.deepcopy(tower)).to(_device(tower))
    for p in net.parameters():
        p.requires_grad_(True)
    fit_binary(
        net,
        train,
        val,
        epochs=config.epochs,
        lr=config.lr,
        batch=config.batch_size,
        seed=config.seed,
        progress=progress,
    )
    record = {**separation(binary_scores(net, test[0]), test[1]), **asdict(config)}
    record["seconds"] = round(time.time() - t, 1)
    logger.info(
        "image tower's supervised ceiling: ROC-AUC %.3f, %.1f%% of unsafe test images below the safe 95%%",
        record["roc_auc"],
        100 * record["unsafe_below_safe_95"],
    )
    return record
