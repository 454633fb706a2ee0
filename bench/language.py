"""Choose the text-tower settings of HySAC on *validation* wordings (docs/language.md).

``synthetic:prose`` words unsafety differently in each split (four shared wordings per category in
training, the other two in validation, its own paraphrases and euphemisms in test), so a setting
chosen on validation is chosen on wordings training never saw, and the test split stays unread.
This script pretrains the CLIP once per text tower (the demo's own stage), fine-tunes HySAC once per
variant with the demo's defaults otherwise, and records each variant's validation numbers at the epoch
its selection rule kept. The rule, fixed before the run: the variant with the highest validation
text ROC-AUC (distance to the root) wins unless its validation recall sum is more than 5% below the
current default's; a tie keeps the default. (The committed record ran with ``proj-30``, then the
default, as ``--current``; ``attn-10`` won and is the default since.)

    python bench/language.py --text-tower "$minilm" --out runs/language/validation --current proj-30 \\
        --variants proj-30 proj-30-lr-0.01 proj-60 attn-10 --markdown bench/results/language/validation.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hysafe.demo import DemoConfig  # noqa: E402
from hysafe.demo.language import classifier_scores, euphemism_mask, text_aucs  # noqa: E402
from hysafe.demo.pipeline import demo_datasets, fine_tune, pretrained_backbone  # noqa: E402
from hysafe.models.checkpoint import read_metadata  # noqa: E402
from hysafe.models.safety_model import create_model  # noqa: E402
from hysafe.training.validation import validation_recalls  # noqa: E402

#: variant name -> DemoConfig overrides (HySAC's, the demo's other settings as they are)
VARIANTS: dict[str, dict] = {
    # every variant before the root-rank hinges became the demo's default (docs/worlds.md) sets rank 0
    "proj-30": {"text_tower_lora": "proj", "text_tower_epochs": 30, "rank_weight": 0.0},
    "proj-30-lr-0.01": {"text_tower_lora": "proj", "text_tower_epochs": 30, "lr": 1e-2, "rank_weight": 0.0},
    "proj-60": {"text_tower_lora": "proj", "text_tower_epochs": 60, "rank_weight": 0.0},
    "attn-10": {"text_tower_lora": "attn", "text_tower_epochs": 10, "rank_weight": 0.0},
    "attn-5": {"text_tower_lora": "attn", "text_tower_epochs": 5, "rank_weight": 0.0},
    "attn-3": {"text_tower_lora": "attn", "text_tower_epochs": 3, "rank_weight": 0.0},
    "attn-10-order-1": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "order_weight": 1.0,
        "rank_weight": 0.0,
    },
    "attn-3-order-1": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 3,
        "order_weight": 1.0,
        "rank_weight": 0.0,
    },
    "attn-10-rank-1": {"text_tower_lora": "attn", "text_tower_epochs": 10, "rank_weight": 1.0},
    "attn-10-rank-3": {"text_tower_lora": "attn", "text_tower_epochs": 10, "rank_weight": 3.0},
    # round 4's departures (docs/language.md, written before their runs)
    "attn-10-rank-10": {"text_tower_lora": "attn", "text_tower_epochs": 10, "rank_weight": 10.0},
    "attn-10-rank-3-safety-10": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 3.0,
        "safety_rank_weight": 10.0,
    },
    # round 5's departure (docs/language.md, written before its run)
    "attn-10-rank-10-root-10": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 10.0,
        "root_anchor": 10.0,
    },
    # round 5's second departure (docs/language.md, written before its run)
    "all-10-rank-10": {"text_tower_lora": "all", "text_tower_epochs": 10, "rank_weight": 10.0},
    # round 6's departure (docs/language.md, written before its run)
    "attn-10-rank-10-radius-linear": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 10.0,
        "text_radius": "linear",
    },
    # round 7's departure (docs/language.md, written before its run)
    "attn-10-rank-10-radius-frozen": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 10.0,
        "text_radius": "linear-frozen",
    },
    # round 8's departure (docs/language.md, written before its run)
    "attn-10-rank-10-radius-probe": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 10.0,
        "text_radius": "probe",
    },
    "attn-10-anchor-10": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "text_anchor": 10.0,
        "rank_weight": 0.0,
    },
    "attn-10-anchor-3": {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "text_anchor": 3.0,
        "rank_weight": 0.0,
    },
    "attn-10-lr-0.001": {"text_tower_lora": "attn", "text_tower_epochs": 10, "lr": 1e-3, "rank_weight": 0.0},
    "all-10": {"text_tower_lora": "all", "text_tower_epochs": 10, "rank_weight": 0.0},
}
# the root anchor's run again, in a run folder of its own, after the anchor's T came from a pass without
# dropout, as round 5's plan says (the first run compared T with dropout; docs/language.md)
VARIANTS["attn-10-rank-10-root-10-steady"] = VARIANTS["attn-10-rank-10-root-10"]
# the variants before round 6 ran with the published text radius, the norm (DemoConfig's default then)
for _overrides in VARIANTS.values():
    _overrides.setdefault("text_radius", "norm")
#: the variant that is DemoConfig's default (the rule keeps it on a tie)
CURRENT = "attn-10-rank-10-radius-probe"
RECALL_TOLERANCE = 0.05


def kept_validation(history: list[dict], best_score: float | None) -> dict:
    """The validation record of the epoch the selection rule kept (the last one at the best score)."""
    kept = [h for h in history if best_score is not None and abs(h.get("score", -1) - best_score) < 1e-9]
    return (kept or history)[-1]


def epoch_summary(h: dict) -> dict:
    """One epoch's validation numbers, as the variant's record keeps them."""
    keys = ("epoch", "root AUC text", "root AUC image", "recall_sum", "score")
    return {k: h.get(k) for k in keys}


def run_variant(cfg: DemoConfig, name: str, base: str, splits, out: Path) -> dict:
    variant = replace(cfg, **VARIANTS[name])
    t = time.time()
    result = fine_tune(variant, "hysac", base, *splits, out / name, **variant.hysac_options())
    seconds = time.time() - t
    v = kept_validation(result.history, result.best_score)
    # the model as the run returns it (a probe radius refitted on the kept weights): its own numbers
    final = validation_recalls(result.model, splits[1], select=variant.select)
    val = text_aucs(*classifier_scores(result.model, splits[1]), euphemism_mask(splits[1].rows))
    kept = read_metadata(out / name / "runs" / "hysac" / "best.safetensors").get("extra", {})
    return {
        "variant": name,
        "overrides": VARIANTS[name],
        "epoch": v.get("epoch"),
        "val_text_auc": final.get("root AUC text"),
        "val_text_auc_euphemisms": val.get("euphemisms"),
        "val_text_auc_explicit": val.get("explicit"),
        "val_image_auc": final.get("root AUC image"),
        "val_recall_sum": final.get("recall_sum"),
        "kept_epoch_record": epoch_summary(v),
        "text_radius_probe": kept.get("text_radius_probe"),
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / variant.fine_tune_epochs, 1),
        "reused_epochs": result.reused_epochs,
        "history": [epoch_summary(h) for h in result.history],
    }


def choose(rows: list[dict], current: str = CURRENT) -> str:
    """The rule in the module docstring (``current``: the default the rule compares with)."""
    default = next(r for r in rows if r["variant"] == current)
    floor = (1 - RECALL_TOLERANCE) * default["val_recall_sum"]
    eligible = [r for r in rows if r["val_recall_sum"] >= floor]
    best = max(eligible, key=lambda r: r["val_text_auc"])
    return current if best["val_text_auc"] <= default["val_text_auc"] else best["variant"]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _per_epoch(row: dict) -> str:
    """Seconds per epoch, or "re-read" for a finished run the sweep reused (no training time)."""
    reread = row.get("reused_epochs", 0) >= len(row["history"]) > 0
    return "re-read" if reread else str(row["seconds_per_epoch"])


def markdown(rows: list[dict], winner: str, tower: str) -> str:
    lines = [
        f"HySAC on `synthetic:prose` with the text tower `{tower}`: **validation** split (unsafe wordings "
        "training never saw), at the epoch each run kept. Chosen by the rule in bench/language.py: "
        f"**{winner}**.",
        "",
        "| variant | overrides | kept epoch | val text ROC-AUC | explicit | euphemisms | val image ROC-AUC "
        "| val recall sum | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | `{json.dumps(r['overrides'])}` | {r['epoch']} | {r['val_text_auc']:.3f} | "
            f"{_num(r.get('val_text_auc_explicit'))} | {_num(r.get('val_text_auc_euphemisms'))} | "
            f"{r['val_image_auc']:.3f} | {r['val_recall_sum']:.1f} | {_per_epoch(r)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text-tower", required=True, help="Hugging Face text model folder")
    p.add_argument("--out", required=True)
    p.add_argument("--variants", nargs="+", default=[CURRENT], choices=sorted(VARIANTS))
    p.add_argument("--current", default=CURRENT, choices=sorted(VARIANTS), help="the default to compare with")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    cfg = DemoConfig(
        data="synthetic:prose", text_tower=args.text_tower, out_dir=str(out), progress=False, workers=1
    )
    names = [args.current, *[v for v in args.variants if v != args.current]]
    model = create_model("clip", cfg.backbone_name, None, lora=None)
    train_set, val_set, _ = demo_datasets(cfg, model, out)  # the test split is generated, never read
    timings: dict = {}
    base = pretrained_backbone(cfg, train_set, val_set, out, timings)
    rows = [run_variant(cfg, n, base, (train_set, val_set), out) for n in names]
    winner = choose(rows, args.current)
    record = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "pretrain_seconds": timings.get("pretrain CLIP"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "rows": rows,
        "current": args.current,
        "winner": winner,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    table = markdown(rows, winner, args.text_tower)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
