"""Is the HySAC text radius short of the probe because of what it reads, or how it is trained? Logistic
probes on the **validation** split of a ``bench/language.py`` run (the test split is never read).

On a fine-tuned HySAC with a linear text radius (``--text-radius linear``), each probe is the report's
(``NSFWClassifier.tuned_logistic_probe``), fitted on the training captions, C chosen on one half of the
validation captions (seeded, a quadruplet's two captions together) and scored on the other half:

* on the head's own input, the LoRA-adapted sentence embeddings;
* on the sentence embeddings before LoRA (what the frozen-MiniLM probe of the report reads);

beside the head itself (its log distance to the root) on the same half, and on the training captions.

    python bench/language_head_probe.py --run runs/language-r7/validation/attn-10-rank-10-radius-linear \\
        --world runs/language-r7/validation/world --out bench/results/language/head_probe_round6.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from language_probe_width import halves, probe  # noqa: E402

from hysafe.data import QuadrupletDataset  # noqa: E402
from hysafe.models.checkpoint import load_model  # noqa: E402
from hysafe.models.hf_text_cache import base_sentence_embeddings  # noqa: E402
from hysafe.training.radius_probe import labelled_captions  # noqa: E402

BATCH = 128


def labelled(model, dataset, read) -> tuple[torch.Tensor, torch.Tensor]:
    """``read(tokens)`` of the safe captions (label 0) then the unsafe ones (label 1)."""
    return labelled_captions(dataset, read, batch_size=BATCH, device=model.device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a bench/language.py variant folder (linear text radius)")
    p.add_argument("--world", required=True, help="the sweep's world folder")
    p.add_argument("--out", required=True, help="JSON record")
    args = p.parse_args(argv)
    model = load_model(Path(args.run) / "runs" / "hysac" / "best.safetensors").eval()
    manifest = Path(args.world) / "manifest.jsonl"
    sets = {s: QuadrupletDataset.from_manifest(manifest, model, split=s) for s in ("train", "validation")}
    backbone = model.backbone
    reads = {
        "adapted sentence embeddings (the head's input)": model.radius_inputs,
        "sentence embeddings before LoRA": lambda t: base_sentence_embeddings(
            backbone.model, t, backbone.peft
        ),
    }
    a, b = halves(len(sets["validation"]))
    record = {}
    for name, read in reads.items():
        views = {s: labelled(model, d, read) for s, d in sets.items()}
        record[name] = probe(views["train"], views["validation"], a, b)

    def head(t):
        return model.space.dist_to_root(model.encode_text(t)).log()

    (xv, yv), (xt, yt) = (labelled(model, sets[s], head) for s in ("validation", "train"))
    record["the head (log distance to the root)"] = {
        "val_half_B_auc": round(float(roc_auc_score(yv[b].numpy(), xv[b].numpy())), 4),
        "train_auc": round(float(roc_auc_score(yt.numpy(), xt.numpy())), 4),
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
