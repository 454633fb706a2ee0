"""The demo's language stage: the text classifiers on unsafe wordings training never showed.

On a world whose test split words unsafety its own way (``synthetic:prose``: every unsafe test
caption is a paraphrase or a euphemism never used in training, :mod:`hysafe.data.prose_world`), or
whenever the demo runs with a Hugging Face text tower (``--text-tower``), this stage scores every
model's own text classifier (HySAC: distance to the root) on the test split, all of it and on the
euphemisms alone, beside two baselines fitted on the training split with C chosen on validation:
the logistic probe on the pretrained CLIP's text embeddings and, with a text tower, the probe on the
text model's own frozen sentence embeddings (what a user would get from the language model alone).
The record is ``language.json``; the report has a paragraph on it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ..data.prose_world import EUPHEMISMS
from ..evaluation.comparison import _labelled
from ..models.classifier import NSFWClassifier
from ..models.embed import embed_dataset
from ..models.hf_text import hf_text_type
from ..models.hf_text_cache import hf_sentence_embeddings
from ..models.safety_model import SafetyModel
from .config import DemoConfig

__all__ = [
    "LANGUAGE_FILE",
    "euphemism_mask",
    "unsafe_wording",
    "unseen_wording_mask",
    "needs_language_stage",
    "text_aucs",
    "classifier_scores",
    "sentence_embeddings",
    "language_stage",
    "language_lines",
]

#: the stage's record in the report folder
LANGUAGE_FILE = "language.json"
_BATCH = 256


def euphemism_mask(rows) -> np.ndarray:
    """Which rows' unsafe caption carries one of the prose world's euphemisms."""
    return np.array([any(e in r.unsafe_text for e in EUPHEMISMS) for r in rows], dtype=bool)


def unsafe_wording(row) -> str:
    """The words of ``row``'s unsafe caption where it differs from its safe caption (the span between
    their common first and last words, lower-cased): how this row words its unsafety."""
    safe, unsafe = (re.findall(r"[\w'-]+", t.lower()) for t in (row.safe_text, row.unsafe_text))
    start = 0
    while start < min(len(safe), len(unsafe)) and safe[start] == unsafe[start]:
        start += 1
    end = 0
    while end < min(len(safe), len(unsafe)) - start and safe[-1 - end] == unsafe[-1 - end]:
        end += 1
    return " ".join(unsafe[start : len(unsafe) - end])


def unseen_wording_mask(train_rows, test_rows) -> np.ndarray:
    """Which test rows word their unsafety (:func:`unsafe_wording`) as no training row does."""
    seen = {unsafe_wording(r) for r in train_rows}
    return np.array([unsafe_wording(r) not in seen for r in test_rows], dtype=bool)


def needs_language_stage(cfg: DemoConfig, test_rows) -> bool:
    """With a text tower, or on a test split that holds euphemisms."""
    return cfg.text_tower is not None or bool(euphemism_mask(test_rows).any())


def _auc(safe: Tensor, unsafe: Tensor) -> float:
    labels = np.r_[np.zeros(len(safe)), np.ones(len(unsafe))]
    return float(roc_auc_score(labels, torch.cat([safe, unsafe]).double().numpy()))


def text_aucs(safe_scores: Tensor, unsafe_scores: Tensor, euphemisms: np.ndarray) -> dict[str, float]:
    """ROC-AUC of unsafety scores: every safe caption against every unsafe one (``all``), against the
    euphemisms only and the explicit wordings only (where there are any)."""
    aucs = {"all": _auc(safe_scores, unsafe_scores)}
    mask = torch.from_numpy(euphemisms)
    if mask.any() and not mask.all():
        aucs["euphemisms"] = _auc(safe_scores, unsafe_scores[mask])
        aucs["explicit"] = _auc(safe_scores, unsafe_scores[~mask])
    return aucs


def sentence_embeddings(clip: SafetyModel, dataset) -> dict[str, Tensor]:
    """``{"T", "T*"}``: the HF text model's own sentence embeddings of the safe and unsafe captions."""
    model = clip.backbone.model
    return {
        key: torch.cat([hf_sentence_embeddings(model, t) for t in tokens.split(_BATCH)]).float().cpu()
        for key, tokens in (("T", dataset.safe_tokens), ("T*", dataset.unsafe_tokens))
    }


def _probe_scores(embed, splits) -> tuple[Tensor, Tensor, float]:
    """A logistic probe fitted on the training split's embeddings (C chosen on validation): its
    scores of the safe and unsafe test captions, and its C."""
    train, val, test = (embed(ds) for ds in splits)
    probe = NSFWClassifier.tuned_logistic_probe(_labelled(train, "T", "T*"), _labelled(val, "T", "T*"))
    return probe.score(test["T"]), probe.score(test["T*"]), probe.params["C"]


def classifier_scores(model: SafetyModel, test) -> tuple[Tensor, Tensor]:
    """``model``'s own text classifier's unsafety scores of ``test``'s safe and unsafe captions."""
    emb = embed_dataset(model, test)
    clf = model.nsfw_classifier("text")
    return clf.score(emb["T"]).float(), clf.score(emb["T*"]).float()


def language_stage(cfg: DemoConfig, models: dict[str, SafetyModel], splits: tuple, out: Path) -> dict | None:
    """Every model's text ROC-AUC on the test split (all, euphemisms, explicit wordings) and the
    probes' beside them, written to ``out / LANGUAGE_FILE``; ``None`` where the stage does not apply."""
    (out / LANGUAGE_FILE).unlink(missing_ok=True)  # a record of an earlier run in this folder
    test = splits[2]
    if not needs_language_stage(cfg, test.rows):
        return None
    t, euph = time.time(), euphemism_mask(test.rows)
    unseen = int(unseen_wording_mask(splits[0].rows, test.rows).sum())
    rows = {name: text_aucs(*classifier_scores(m, test), euph) for name, m in models.items()}
    safe, unsafe, c = _probe_scores(lambda ds: embed_dataset(models["CLIP"], ds), splits)
    rows["CLIP logistic probe"] = {**text_aucs(safe, unsafe, euph), "C": c}
    if hf_text_type(models["CLIP"].backbone.model) is not None:
        safe, unsafe, c = _probe_scores(lambda ds: sentence_embeddings(models["CLIP"], ds), splits)
        rows["text-model probe"] = {**text_aucs(safe, unsafe, euph), "C": c}
    record = {
        "text_tower": cfg.text_tower,
        "test_captions": {"unsafe": len(test), "euphemisms": int(euph.sum()), "unseen_wordings": unseen},
        "text_roc_auc": rows,
        "seconds": round(time.time() - t, 1),
    }
    (out / LANGUAGE_FILE).write_text(json.dumps(record, indent=2))
    return record


#: the report's names of ``LANGUAGE_FILE``'s rows (the file keeps the short keys)
ROW_LABELS = {
    "HySAC": "HySAC (distance to the root)",
    "CLIP": "CLIP (concept prompts)",
    "Safe-CLIP": "Safe-CLIP (concept prompts)",
    "SafeR-CLIP": "SafeR-CLIP (concept prompts)",
    "CLIP logistic probe": "probe on the pretrained CLIP's text embeddings",
    "text-model probe": "probe on the text model's own frozen sentence embeddings",
}


def language_lines(out: Path) -> list[str]:
    """The report's paragraph and table on unseen wordings, where this run measured them."""
    path = out / LANGUAGE_FILE
    if not path.is_file():
        return []
    r = json.loads(path.read_text())
    rows = r["text_roc_auc"]
    cols = [c for c in ("all", "explicit", "euphemisms") if any(c in v for v in rows.values())]
    tower = f"the text tower `{r['text_tower']}`" if r["text_tower"] else "the model's own text tower"
    captions = r["test_captions"]
    lines = [
        *_language_heading(captions),
        f"Text NSFW ROC-AUC with {tower}: each model's own classifier (HySAC: distance to the root), and "
        "logistic probes fitted on the training split (C chosen on validation) on the pretrained CLIP's "
        "text embeddings and, with a Hugging Face text tower, on that model's own frozen sentence "
        f"embeddings. {captions['euphemisms']} of the {captions['unsafe']} unsafe "
        f"test captions are euphemisms (`{LANGUAGE_FILE}`).",
        "",
        "| text classifier | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, v in rows.items():
        cells = " | ".join(f"{v[c]:.3f}" if c in v else "-" for c in cols)
        lines.append(f"| {ROW_LABELS.get(name, name)} (`{name}`) | {cells} |")
    return [*lines, ""]


def _language_heading(captions: dict) -> list[str]:
    """The section's heading: unseen wordings only where the test split has them (a record without the
    count, written before hysafe counted them, claims none)."""
    unseen = captions.get("unseen_wordings")
    if unseen is None:
        return ["## Text NSFW classification (test split)", ""]
    if unseen:
        return [
            "## Unsafe wordings never seen in training (test split)",
            "",
            f"{unseen} of the {captions['unsafe']} unsafe test captions word their unsafety (where they "
            "differ from their safe caption) in a way no training caption does.",
            "",
        ]
    return [
        "## Text NSFW classification (test split)",
        "",
        "Every unsafe test caption words its unsafety as some training caption does: these are not "
        "unseen wordings (for those, `--data synthetic:prose`).",
        "",
    ]
