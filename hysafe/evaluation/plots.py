"""Embedding-distribution and evaluation plots (matplotlib; PNG or SVG by the file suffix).

Every function takes embeddings (dicts of ``T``, ``V``, ``T*``, ``V*`` tensors) or evaluation
results, draws one labelled figure, saves it when ``path`` is given and returns the figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from hysafe.geometry import Space  # noqa: E402
from hysafe.geometry import lorentz as L  # noqa: E402

from ..models.traversal import traversal_path  # noqa: E402
from ..populations import POPULATIONS, SAFE_IMAGE, SAFE_TEXT, UNSAFE_IMAGE, UNSAFE_TEXT  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "plot_root_distances",
    "plot_poincare_disk",
    "plot_traversal",
    "plot_roc_curves",
    "plot_recall_bars",
]

#: population key -> colour
COLOURS = {
    SAFE_TEXT.key: "#1f77b4",
    SAFE_IMAGE.key: "#2ca02c",
    UNSAFE_TEXT.key: "#ff7f0e",
    UNSAFE_IMAGE.key: "#d62728",
}


def _save(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")
        logger.info("saved plot %s", path)
    return fig


def plot_root_distances(
    models: dict[str, tuple[Space, dict[str, Tensor]]], path=None, *, relative: bool = True
):
    """Distance-to-root distributions of the four populations, one panel per model.

    With ``relative=True`` distances are divided by the model's mean over all populations, so
    CLIP and Safe-CLIP (Euclidean norms) and HySAC (geodesic distances) share comparable axes.
    """
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False)
    for ax, (name, (space, emb)) in zip(axes[0], models.items(), strict=True):
        dists = {p: space.dist_to_root(emb[p.key]).numpy() for p in POPULATIONS if p.key in emb}
        scale = np.concatenate(list(dists.values())).mean() if relative else 1.0
        lo = min(d.min() for d in dists.values()) / scale
        hi = max(d.max() for d in dists.values()) / scale
        bins = np.linspace(lo, hi, 50)
        for p, d in dists.items():
            ax.hist(
                d / scale,
                bins=bins,
                alpha=0.55,
                color=COLOURS[p.key],
                label=f"{p.label} (mean {d.mean() / scale:.2f})",
                density=True,
            )
        ax.set_title(f"{name}: distance to root ({space.root_distance_name})")
        ax.set_xlabel("distance to root" + (" / model mean" if relative else ""))
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _disk_coordinates(points: Tensor, basis: Tensor) -> np.ndarray:
    """2-D view of unit-ball points: direction from a PCA basis, radius kept (so the distance to
    the root reads off the radius)."""
    proj = points @ basis
    radius = points.norm(dim=-1, keepdim=True)
    return (torch.nn.functional.normalize(proj, dim=-1) * radius).numpy()


def _pca_basis(x: Tensor) -> Tensor:
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return v[:2].T


def plot_poincare_disk(
    space: Space, emb: dict[str, Tensor], path=None, *, max_points: int = 400, title: str = "HySAC embeddings"
):
    """Embeddings in the Poincare disk: radius = the point's true position along its geodesic from
    the root (``|p| = tanh(sqrt(c) d / 2)``), angle from a PCA of the ball coordinates."""
    if not space.hyperbolic:
        raise ValueError("the Poincare disk view needs a hyperbolic (Lorentz-space) model such as HySAC")
    ball = {
        p: L.to_poincare(emb[p.key][:max_points].float(), curv=space.curv)
        for p in POPULATIONS
        if p.key in emb
    }
    basis = _pca_basis(torch.cat(list(ball.values())))
    rmax = max(b.norm(dim=-1).max().item() for b in ball.values())
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for p, b in ball.items():
        xy = _disk_coordinates(b, basis) / rmax
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.6, color=COLOURS[p.key], label=p.label)
    ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="gray", lw=0.8))
    ax.scatter([0], [0], marker="*", s=120, color="black", label="root")
    ax.set_aspect("equal")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"{title}\n(Poincare disk, radius scaled by {1 / rmax:.1f}x)")
    ax.set_xlabel("PCA direction 1")
    ax.set_ylabel("PCA direction 2")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_traversal(
    space: Space,
    queries: Tensor,
    safe_gallery: Tensor,
    unsafe_gallery: Tensor,
    path=None,
    *,
    tau: float,
    steps: int = 12,
    labels: Sequence[str] | None = None,
):
    """Root-directed traversal of unsafe queries: distance to the root along each path (x) and
    which gallery item is nearest at each step (marker: green = safe, red = unsafe)."""
    gallery = torch.cat([safe_gallery, unsafe_gallery])
    n_safe = safe_gallery.shape[0]
    paths = traversal_path(queries, space, steps=steps, tau=0.0)  # to the root, tau marked
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(queries) + 1.6))
    for qi in range(queries.shape[0]):
        pts = paths[:, qi]
        d = space.dist_to_root(pts).numpy()
        nearest = torch.argmax(space.similarity(pts, gallery), dim=1).numpy()
        safe = nearest < n_safe
        ax.plot(d, np.full_like(d, qi), color="lightgray", zorder=1)
        ax.scatter(
            d[safe],
            np.full(safe.sum(), qi),
            color="#2ca02c",
            s=30,
            zorder=2,
            label="nearest item safe" if qi == 0 else None,
        )
        ax.scatter(
            d[~safe],
            np.full((~safe).sum(), qi),
            color="#d62728",
            s=30,
            zorder=2,
            label="nearest item unsafe" if qi == 0 else None,
        )
    ax.axvline(tau, color="black", ls="--", lw=1, label=f"tau = {tau:.3f}")
    ax.set_yticks(range(queries.shape[0]))
    ax.set_yticklabels(
        labels if labels is not None else [f"query {i}" for i in range(queries.shape[0])], fontsize=7
    )
    ax.set_xlabel("distance to root along the traversal path (query at the right, root at 0)")
    ax.set_title("Root-directed traversal of unsafe text queries: nearest image along the way")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path=None,
    *,
    title: str = "NSFW classifiers (test split)",
):
    """ROC curves; ``curves[name] = (scores, labels)`` with label 1 = unsafe."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    ax.set_xlabel("false-positive rate (safe flagged unsafe)")
    ax.set_ylabel("true-positive rate (unsafe caught)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_recall_bars(comparison, path=None, *, metric: str = "R@1", settings: Sequence[str] | None = None):
    """Grouped bars of ``metric`` per retrieval setting for every model (and HySAC + traversal)."""
    from .comparison import SETTINGS

    settings = list(settings or SETTINGS)
    series = {}
    for model, rows in comparison.retrieval.items():
        for trav in (False, True):
            vals = [
                next((r[metric] for r in rows if r["setting"] == s and r["traversal"] == trav), None)
                for s in settings
            ]
            if any(v is not None for v in vals):
                series[f"{model}{' + traversal' if trav else ''}"] = [v or 0.0 for v in vals]
    fig, ax = plt.subplots(figsize=(1.9 * len(settings) + 2, 4.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(settings))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(settings, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"Retrieval {metric} per setting (unsafe-query settings: a hit is the safe counterpart)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
