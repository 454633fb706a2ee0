"""Model commands: ``evaluate``, ``classify``, ``traverse``, ``plot``.

Each handler parses its options and calls the Python API on saved checkpoints and a manifest.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

from .options import SPLITS, manifest_dataset, named_paths, positive_int, tau_option

logger = logging.getLogger(__name__)


def _load_models(args) -> dict:
    from ..models.checkpoint import load_model
    from ..models.safety_model import create_model

    models = {}
    if args.clip_pretrained:
        models["CLIP"] = create_model("clip", args.model, args.clip_pretrained)
    for name, path in named_paths(args.checkpoint).items():
        models[name] = load_model(path)
    if not models:
        raise ValueError(
            "give at least one --checkpoint NAME=PATH (and/or --clip-pretrained for the CLIP baseline)"
        )
    return models


def _train_split(model, manifest: str):
    """The manifest's training split (where the logistic probes are fitted), or None without one."""
    from ..data import load_manifest

    if not any(r.split == "train" for r in load_manifest(manifest)):
        logger.warning("%s has no 'train' rows: the Euclidean models get no logistic-probe row", manifest)
        return None
    return manifest_dataset(model, manifest, "train")


def cmd_evaluate(args) -> int:
    from ..evaluation.comparison import compare_models

    models = _load_models(args)
    first = next(iter(models.values()))
    traversal = None if args.traversal == "off" else args.traversal
    comp = compare_models(
        models,
        manifest_dataset(first, args.data, "test"),
        manifest_dataset(first, args.data, "validation"),
        traversal=traversal,
        train=_train_split(first, args.data),
    )
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

    from ..data import load_image
    from ..models.checkpoint import load_model
    from ..models.classifier import classification_metrics
    from ..models.embed import embed_dataset
    from ..populations import MODALITIES, modality_pair

    model = load_model(args.checkpoint)
    if not model.space.hyperbolic:
        raise ValueError("classify scores by distance to the root: give a HySAC checkpoint")
    items: list[tuple[str, str, torch.Tensor]] = []
    with torch.no_grad():
        if args.text:
            items += [
                ("text", t, e)
                for t, e in zip(args.text, model.encode_text(model.tokenize(args.text)), strict=True)
            ]
        for p in args.image or []:
            if not Path(p).is_file():
                raise FileNotFoundError(f"image not found: {p}")
            img = load_image(p, model.preprocess, row_id="-", field="image").unsqueeze(0).to(model.device)
            items.append(("image", p, model.encode_image(img)[0]))
    if not items and not args.manifest:
        raise ValueError("nothing to classify: give --text, --image or --manifest")
    if args.manifest:
        emb = embed_dataset(model, manifest_dataset(model, args.manifest, args.split))
        for modality in MODALITIES:
            safe, unsafe = (emb.get(p.key) for p in modality_pair(modality))
            if safe is None:
                continue
            clf = _classifier(model, modality, args.threshold)
            m = classification_metrics(
                clf.score(torch.cat([safe, unsafe])),
                torch.cat([torch.zeros(len(safe)), torch.ones(len(unsafe))]),
                clf.threshold,
            )
            print(
                f"{modality}: accuracy {m['accuracy']:.1f}  FPR {m['fpr']:.1f}  "
                f"FNR {m['fnr']:.1f}  ROC-AUC {m['roc_auc']:.3f}  (threshold {clf.threshold:.6g})"
            )
    for modality, label, e in items:
        clf = _classifier(model, modality, args.threshold)
        score = float(clf.score(e[None].cpu())[0])
        print(
            # six significant digits: a narrow band of distances (a short run) is still told apart
            f"{'UNSAFE' if score >= clf.threshold else 'safe  '}\t{score:.6g}\t(threshold "
            f"{clf.threshold:.6g})\t{modality}: {label}"
        )
    return 0


def cmd_traverse(args) -> int:
    import torch

    from ..index.retrieval import RetrievalIndex
    from ..models.checkpoint import load_model
    from ..models.embed import embed_dataset

    model = load_model(args.checkpoint)
    if not hasattr(model, "tau"):
        raise ValueError(
            f"{args.checkpoint}: traversal moves queries toward the root: give a "
            f"HySAC checkpoint, not a {model.kind} one"
        )
    ds = manifest_dataset(model, args.data, args.split)
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
    for text, qe in zip(args.query, q, strict=True):
        d0 = float(model.space.dist_to_root(qe[None])[0])
        print(f"query: {text}  (distance to root {d0:.4f}, tau {tau:.4f})")
        if d0 <= tau:
            print(
                "  (already within tau of the root: traversal leaves it where it is, both lists are the same)"
            )
        for label, t in (("without traversal", None), ("with traversal", tau)):
            dist, ids = index.search(qe[None], args.k, tau=t)
            print(f"  {label}:")
            for d, i in zip(dist[0].tolist(), ids[0].tolist(), strict=True):
                cap, safety = captions[i]
                print(f"    {safety:6s} d={d:.4f}  image of: {cap}")
    return 0


def cmd_plot(args) -> int:
    from ..evaluation.plots import plot_poincare_disk, plot_root_distances
    from ..models.embed import embed_dataset

    models = _load_models(args)
    first = next(iter(models.values()))
    ds = manifest_dataset(first, args.data, args.split)
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


def _add_models(p, *, need_data: bool = True):
    p.add_argument(
        "--checkpoint", action="append", metavar="NAME=PATH", help="a hysafe checkpoint (repeatable)"
    )
    p.add_argument(
        "--clip-pretrained", metavar="TAG|PATH", help="add the plain CLIP baseline with these weights"
    )
    p.add_argument("--model", default="hysafe-tiny", help="open_clip model name of the CLIP baseline")
    if need_data:
        p.add_argument(
            "--data", required=True, metavar="MANIFEST", help="quadruplet manifest (JSONL/CSV/Parquet)"
        )


_TAU_HELP = (
    "a number or a rule: 'model' (the checkpoint's own rule: 'authors' for a converted "
    "release, else 'avg'), a statistic of the target safe population "
    "('avg', 'up_95'), 'V.avg', or the paper's formula 'paper' (on "
    "up_95, as the authors' code) / 'paper:V.avg'"
)


def args_evaluate(p) -> None:
    from ..models.traversal import DEFAULT_TAU

    _add_models(p)
    p.add_argument(
        "--traversal",
        default=DEFAULT_TAU,
        type=functools.partial(tau_option, extra=("model", "off")),
        help=_TAU_HELP + ", or 'off' (default: %(default)s)",
    )
    p.add_argument("--out", default="hysafe-eval", help="folder for comparison.md/.csv and metrics.json")


def args_classify(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint")
    p.add_argument("--text", action="append", help="a caption to score (repeatable)")
    p.add_argument("--image", action="append", help="an image file to score (repeatable)")
    p.add_argument("--manifest", help="score a labelled manifest split and report metrics")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--threshold",
        type=float,
        help="default: midpoint of the safe/unsafe mean distances in the checkpoint's bounds",
    )


def args_traverse(p) -> None:
    from ..models.traversal import DEFAULT_TAU

    p.add_argument("--checkpoint", required=True, help="a HySAC checkpoint (with bounds)")
    p.add_argument(
        "--data", required=True, metavar="MANIFEST", help="gallery: safe and unsafe images of a split"
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--query", action="append", required=True, help="query text (repeatable)")
    p.add_argument("--tau", default=DEFAULT_TAU, type=tau_option, help=_TAU_HELP + " (default: %(default)s)")
    p.add_argument("-k", "--k", type=positive_int, default=5)


def args_plot(p) -> None:
    _add_models(p)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--out", default="hysafe-plots")
    p.add_argument("--format", default="png", choices=["png", "svg"])
