"""NSFW classification from embeddings: HySAC's distance from the root, and Euclidean baselines.

Every classifier is a *scorer* (embeddings -> scores, higher = more likely unsafe) plus a
threshold chosen by a stated rule on labelled data:

* ``rule="accuracy"``: the threshold that maximises accuracy (ties: the smallest such threshold);
* ``rule="fpr"``: the smallest threshold whose false-positive rate is at most ``target_fpr``.

Scorers: :meth:`NSFWClassifier.root_distance` (HySAC), :meth:`NSFWClassifier.concept_similarity`
(CLIP similarity to NSFW concept prompts, Stable-Diffusion-safety-checker style) and
:meth:`NSFWClassifier.logistic_probe` (scikit-learn logistic regression on embeddings).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn import metrics as skm
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from hysafe.geometry import Space

from ..data.categories import CATEGORIES
from ..populations import modality_pair

logger = logging.getLogger(__name__)

__all__ = [
    "NSFWClassifier",
    "classification_metrics",
    "choose_threshold",
    "threshold_from_bounds",
    "fit_logistic",
    "CONCEPT_TEMPLATE",
    "PROBE_CS",
]

CONCEPT_TEMPLATE = "a picture showing {}"
#: the inverse regularisation strengths a logistic probe's C is chosen from, on validation ROC-AUC
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)


def choose_threshold(scores, labels, *, rule: str = "accuracy", target_fpr: float = 0.05) -> float:
    """Threshold on ``scores`` (predict unsafe when ``score >= threshold``) by ``rule``."""
    s, y = _np(scores).astype(np.float64), _np(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("fitting a threshold needs both safe (0) and unsafe (1) labels")
    candidates = np.unique(np.concatenate([s, [np.inf]]))
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    # for threshold t: predicted positive = s >= t; counts via searchsorted on the sorted scores
    first = np.searchsorted(s_sorted, candidates, side="left")
    pos_below = np.concatenate([[0], np.cumsum(y_sorted)])[first]  # unsafe predicted safe
    neg_below = first - pos_below  # safe predicted safe
    n_pos, n_neg = y.sum(), (~y).sum()
    tp, fp = n_pos - pos_below, n_neg - neg_below
    if rule == "accuracy":
        acc = (tp + neg_below) / len(y)
        return float(candidates[int(np.argmax(acc))])
    if rule == "fpr":
        ok = np.nonzero(fp / n_neg <= target_fpr)[0]
        return float(candidates[ok[0]])
    raise ValueError(f"unknown threshold rule {rule!r}; use 'accuracy' or 'fpr'")


def classification_metrics(scores, labels, threshold: float) -> dict:
    """Accuracy, FPR, FNR (percent), ROC-AUC, PR-AUC and the confusion matrix ``[[TN, FP], [FN, TP]]``."""
    s, y = _np(scores), _np(labels).astype(int)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "accuracy": 100.0 * (tp + tn) / len(y),
        "fpr": 100.0 * fp / max(1, fp + tn),
        "fnr": 100.0 * fn / max(1, fn + tp),
        "roc_auc": float(skm.roc_auc_score(y, s)),
        "pr_auc": float(skm.average_precision_score(y, s)),
        "threshold": float(threshold),
        "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


@dataclass
class NSFWClassifier:
    """``scorer`` maps embeddings ``(N, D)`` to scores ``(N,)``; higher means more likely unsafe."""

    scorer: Callable[[Tensor], Tensor]
    name: str = "classifier"
    threshold: float | None = None
    params: dict = field(default_factory=dict)  # how it was fitted (a probe's C), reported with its rows

    def score(self, embeddings: Tensor) -> Tensor:
        return self.scorer(embeddings)

    def fit_threshold(
        self, embeddings: Tensor, labels, *, rule: str = "accuracy", target_fpr: float = 0.05
    ) -> float:
        self.threshold = choose_threshold(self.score(embeddings), labels, rule=rule, target_fpr=target_fpr)
        return self.threshold

    def predict(self, embeddings: Tensor) -> Tensor:
        """Boolean ``(N,)``: True = unsafe."""
        if self.threshold is None:
            raise ValueError(f"{self.name}: no threshold yet; call fit_threshold() or set threshold")
        return self.score(embeddings) >= self.threshold

    def evaluate(self, embeddings: Tensor, labels) -> dict:
        if self.threshold is None:
            raise ValueError(f"{self.name}: no threshold yet; call fit_threshold() or set threshold")
        return classification_metrics(self.score(embeddings), labels, self.threshold)

    # ------------------------------------------------------------------ scorers
    @classmethod
    def root_distance(cls, space: Space, threshold: float | None = None) -> "NSFWClassifier":
        """HySAC: the distance from the root is the unsafety score."""
        return cls(scorer=lambda e: space.dist_to_root(e), name="root-distance", threshold=threshold)

    @classmethod
    def concept_similarity(
        cls, model, concepts: Sequence[str] = CATEGORIES, template: str = CONCEPT_TEMPLATE
    ) -> "NSFWClassifier":
        """Highest similarity (in the model's space) to any NSFW concept prompt."""
        with torch.no_grad():
            concept_emb = (
                model.encode_text(model.tokenize([template.format(c) for c in concepts])).float().cpu()
            )
        space = model.space
        return cls(
            scorer=lambda e: space.similarity(e.float().cpu(), concept_emb).max(dim=1).values,
            name="concept-similarity",
        )

    @classmethod
    def logistic_probe(cls, embeddings: Tensor, labels, *, C: float = 1.0, seed: int = 0) -> "NSFWClassifier":
        """A logistic-regression probe trained on labelled embeddings (L2-normalised), solved to its
        optimum (:func:`fit_logistic`), so that its scores depend on the embeddings alone. ``params``: its
        ``C`` and ``direction``, the weights it reads the unit embeddings with."""

        def prep(e):
            return _np(torch.nn.functional.normalize(e.float(), dim=-1))

        clf = fit_logistic(prep(embeddings), _np(labels).astype(int), C=C, seed=seed)
        return cls(
            scorer=lambda e: torch.from_numpy(clf.decision_function(prep(e))),
            name="logistic-probe",
            threshold=0.0,
            params={"C": C, "direction": clf.coef_[0].copy()},
        )

    @classmethod
    def tuned_logistic_probe(
        cls, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], *, Cs: Sequence[float] = PROBE_CS
    ) -> "NSFWClassifier":
        """The :meth:`logistic_probe` fitted on ``train`` (embeddings, labels) whose C, among ``Cs``,
        has the highest ROC-AUC on ``val`` (ties: the smaller C). The validation ROC-AUC of each C is
        kept in ``params``; no test data is read."""
        if not Cs:
            raise ValueError("tuned_logistic_probe needs at least one C")
        Cs, probes, aucs = sorted(Cs), [], []
        for C in Cs:
            probe = cls.logistic_probe(*train, C=C)
            probes.append(probe)
            aucs.append(float(skm.roc_auc_score(_np(val[1]).astype(int), _np(probe.score(val[0])))))
        best = int(np.argmax(aucs))
        probes[best].params["val_roc_auc"] = dict(zip(Cs, aucs, strict=True))
        return probes[best]


#: the probe's Newton solver stops when the largest gradient entry is below this
PROBE_TOL = 1e-8


def fit_logistic(x: np.ndarray, y: np.ndarray, *, C: float, seed: int = 0):
    """scikit-learn's L2 logistic regression solved to its optimum with Newton steps.

    The objective is strictly convex, so its optimum is a continuous function of the data. lbfgs,
    stopped at scikit-learn's default tolerance, is not: on near-separable embeddings (a large C) it
    stops wherever its path reaches the tolerance, and float noise of 1e-7 in the inputs (the same
    weights run in another process) moved a probe's test ROC-AUC by 0.002. Newton-Cholesky reaches
    the optimum in a few steps for the embeddings' few hundred dimensions."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="newton-cholesky", tol=PROBE_TOL, max_iter=200, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("the logistic probe (C=%g) did not converge in %d Newton steps", C, clf.max_iter)
    return clf


def threshold_from_bounds(bounds: dict, modality: str) -> float:
    """A distance-to-root threshold from stored bounds with no labelled data at hand: the midpoint
    between the mean distance of the safe and the unsafe population of that modality."""
    safe, unsafe = (p.bound for p in modality_pair(modality))
    if not bounds or safe not in bounds or unsafe not in bounds:
        raise ValueError(
            f"the checkpoint has no {safe}/{unsafe} bounds: pass --threshold or fit one on labelled data"
        )
    value = 0.5 * (bounds[safe]["avg"] + bounds[unsafe]["avg"])
    if not np.isfinite(value):
        raise ValueError(
            f"the checkpoint's {safe}/{unsafe} bounds are not finite ({value}): its bounds are corrupt"
        )
    return value
