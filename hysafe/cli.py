"""The ``hysafe`` command line: demo, train, embed, evaluate, classify, traverse, plot.

Commands: demo, train, embed, evaluate, classify, traverse, plot, convert, export, score, index, compare, serve.
A thin layer: each command parses its options and calls the Python API. Options of ``demo`` and
``train`` are generated from ``DemoConfig``/``TrainConfig``/``LoraConfig``/``ConeConfig`` fields
(:mod:`hysafe.cli_options`), so their defaults live only in those dataclasses. (Over 300 lines:
seven commands, each a handler and an argument list, read best side by side in one file.)

Exit codes: 0 success, 1 bad input (missing file, bad manifest row, mismatched checkpoint, ...),
2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from .cli_collections import args_compare, args_index, args_score, args_serve, cmd_compare, cmd_index, cmd_score, cmd_serve
from .cli_options import add_options, named_paths, options_to_kwargs
from .extras import missing_module_message, require_extra

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

EXIT_INPUT_ERROR = 1


def _dataset(model, manifest: str, split: str):
    from .data import QuadrupletDataset

    return QuadrupletDataset.from_manifest(manifest, model, split=split)


# ------------------------------------------------------------------------------ subcommands


def cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    options = options_to_kwargs(args, DemoConfig)
    result = run_demo(DemoConfig.quick(**options) if args.quick else DemoConfig(**options))
    print(f"report: {result.report}")
    print(result.comparison.to_markdown())
    return 0


def cmd_train(args) -> int:
    from hysafe.losses import ConeConfig

    from .backbone import LoraConfig
    from .features import FeatureDataset
    from .models import create_feature_model, create_model
    from .recipes import RECIPE_OPTIONS, get_recipe
    from .training import TrainConfig, train

    recipe_options = options_to_kwargs(args, ConeConfig) | {k: getattr(args, k) for k in RECIPE_OPTIONS["safer-clip"] if hasattr(args, k)}
    recipe = get_recipe(args.objective, **recipe_options)
    cfg = TrainConfig(**options_to_kwargs(args, TrainConfig))
    device = cfg.device or "cpu"
    if args.features:
        data, val_data = _feature_splits(args, cfg.seed)
        model = create_feature_model(recipe.model_kind, *data.dims, device=device)
    elif args.data:
        lora = LoraConfig(**options_to_kwargs(args, LoraConfig, prefix="lora-"))
        model = create_model(recipe.model_kind, args.model, args.pretrained, lora=lora, device=device)
        data, val_data = args.data, None
    else:
        raise ValueError("train needs --data MANIFEST (or --features FILE for the head strategy)")
    res = train(model, data, recipe, cfg, val_data=val_data)
    print(json.dumps({"steps": res.steps, "seconds": round(res.seconds, 1), "best_validation_score": res.best_score,
                      "best_checkpoint": str(res.best_checkpoint), "bounds": res.bounds}, indent=2))
    return 0


def _feature_splits(args, seed: int):
    """Training and validation feature sets: ``--val-features``, or a held-out share of ``--features``
    (never training rows: validation picks the best weights and fits the safety bounds)."""
    from .features import FeatureDataset

    data = FeatureDataset.load(args.features)
    if args.val_features:
        val = FeatureDataset.load(args.val_features)
        if val.dims != data.dims:
            raise ValueError(f"--val-features {args.val_features} has dims {val.dims}, --features {args.features} has {data.dims}")
        return data, val
    data, val = data.split_holdout(args.val_fraction, seed=seed)
    logger.info("validating on %d held-out feature rows, training on the other %d", len(val), len(data))
    return data, val


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
    for name, path in named_paths(args.checkpoint).items():
        models[name] = load_model(path)
    if not models:
        raise ValueError("give at least one --checkpoint NAME=PATH (and/or --clip-pretrained for the CLIP baseline)")
    return models


def cmd_evaluate(args) -> int:
    from .evaluation import compare_models

    models = _load_models(args)
    first = next(iter(models.values()))
    traversal = None if args.traversal == "off" else args.traversal
    comp = compare_models(models, _dataset(first, args.data, "test"), _dataset(first, args.data, "validation"), traversal=traversal)
    paths = comp.save(args.out)
    print(comp.to_markdown())
    print(f"written: {', '.join(str(p) for p in paths.values())}")
    return 0


def _classifier(model, modality: str, threshold: float | None):
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite number, got {threshold}")
    clf = model.nsfw_classifier(modality)
    clf.threshold = threshold if threshold is not None else clf.threshold
    if clf.threshold is None:
        raise ValueError("the checkpoint has no safety bounds: pass --threshold")
    return clf


def cmd_classify(args) -> int:
    import torch

    from .checkpoint import load_model
    from .classifier import classification_metrics
    from .data import load_image
    from .embed import embed_dataset
    from .populations import MODALITIES, modality_pair

    model = load_model(args.checkpoint)
    if not model.space.hyperbolic:
        raise ValueError("classify scores by distance to the root: give a HySAC checkpoint")
    items: list[tuple[str, str, torch.Tensor]] = []
    with torch.no_grad():
        if args.text:
            items += [("text", t, e) for t, e in zip(args.text, model.encode_text(model.tokenize(args.text)))]
        for p in args.image or []:
            if not Path(p).is_file():
                raise FileNotFoundError(f"image not found: {p}")
            img = load_image(p, model.preprocess, row_id="-", field="image").unsqueeze(0).to(model.device)
            items.append(("image", p, model.encode_image(img)[0]))
    if not items and not args.manifest:
        raise ValueError("nothing to classify: give --text, --image or --manifest")
    if args.manifest:
        emb = embed_dataset(model, _dataset(model, args.manifest, args.split))
        for modality in MODALITIES:
            safe, unsafe = (emb.get(p.key) for p in modality_pair(modality))
            if safe is None:
                continue
            clf = _classifier(model, modality, args.threshold)
            m = classification_metrics(clf.score(torch.cat([safe, unsafe])), torch.cat([torch.zeros(len(safe)), torch.ones(len(unsafe))]), clf.threshold)
            print(f"{modality}: accuracy {m['accuracy']:.1f}  FPR {m['fpr']:.1f}  FNR {m['fnr']:.1f}  ROC-AUC {m['roc_auc']:.3f}  (threshold {clf.threshold:.4f})")
    for modality, label, e in items:
        clf = _classifier(model, modality, args.threshold)
        score = float(clf.score(e[None].cpu())[0])
        print(f"{'UNSAFE' if score >= clf.threshold else 'safe  '}\t{score:.4f}\t(threshold {clf.threshold:.4f})\t{modality}: {label}")
    return 0


def cmd_traverse(args) -> int:
    import torch

    from .checkpoint import load_model
    from .embed import embed_dataset
    from .retrieval import RetrievalIndex

    model = load_model(args.checkpoint)
    if not hasattr(model, "tau"):
        raise ValueError(f"{args.checkpoint}: traversal moves queries toward the root: give a HySAC checkpoint, not a {model.kind} one")
    ds = _dataset(model, args.data, args.split)
    emb = embed_dataset(model, ds)
    if "V" not in emb:
        raise ValueError(f"{args.data}: traverse retrieves images, but the rows are text-only")
    gallery = torch.cat([emb["V"], emb["V*"]])
    captions = [(r.safe_text, "safe") for r in ds.rows] + [(r.unsafe_text, "UNSAFE") for r in ds.rows]
    index = RetrievalIndex(model.space, gallery.shape[1])
    index.add(gallery)
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    tau = model.tau(args.tau, "text")
    with torch.no_grad():
        q = model.encode_text(model.tokenize(args.query)).float().cpu()
    for text, qe in zip(args.query, q):
        print(f"query: {text}  (distance to root {float(model.nsfw_score(qe[None])[0]):.4f}, tau {tau:.4f})")
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
        if m.space.hyperbolic:
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


def cmd_convert(args) -> int:
    from .checkpoint import save_model
    from .interop import load_hysac_release, load_transformers_clip

    if args.source == "hysac-release":
        model = load_hysac_release(args.weights, args.bounds, base=args.base, repo=args.repo)
    else:
        if not args.transformers:
            raise ValueError("convert transformers needs --transformers FOLDER|HUB_ID (a transformers CLIPModel)")
        model = load_transformers_clip(args.transformers, args.kind)
    path = save_model(model, args.out, merged=True, bounds=model.bounds)
    print(f"{model.kind} checkpoint: {path}")
    return 0


def cmd_export(args) -> int:
    from .checkpoint import load_model
    from .interop import export_transformers

    out = export_transformers(load_model(args.checkpoint), args.out_dir)
    print(f"transformers CLIPModel folder: {out} (text encoder alone: {out / 'text_encoder'})")
    return 0


_SPLITS = ["train", "validation", "test"]
_TAU_HELP = "a number or a rule: a statistic of the target safe population ('avg', 'up_95'), 'V.avg', or the paper's formula 'paper' (on up_95, as the authors' code) / 'paper:V.avg'"


def _args_demo(p) -> None:
    from .demo import DemoConfig

    p.add_argument("--quick", action="store_true", help="a small world and few epochs (a smoke run of under a minute)")
    add_options(p, DemoConfig)


def _args_train(p) -> None:
    from hysafe.losses import ConeConfig

    from .backbone import LoraConfig
    from .recipes import RECIPES
    from .training import TrainConfig

    p.add_argument("--objective", default="hysac", choices=[r for r in RECIPES if r != "clip-pretrain"], help="training recipe")
    p.add_argument("--data", metavar="MANIFEST", help="quadruplet manifest (train + validation splits)")
    p.add_argument("--features", metavar="FILE", help="cached features (hysafe embed): train projections over them")
    p.add_argument("--val-features", metavar="FILE", help="cached features of a validation split (hysafe embed --split validation)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="without --val-features: share of --features rows held out for validation")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name")
    p.add_argument("--pretrained", help="open_clip tag or local checkpoint")
    add_options(p, TrainConfig, required=("output_dir",))
    add_options(p, LoraConfig, prefix="lora-")
    add_options(p, ConeConfig)
    p.add_argument("--redirection-weight", type=float, default=argparse.SUPPRESS, help="safer-clip: weight of the redirection terms (default 0.5)")
    p.add_argument("--image-target", choices=("proximal", "paired"), default=argparse.SUPPRESS,
                   help="safer-clip: frozen image the text side is redirected to (default paired: the row's own safe image)")
    p.add_argument("--redirection-scale", type=float, default=argparse.SUPPRESS,
                   help="safer-clip: temperature of the redirection terms (default: the logit scale, 100; 1 is the poster's formula as written)")
    p.add_argument("--pair-quantile", type=float, default=argparse.SUPPRESS,
                   help="safer-clip: the unsafe caption's own safe pair is its target when it ranks within this top share of safe "
                        "captions (default 0.05; 0: always the nearest, the poster's rule)")


def _args_embed(p) -> None:
    p.add_argument("--data", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="train", choices=_SPLITS)
    p.add_argument("--checkpoint", help="a hysafe checkpoint (default: plain CLIP from --model/--pretrained)")
    p.add_argument("--model", default="hysafe-tiny")
    p.add_argument("--pretrained")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _args_evaluate(p) -> None:
    from .traversal import DEFAULT_TAU

    _add_models(p)
    p.add_argument("--traversal", default=DEFAULT_TAU, help=_TAU_HELP + ", or 'off' (default: %(default)s)")
    p.add_argument("--out", default="hysafe-eval", help="folder for comparison.md/.csv and metrics.json")


def _args_classify(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint")
    p.add_argument("--text", action="append", help="a caption to score (repeatable)")
    p.add_argument("--image", action="append", help="an image file to score (repeatable)")
    p.add_argument("--manifest", help="score a labelled manifest split and report metrics")
    p.add_argument("--split", default="test", choices=_SPLITS)
    p.add_argument("--threshold", type=float, help="default: midpoint of the safe/unsafe mean distances in the checkpoint's bounds")


def _args_traverse(p) -> None:
    from .traversal import DEFAULT_TAU

    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint (with bounds)")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="gallery: safe and unsafe images of a split")
    p.add_argument("--split", default="test", choices=_SPLITS)
    p.add_argument("--query", action="append", required=True, help="query text (repeatable)")
    p.add_argument("--tau", default=DEFAULT_TAU, help=_TAU_HELP + " (default: %(default)s)")
    p.add_argument("-k", "--k", type=int, default=5)


def _args_plot(p) -> None:
    _add_models(p)
    p.add_argument("--split", default="test", choices=_SPLITS)
    p.add_argument("--out", default="hysafe-plots")
    p.add_argument("--format", default="png", choices=["png", "svg"])


def _args_convert(p) -> None:
    from .interop import HYSAC_BASE, HYSAC_REPO

    p.add_argument("source", choices=["hysac-release", "transformers"], help="the released HySAC, or a transformers CLIPModel (e.g. Safe-CLIP)")
    p.add_argument("--weights", default="hysac_model.pth", help="HySAC weights: a local file, or a file name in --repo (default: %(default)s)")
    p.add_argument("--bounds", default="hysac_bounds.json", help="HySAC bounds: a local file, or a file name in --repo (default: %(default)s)")
    p.add_argument("--repo", default=HYSAC_REPO, help="hub repo of the HySAC files (default: %(default)s)")
    p.add_argument("--base", default=HYSAC_BASE, help="transformers CLIP the release was trained from: folder or hub id (default: %(default)s)")
    p.add_argument("--transformers", metavar="FOLDER|HUB_ID", help="a transformers CLIPModel (for source 'transformers')")
    p.add_argument("--kind", default="safeclip", choices=["safeclip", "clip"], help="hysafe model kind of a transformers CLIPModel")
    p.add_argument("--out", required=True, help="output hysafe checkpoint (.safetensors, merged)")


def _args_export(p) -> None:
    p.add_argument("--format", default="transformers", choices=["transformers"])
    p.add_argument("checkpoint", help="a hysafe checkpoint")
    p.add_argument("out_dir", help="new folder: CLIPModel + tokenizer, text_encoder/ and tokenizer/ (diffusers layout)")


#: command -> (help, arguments, handler)
COMMANDS = {
    "demo": ("the whole pipeline on the embedded synthetic world; writes a report folder", _args_demo, cmd_demo),
    "train": ("fine-tune HySAC, Safe-CLIP or SafeR-CLIP (or a feature model on cached features)", _args_train, cmd_train),
    "embed": ("cache frozen-encoder features of a manifest split (for the head strategy)", _args_embed, cmd_embed),
    "evaluate": ("comparative table (retrieval recall, unsafe share, classifiers)", _args_evaluate, cmd_evaluate),
    "classify": ("NSFW scores (distance to root) of texts, images or a manifest", _args_classify, cmd_classify),
    "traverse": ("retrieve images for a text query with and without root-directed traversal", _args_traverse, cmd_traverse),
    "plot": ("distance-to-root distributions (and Poincare disk for HySAC)", _args_plot, cmd_plot),
    "convert": ("the released HySAC, or a transformers CLIPModel, as a hysafe checkpoint", _args_convert, cmd_convert),
    "export": ("a hysafe checkpoint as a transformers CLIPModel folder (and text encoder for diffusers)", _args_export, cmd_export),
    "score": ("NSFW scores of every item of a folder, list or shards -> Parquet (resumable)", args_score, cmd_score),
    "index": ("build, extend or search a saved retrieval index of a collection", args_index, cmd_index),
    "compare": ("an HTML page: what each model's index returns for the same queries", args_compare, cmd_compare),
    "serve": ("a search and moderation service with a comparative search page (needs [serve])", args_serve, cmd_serve),
}

#: command -> the extra it cannot run without (checked before any work)
COMMAND_EXTRAS = {"serve": "serve", "convert": "hf", "export": "hf"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hysafe", description="Safety-aware CLIP: HySAC and Safe-CLIP, trained and compared.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hysafe").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("hysafe.progress").setLevel(logging.INFO)  # a line per epoch where bars are off
    try:
        if args.command in COMMAND_EXTRAS:
            require_extra(COMMAND_EXTRAS[args.command], f"hysafe {args.command}")
        return args.func(args)
    except (ValueError, OSError, RuntimeError, KeyError, ImportError) as e:
        print(f"hysafe {args.command}: error: {error_message(e)}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def error_message(e: BaseException) -> str:
    """One line for the user. An error raised in a DataLoader worker arrives with the worker's
    whole traceback in its message; its last line is the original message."""
    if isinstance(e, ModuleNotFoundError):
        return missing_module_message(e)
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in msg:
        last = [line for line in msg.splitlines() if line.strip()][-1]
        msg = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    return msg


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
