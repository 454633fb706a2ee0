"""Root-distance ordering: a hinge on the distance to the root of paired embeddings (hysafe's option).

HySAC's slides state the order the entailment cones are meant to induce, per quadruplet: safe text nearer the
root than the safe image, that nearer than the unsafe text, that nearer than the unsafe image. Cones induce
it only weakly near the root, where every cone is a half-space; :func:`root_order_loss` asks for it
directly. The hinge is on the *log* of the distance, so it is invariant to a global rescaling (like every
check it serves: ROC-AUC of the distance, the order of the population means and quantiles) and gives no
reason to grow or to shrink: with the papers' absolute cone radius the embeddings drift toward the root
during fine-tuning (geodesic distances 1.1-1.3 after one epoch, 0.26-0.28 after thirty on a validation
world), and a hinge with a margin in distance units (tried first) was then as wide as the whole spread and
left the order unmet. Off in the published objective (``hysac_objective(order_weight=0)``).

``pairs="batch"`` compares every row of ``x`` with every row of ``y`` instead of row ``i`` with row
``i``: the hinge surrogate of the ROC-AUC between the two populations (and of their tails), which the
safety checks judge, where the row-wise hinge orders each quadruplet only
(``hysac_objective(rank_weight=...)``), and within each modality, T against T* and V against V*
(``hysac_objective(safety_rank_weight=...)``).

:func:`root_gap_loss` is the distance-to-root counterpart of a cosine anchor: the mean absolute gap between
the log distances of two rows of embeddings of the same inputs (``hysac_objective(root_anchor=...)``: a
caption's text embedding against the one its language model gives before LoRA).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hysafe.geometry import lorentz

__all__ = ["ORDER_PAIRS", "root_order_loss", "root_gap_loss"]


#: distances below this are clamped before the log (a point at the root)
MIN_DISTANCE = 1e-6

#: which (x, y) rows a root-order hinge compares: row i with row i, or every row with every row
ORDER_PAIRS = ("rows", "batch")


def root_order_loss(
    x: Tensor, y: Tensor, *, curv: Tensor | float, margin: float, pairs: str = "rows"
) -> Tensor:
    """ "``x`` nearer the root than ``y``": ``mean(max(0, margin + log d0(x_i) - log d0(y_j)))`` over
    the pairs ``pairs`` names (``"rows"``: ``j = i``; ``"batch"``: every ``i`` with every ``j``), ``d0``
    the geodesic distance to the root of the Lorentz model of curvature ``-curv`` (``margin`` 0.1:
    ``y`` at least ~10% farther out than ``x``)."""
    if pairs not in ORDER_PAIRS:
        raise ValueError(f"root order pairs must be one of {ORDER_PAIRS}, got {pairs!r}")
    if pairs == "rows" and x.shape != y.shape:
        raise ValueError(f"root order pairs rows: got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"root order margin must be >= 0, got {margin}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
        raise ValueError(f"root order needs points on both sides, got shapes {shapes}")
    near, far = _log_distance(x, curv), _log_distance(y, curv)
    gap = near - far if pairs == "rows" else near[:, None] - far[None, :]
    return torch.relu(margin + gap).mean()


def root_gap_loss(x: Tensor, y: Tensor, *, curv: Tensor | float) -> Tensor:
    """``mean(|log d0(x_i) - log d0(y_i)|)``: how far row ``i`` of ``x`` is from lying as far from the root
    as row ``i`` of ``y`` (``d0`` as in :func:`root_order_loss`; the log: a relative gap, like the checks)."""
    if x.shape != y.shape or x.shape[0] == 0:
        shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
        raise ValueError(f"root gap needs two non-empty rows of the same shape, got {shapes}")
    return (_log_distance(x, curv) - _log_distance(y, curv)).abs().mean()


def _log_distance(x: Tensor, curv: Tensor | float) -> Tensor:
    return torch.log(lorentz.dist_to_root(x, curv=curv).clamp_min(MIN_DISTANCE))
