"""The ``hysafe`` command line: demo, train, embed, evaluate, classify, traverse, plot.

Exit codes: 0 success, 1 bad input (missing file, bad manifest row, mismatched checkpoint, ...),
2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_INPUT_ERROR = 1


def _number_or_rule(value: str) -> float | str:
    """A CLI value that is a number (``0.25``, ``2e-1``) or a rule string (``V.avg``, ``paper``)."""
    try:
        return float(value)
    except ValueError:
        return value


def _named_paths(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--checkpoint expects NAME=PATH, got {v!r}")
        out[name] = path
    return out


def _dataset(model, manifest: str, split: str):
    from .data import QuadrupletDataset, load_manifest

    rows = load_manifest(manifest, split=split)
    return QuadrupletDataset(rows, preprocess=model.preprocess, tokenizer=model.tokenizer, preload=True)


# ------------------------------------------------------------------------------ subcommands


def cmd_demo(args) -> int:
    from .backbone import LoraConfig
    from .data import WorldConfig
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(out_dir=args.out, data=args.data, visu_source=args.visu_root, coco_root=args.coco_root,
                     unsafe_root=args.unsafe_root, model=args.model, pretrained=args.pretrained, device=args.device,
                     seed=args.seed, progress=not args.no_progress, precision=args.precision)
    if args.quick:
        cfg.world = WorldConfig(n_train=320, n_val=64, n_test=64, seed=args.seed)
        cfg.pretrain_epochs, cfg.finetune_epochs, cfg.batch_size = 4, 3, 32
        cfg.lora = LoraConfig(r=4, alpha=8.0, dropout=0.0)
    if args.epochs is not None:
        cfg.finetune_epochs = args.epochs
    if args.pretrain_epochs is not None:
        cfg.pretrain_epochs = args.pretrain_epochs
    report = run_demo(cfg)
    print(f"report: {report}")
    print(report.read_text().split("## Comparison on the test split")[1].split("## Plots")[0].strip())
    return 0


def cmd_train(args) -> int:
    from .backbone import LoraConfig
    from .features import FeatureDataset, FeatureHead
    from .models import create_model
    from .training import TrainConfig, train

    kind = "safeclip" if args.objective in ("safeclip", "safer-clip") else "hysac"
    if args.features:
        data = FeatureDataset.load(args.features)
        model = FeatureHead(*data.dims, kind=kind)
    else:
        if not args.data:
            raise ValueError("train needs --data MANIFEST (or --features FILE for the head strategy)")
        data = args.data
        model = create_model(kind, args.model, args.pretrained, lora=LoraConfig(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout),
                             device=args.device)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, precision=args.precision, num_workers=args.workers,
                      output_dir=args.out, checkpoint_every=args.checkpoint_every, seed=args.seed, min_radius=args.min_radius,
                      grad_accum=args.grad_accum, optimizer="adam" if kind == "safeclip" else "adamw",
                      weight_decay=0.0 if kind == "safeclip" else 0.2, early_stopping_patience=args.patience,
                      progress=not args.no_progress, device=args.device)
    res = train(model, data, args.objective, cfg, val_data=data.subset(range(min(len(data), 512))) if args.features else None)
    print(json.dumps({"steps": res.steps, "seconds": round(res.seconds, 1), "best_validation_recall_sum": res.best_score,
                      "best_checkpoint": str(res.best_checkpoint), "bounds": res.bounds}, indent=2))
    return 0


def cmd_embed(args) -> int:
    from .checkpoint import load_model
    from .features import cache_features
    from .models import create_model

    model = load_model(args.checkpoint) if args.checkpoint else create_model("clip", args.model, args.pretrained, device=args.device)
    path = cache_features(model, _dataset(model, args.data, args.split), args.out, batch_size=args.batch_size, num_workers=args.workers)
    print(f"features: {path}")
    return 0


def _load_models(args) -> dict:
    from .checkpoint import load_model
    from .models import create_model

    models = {}
    if args.clip_pretrained:
        models["CLIP"] = create_model("clip", args.model, args.clip_pretrained)
    for name, path in _named_paths(args.checkpoint).items():
        models[name] = load_model(path)
    if not models:
        raise ValueError("give at least one --checkpoint NAME=PATH (and/or --clip-pretrained for the CLIP baseline)")
    return models


def cmd_evaluate(args) -> int:
    from .evaluation import compare_models

    models = _load_models(args)
    first = next(iter(models.values()))
    traversal = None if args.traversal == "off" else _number_or_rule(args.traversal)
    comp = compare_models(models, _dataset(first, args.data, "test"), _dataset(first, args.data, "validation"), traversal=traversal)
    paths = comp.save(args.out)
    print(comp.to_markdown())
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def cmd_classify(args) -> int:
    import torch

    from .checkpoint import load_model
    from .classifier import NSFWClassifier, classification_metrics, threshold_from_bounds
    from .data import load_image

    model = load_model(args.checkpoint)
    if model.space.name != "lorentz":
        raise ValueError("classify scores by distance to the root: give a HySAC checkpoint")
    clf = NSFWClassifier.root_distance(model.space)
    items: list[tuple[str, str, torch.Tensor]] = []
    with torch.no_grad():
        if args.text:
            for t, e in zip(args.text, model.encode_text(model.tokenize(args.text))):
                items.append(("text", t, e))
        for p in args.image or []:
            if not Path(p).is_file():
                raise FileNotFoundError(f"image not found: {p}")
            img = load_image(p, model.preprocess, row_id="-", field="image").unsqueeze(0).to(model.device)
            items.append(("image", p, model.encode_image(img)[0]))
    if args.manifest:
        from .embed import embed_dataset

        ds = _dataset(model, args.manifest, args.split)
        emb = embed_dataset(model, ds)
        for modality, (a, b) in {"text": ("T", "T*"), "image": ("V", "V*")}.items():
            if a not in emb:
                continue
            thr = args.threshold if args.threshold is not None else threshold_from_bounds(model.bounds, modality)
            x = torch.cat([emb[a], emb[b]])
            y = torch.cat([torch.zeros(len(emb[a])), torch.ones(len(emb[b]))])
            m = classification_metrics(clf.score(x), y, thr)
            print(f"{modality}: accuracy {m['accuracy']:.1f}  FPR {m['fpr']:.1f}  FNR {m['fnr']:.1f}  ROC-AUC {m['roc_auc']:.3f}  (threshold {thr:.4f})")
    for modality, label, e in items:
        thr = args.threshold if args.threshold is not None else threshold_from_bounds(model.bounds, modality)
        score = float(clf.score(e[None].cpu())[0])
        print(f"{'UNSAFE' if score >= thr else 'safe  '}\t{score:.4f}\t(threshold {thr:.4f})\t{modality}: {label}")
    if not items and not args.manifest:
        raise ValueError("nothing to classify: give --text, --image or --manifest")
    return 0


def cmd_traverse(args) -> int:
    import torch

    from .checkpoint import load_model
    from .embed import embed_dataset
    from .retrieval import RetrievalIndex
    from .traversal import resolve_tau

    model = load_model(args.checkpoint)
    ds = _dataset(model, args.data, args.split)
    emb = embed_dataset(model, ds)
    if "V" not in emb:
        raise ValueError(f"{args.data}: traverse retrieves images, but the rows are text-only")
    gallery = torch.cat([emb["V"], emb["V*"]])
    captions = [(r.safe_text, "safe") for r in ds.rows] + [(r.unsafe_text, "UNSAFE") for r in ds.rows]
    index = RetrievalIndex(model.space, gallery.shape[1])
    index.add(gallery)
    tau = resolve_tau(_number_or_rule(args.tau), bounds=model.bounds, space=model.space)
    with torch.no_grad():
        q = model.encode_text(model.tokenize(args.query)).float().cpu()
    for text, qe in zip(args.query, q):
        print(f"query: {text}  (distance to root {float(model.space.dist_to_root(qe[None])[0]):.4f}, tau {tau:.4f})")
        for label, t in (("without traversal", None), ("with traversal", tau)):
            dist, ids = index.search(qe[None], args.k, tau=t)
            print(f"  {label}:")
            for d, i in zip(dist[0].tolist(), ids[0].tolist()):
                cap, safety = captions[i]
                print(f"    {safety:6s} d={d:.4f}  image of: {cap}")
    return 0


def cmd_plot(args) -> int:
    from .embed import embed_dataset
    from .plots import plot_poincare_disk, plot_root_distances

    models = _load_models(args)
    first = next(iter(models.values()))
    ds = _dataset(first, args.data, args.split)
    emb = {n: embed_dataset(m, ds) for n, m in models.items()}
    out = Path(args.out)
    written = [out / f"root_distances.{args.format}"]
    plot_root_distances({n: (m.space, emb[n]) for n, m in models.items()}, written[0])
    for n, m in models.items():
        if m.space.name == "lorentz":
            written.append(out / f"poincare_{n}.{args.format}")
            plot_poincare_disk(m.space, emb[n], written[-1], title=f"{n} embeddings")
    print("written: " + ", ".join(str(p) for p in written))
    return 0


# ----------------------------------------------------------------------------------- parser


def _add_models(p, *, need_data: bool = True):
    p.add_argument("--checkpoint", action="append", metavar="NAME=PATH", help="a hysafe checkpoint (repeatable)")
    p.add_argument("--clip-pretrained", metavar="TAG|PATH", help="add the plain CLIP baseline with these weights")
    p.add_argument("--model", default="hysafe-tiny", help="open_clip model name of the CLIP baseline")
    if need_data:
        p.add_argument("--data", required=True, metavar="MANIFEST", help="quadruplet manifest (JSONL/CSV/Parquet)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hysafe", description="Safety-aware CLIP: HySAC and Safe-CLIP, trained and compared.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on the embedded synthetic world; writes a report folder")
    p.add_argument("--out", default="hysafe-report", help="report folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a small world and few epochs (a smoke run of under a minute)")
    p.add_argument("--data", default="synthetic", help="'synthetic', 'visu', or a manifest path")
    p.add_argument("--visu-root", help="ViSU-Text split files (folder or file) or 'hf:aimagelab/ViSU-Text'")
    p.add_argument("--coco-root", help="COCO image folder (ViSU safe images)")
    p.add_argument("--unsafe-root", help="folder of generated unsafe images named {incremental_id}.png")
    p.add_argument("--model", default="hysafe-tiny", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", help="open_clip tag (e.g. openai) or local checkpoint; default: pretrain the tiny model here")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs")
    p.add_argument("--pretrain-epochs", type=int, help="pretraining epochs of the tiny CLIP")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="fine-tune HySAC, Safe-CLIP or SafeR-CLIP (or a head on cached features)")
    p.add_argument("--objective", default="hysac", choices=["hysac", "safeclip", "safer-clip"])
    p.add_argument("--data", metavar="MANIFEST", help="quadruplet manifest (train + validation splits)")
    p.add_argument("--features", metavar="FILE", help="cached features (hysafe embed): train a head only")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name")
    p.add_argument("--pretrained", help="open_clip tag or local checkpoint")
    p.add_argument("--out", required=True, help="run folder: logs, last.safetensors (resume), best.safetensors")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=1.0)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--min-radius", type=float, default=0.1, help="entailment cone K")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between resumable checkpoints")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="cache frozen-encoder features of a manifest split (for the head strategy)")
    p.add_argument("--data", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="train", choices=["train", "validation", "test"])
    p.add_argument("--checkpoint", help="a hysafe checkpoint (default: plain CLIP from --model/--pretrained)")
    p.add_argument("--model", default="hysafe-tiny")
    p.add_argument("--pretrained")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("evaluate", help="comparative table (retrieval recall, unsafe share, classifiers)")
    _add_models(p)
    p.add_argument("--traversal", default="avg", help="'avg', 'low_05', 'up_95', 'paper', a number, or 'off'")
    p.add_argument("--out", default="hysafe-eval", help="folder for comparison.md/.csv and metrics.json")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("classify", help="NSFW scores (distance to root) of texts, images or a manifest")
    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint")
    p.add_argument("--text", action="append", help="a caption to score (repeatable)")
    p.add_argument("--image", action="append", help="an image file to score (repeatable)")
    p.add_argument("--manifest", help="score a labelled manifest split and report metrics")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--threshold", type=float, help="default: midpoint of the safe/unsafe mean distances in the checkpoint's bounds")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("traverse", help="retrieve images for a text query with and without root-directed traversal")
    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint (with bounds)")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="gallery: safe and unsafe images of a split")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--query", action="append", required=True, help="query text (repeatable)")
    p.add_argument("--tau", default="V.avg", help="a number, a bound ('V.avg') or the paper rule ('paper:V')")
    p.add_argument("-k", "--k", type=int, default=5)
    p.set_defaults(func=cmd_traverse)

    p = sub.add_parser("plot", help="distance-to-root distributions (and Poincare disk for HySAC)")
    _add_models(p)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--out", default="hysafe-plots")
    p.add_argument("--format", default="png", choices=["png", "svg"])
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hysafe").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hysafe {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
