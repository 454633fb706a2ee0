"""Comparative evaluation: CLIP vs Safe-CLIP vs HySAC on the same test split.

Retrieval settings (ViSU protocol; row ``i`` of each population is one quadruplet):

==================  =========  ==================  =========================================
setting             queries    gallery             a hit is
==================  =========  ==================  =========================================
``T->V``            T          V                   V_i
``V->T``            V          T                   T_i
``T*->V u V*``      T*         V and V*            V_i (the safe counterpart: higher = safer)
``V*->T u T*``      V*         T and T*            T_i
``T*->V*``          T*         V*                  V*_i (awareness: unsafe stays retrievable)
``V*->T*``          V*         T*                  T*_i
==================  =========  ==================  =========================================

For the mixed galleries the share of top-1 results that are unsafe is reported too. Every setting
is also run with root-directed traversal of the queries (``+trav``) for models in a hyperbolic
space with safety bounds, ``tau`` from the rule given (default :data:`~hysafe.models.traversal.DEFAULT_TAU`)
applied to the population the query is steered to (:func:`~hysafe.populations.steer_target`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..data.dataset import QuadrupletDataset
from ..index.retrieval import RetrievalIndex
from ..models.classifier import NSFWClassifier
from ..models.embed import embed_dataset
from ..models.safety_model import SafetyModel
from ..models.traversal import DEFAULT_TAU
from ..populations import MODALITIES, modality_pair
from .metrics import recall_from_ranking

logger = logging.getLogger(__name__)

__all__ = ["SETTINGS", "retrieval_report", "classifier_report", "Comparison", "compare_models"]

#: setting -> (query population, gallery populations, index of the positive population in the gallery)
SETTINGS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "T->V": ("T", ("V",), 0),
    "V->T": ("V", ("T",), 0),
    "T*->V u V*": ("T*", ("V", "V*"), 0),
    "V*->T u T*": ("V*", ("T", "T*"), 0),
    "T*->V*": ("T*", ("V*",), 0),
    "V*->T*": ("V*", ("T*",), 0),
}


def retrieval_report(
    model: SafetyModel,
    emb: dict[str, Tensor],
    *,
    ks: Sequence[int] = (1, 10, 20),
    traversal: str | float | None = DEFAULT_TAU,
) -> list[dict]:
    """One row per (setting, traversal on/off): recall@k and, for mixed galleries, % unsafe at top-1.

    Traversal rows need a hyperbolic space and safety bounds; ``traversal=None`` turns them off."""
    rows = []
    n = emb["T"].shape[0]
    traverses = traversal is not None and model.space.hyperbolic and model.bounds is not None
    for setting, (query, gallery_pops, positive) in SETTINGS.items():
        if query not in emb or any(p not in emb for p in gallery_pops):
            continue
        gallery = torch.cat([emb[p] for p in gallery_pops])
        index = RetrievalIndex(model.space, gallery.shape[1])
        index.add(gallery)
        taus = [None, model.tau(traversal, query)] if traverses else [None]
        for t in taus:
            _, ids = index.search(emb[query], max(ks), tau=t)
            row = {"setting": setting, "traversal": t is not None, "tau": t}
            row.update(
                {f"R@{k}": v for k, v in recall_from_ranking(ids, torch.arange(n) + positive * n, ks).items()}
            )
            if len(gallery_pops) > 1:
                row["unsafe@1 %"] = 100.0 * (ids[:, 0] >= n).float().mean().item()
            rows.append(row)
    return rows


def _labelled(emb: dict[str, Tensor], safe: str, unsafe: str) -> tuple[Tensor, Tensor]:
    """The safe and unsafe embeddings of one modality stacked, with labels 0 (safe) / 1 (unsafe)."""
    labels = torch.cat([torch.zeros(len(emb[safe])), torch.ones(len(emb[unsafe]))])
    return torch.cat([emb[safe], emb[unsafe]]), labels


def classifier_report(
    model: SafetyModel,
    test: dict[str, Tensor],
    val: dict[str, Tensor],
    *,
    train: dict[str, Tensor] | None = None,
    rule: str = "accuracy",
) -> list[dict]:
    """NSFW classification of texts and images (thresholds fitted on validation embeddings).

    HySAC: distance from the root. Euclidean models: concept-prompt similarity and, given ``train``
    embeddings, a logistic probe fitted on them with its C chosen on validation
    (:meth:`~hysafe.models.classifier.NSFWClassifier.tuned_logistic_probe`)."""
    rows = []
    for modality in MODALITIES:
        safe, unsafe = (p.key for p in modality_pair(modality))
        if safe not in test:
            continue
        xv, yv = _labelled(val, safe, unsafe)
        xt, yt = _labelled(test, safe, unsafe)
        classifiers = [model.nsfw_classifier(modality)]
        if not model.space.hyperbolic and train is not None:  # the stronger Euclidean baseline
            probe = NSFWClassifier.tuned_logistic_probe(_labelled(train, safe, unsafe), (xv, yv))
            classifiers.append(probe)
        for clf in classifiers:
            if clf.name != "logistic-probe":
                clf.fit_threshold(xv, yv, rule=rule)
            extra = {"C": clf.params["C"]} if "C" in clf.params else {}
            rows.append({"modality": modality, "classifier": clf.name, **extra, **clf.evaluate(xt, yt)})
    return rows


@dataclass
class Comparison:
    """Per-model retrieval and classifier rows, with Markdown/CSV/JSON renderings."""

    retrieval: dict[str, list[dict]] = field(default_factory=dict)
    classification: dict[str, list[dict]] = field(default_factory=dict)
    ks: tuple[int, ...] = (1, 10, 20)

    def retrieval_rows(self) -> list[dict]:
        return [{"model": m, **r} for m, rows in self.retrieval.items() for r in rows]

    def classification_rows(self) -> list[dict]:
        return [
            {"model": m, **{k: v for k, v in r.items() if k != "confusion"}}
            for m, rows in self.classification.items()
            for r in rows
        ]

    def value(self, model: str, setting: str, metric: str = "R@1", traversal: bool = False) -> float:
        for r in self.retrieval[model]:
            if r["setting"] == setting and r["traversal"] == traversal:
                return r[metric]
        raise KeyError(f"no {setting} (traversal={traversal}) row for {model}")

    def to_markdown(self) -> str:
        settings = list(SETTINGS)
        head = "| model | " + " | ".join(settings) + " |"
        lines = [
            f"Retrieval recall@{'/'.join(map(str, self.ks))} (%); for mixed "
            f"galleries also the unsafe share of top-1 results.",
            "",
            head,
            "|" + "---|" * (len(settings) + 1),
        ]
        for model, rows in self.retrieval.items():
            for trav in (False, True):
                cells, any_row = [], False
                for s in settings:
                    r = next((r for r in rows if r["setting"] == s and r["traversal"] == trav), None)
                    if r is None:
                        cells.append("-")
                        continue
                    any_row = True
                    cell = "/".join(f"{r[f'R@{k}']:.1f}" for k in self.ks)
                    if "unsafe@1 %" in r:
                        cell += f" (unsafe@1 {r['unsafe@1 %']:.1f})"
                    cells.append(cell)
                if any_row:
                    lines.append(f"| {model}{' + traversal' if trav else ''} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "NSFW classification on the test split (threshold fitted on validation for max accuracy).",
            "",
        ]
        lines += [
            "| model | modality | classifier | Acc | FPR | FNR | ROC-AUC | PR-AUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.classification_rows():
            lines.append(
                f"| {r['model']} | {r['modality']} | {r['classifier']} | "
                f"{r['accuracy']:.1f} | {r['fpr']:.1f} | {r['fnr']:.1f} | "
                f"{r['roc_auc']:.3f} | {r['pr_auc']:.3f} |"
            )
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        rows = self.retrieval_rows()
        lead = ["model", "setting", "traversal", "tau"]
        keys = lead + sorted({k for r in rows for k in r} - set(lead))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def to_json(self) -> str:
        return json.dumps(
            {"retrieval": self.retrieval, "classification": self.classification, "ks": list(self.ks)},
            indent=2,
        )

    def save(self, folder: str | Path) -> dict[str, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "md": folder / "comparison.md",
            "csv": folder / "comparison.csv",
            "json": folder / "metrics.json",
        }
        paths["md"].write_text(self.to_markdown())
        paths["csv"].write_text(self.to_csv())
        paths["json"].write_text(self.to_json())
        return paths


def compare_models(
    models: dict[str, SafetyModel],
    test: QuadrupletDataset,
    val: QuadrupletDataset,
    *,
    ks: Sequence[int] = (1, 10, 20),
    traversal: str | float | None = DEFAULT_TAU,
    batch_size: int = 256,
    train: QuadrupletDataset | None = None,
) -> Comparison:
    """Evaluate every model on the same test split (thresholds fitted on ``val``).

    ``train``: the training split, on which the Euclidean models' logistic probes are fitted (their
    C chosen on ``val``); without it they have no probe row.

    ``traversal``: a tau rule (:func:`~hysafe.models.traversal.resolve_tau`: ``"avg"``, ``"up_95"``,
    ``"paper"``, ``"V.avg"``, ...), a number, or ``None`` (off). Traversal rows are produced only
    for models with safety bounds in a hyperbolic space.
    """
    if len(test) < max(ks):
        raise ValueError(
            f"the test split has {len(test)} quadruplets, too few to score recall@{max(ks)}: give at "
            f"least {max(ks)} test rows"
        )
    out = Comparison(ks=tuple(ks))
    for name, model in models.items():
        emb_test = embed_dataset(model, test, batch_size=batch_size)
        emb_val = embed_dataset(model, val, batch_size=batch_size)
        emb_train = (
            embed_dataset(model, train, batch_size=batch_size)
            if train is not None and not model.space.hyperbolic
            else None
        )
        out.retrieval[name] = retrieval_report(model, emb_test, ks=ks, traversal=traversal)
        out.classification[name] = classifier_report(model, emb_test, emb_val, train=emb_train)
        logger.info("evaluated %s", name)
    return out
