"""Retrieval recall from similarity scores (brute force; see :mod:`hysafe.index.retrieval` for faiss)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from hysafe.geometry import Space

__all__ = ["recall_from_ranking", "recall_at_k", "ranked_indices", "distance_stats"]


def ranked_indices(queries: Tensor, gallery: Tensor, space: Space, k: int, *, chunk: int = 1024) -> Tensor:
    """Indices ``(Q, k)`` of the ``k`` most similar gallery items per query, best first."""
    k = min(k, gallery.shape[0])
    out = [
        torch.topk(space.similarity(queries[i : i + chunk], gallery), k, dim=1).indices
        for i in range(0, len(queries), chunk)
    ]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def recall_from_ranking(ranking: Tensor, positives: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Recall@k in percent from a ranking ``(Q, K)`` of gallery indices and the positives.

    ``positives`` is ``(Q,)`` (one correct gallery index per query) or a boolean ``(Q, G)`` mask
    (several). A query counts as a hit at k when any positive is among its first k results.
    """
    if positives.dtype == torch.bool:
        hits = torch.gather(positives, 1, ranking)
    else:
        hits = ranking == positives.view(-1, 1)
    if max(ks) > ranking.shape[1]:
        raise ValueError(f"ranking has {ranking.shape[1]} columns, cannot score recall@{max(ks)}")
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def recall_at_k(
    queries: Tensor, gallery: Tensor, positives: Tensor, space: Space, ks: Sequence[int] = (1, 10, 20)
) -> dict[int, float]:
    """Recall@k (percent) of ``queries`` against ``gallery`` under ``space.similarity``."""
    ranking = ranked_indices(queries, gallery, space, max(ks))
    clipped = recall_from_ranking(ranking, positives, sorted({min(k, ranking.shape[1]) for k in ks}))
    return {k: clipped[min(k, ranking.shape[1])] for k in ks}  # k beyond the gallery: all of it


def distance_stats(d: Tensor) -> dict[str, float]:
    """Mean, 5th and 95th percentile of distances to the root (the statistics of a safety bound);
    any score where higher means further from safe."""
    return {
        "avg": d.mean().item(),
        "low_05": torch.quantile(d, 0.05).item(),
        "up_95": torch.quantile(d, 0.95).item(),
    }
