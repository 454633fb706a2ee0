"""How much of the frozen language model's safety signal a 64-d embedding keeps: logistic probes on the
**validation** split of a ``synthetic:prose`` demo run (the test split is never read).

Probes (the project's logistic probe, ``NSFWClassifier.tuned_logistic_probe``, as in the demo's report),
each fitted on the training split, C chosen on one half of the validation split (seeded) and ROC-AUC
reported on the other half:

* the text model's own frozen sentence embeddings (384-d for all-MiniLM-L6-v2);
* their first 64 principal components (PCA fitted on the training split): the best a linear 64-d view
  of them keeps in variance;
* the pretrained CLIP's 64-d text embeddings (the demo's ``clip-pretrained.safetensors``, the CLIP every
  fine-tune starts from).

    python bench/language_probe_width.py --run runs/language-r2/minilm --text-tower "$minilm" \\
        --out bench/results/language/probe_width.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hysafe.data import QuadrupletDataset  # noqa: E402
from hysafe.demo.language import sentence_embeddings  # noqa: E402
from hysafe.evaluation.comparison import _labelled  # noqa: E402
from hysafe.models.classifier import NSFWClassifier  # noqa: E402
from hysafe.models.embed import embed_dataset  # noqa: E402
from hysafe.models.safety_model import create_model  # noqa: E402


def labelled(emb: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Safe captions (0) then unsafe ones (1), as every probe of the project takes them."""
    x, y = _labelled(emb, "T", "T*")
    return x.float(), y


def halves(n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks over ``labelled`` rows: half A and half B of the quadruplets (a row's two captions stay
    together)."""
    a = np.zeros(n_pairs, bool)
    a[np.random.default_rng(seed).permutation(n_pairs)[: n_pairs // 2]] = True
    return np.r_[a, a], np.r_[~a, ~a]


def probe(train: tuple, val: tuple, a: np.ndarray, b: np.ndarray) -> dict:
    """The project's probe (:meth:`NSFWClassifier.tuned_logistic_probe`: fitted on train, C chosen on
    validation half A), scored on half B."""
    x, y = val
    clf = NSFWClassifier.tuned_logistic_probe(train, (x[a], y[a]))
    auc_b = roc_auc_score(y[b].numpy(), clf.score(x[b]).numpy())
    return {
        "C": clf.params["C"],
        "val_half_A_auc": round(clf.params["val_roc_auc"][clf.params["C"]], 4),
        "val_half_B_auc": round(float(auc_b), 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a synthetic:prose demo report folder with a text tower")
    p.add_argument("--text-tower", required=True, help="the run's Hugging Face text model folder")
    p.add_argument("--out", required=True, help="JSON record")
    args = p.parse_args(argv)
    run = Path(args.run)
    base = str(run / "checkpoints" / "clip-pretrained.safetensors")
    clip = create_model("clip", f"hysafe-tiny+hf:{args.text_tower}", base, lora=None).eval()
    manifest = run / "world" / "manifest.jsonl"
    sets = {s: QuadrupletDataset.from_manifest(manifest, clip, split=s) for s in ("train", "validation")}
    with torch.no_grad():
        views = {
            "text model 384-d": {s: labelled(sentence_embeddings(clip, d)) for s, d in sets.items()},
            "CLIP text 64-d": {s: labelled(embed_dataset(clip, d)) for s, d in sets.items()},
        }
    pca = PCA(64, random_state=0).fit(views["text model 384-d"]["train"][0])
    views["text model PCA-64"] = {
        s: (torch.from_numpy(pca.transform(x.numpy())).float(), y)
        for s, (x, y) in views["text model 384-d"].items()
    }
    a, b = halves(len(sets["validation"]))
    record = {name: probe(v["train"], v["validation"], a, b) for name, v in views.items()}
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
