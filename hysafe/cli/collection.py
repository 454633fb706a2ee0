"""The collection commands of the CLI: ``score`` and ``compare`` (a thin layer over
:mod:`hysafe.collection`), and the model and source options they share with ``index``
(:mod:`.index`)."""

from __future__ import annotations

import json
from pathlib import Path

from ..training.config import PRECISIONS
from .options import named_paths, positive_int, tau_option

__all__ = [
    "cmd_score",
    "cmd_compare",
    "args_score",
    "args_compare",
]

_TAU_HELP = (
    "a number or a rule ('model': the checkpoint's own rule, 'avg', 'up_95', 'V.avg', 'paper', 'authors')"
)


def _model_spec(args) -> dict:
    """How to rebuild the model of a collection command (stored in an index)."""
    if getattr(args, "checkpoint", None):
        return {"checkpoint": str(Path(args.checkpoint).resolve())}
    if getattr(args, "clip_pretrained", None):
        pretrained = args.clip_pretrained
        return {
            "clip": {
                "model": args.model,
                "pretrained": str(Path(pretrained).resolve()) if Path(pretrained).exists() else pretrained,
            }
        }
    raise ValueError("give --checkpoint CKPT (or --clip-pretrained TAG|PATH for the plain CLIP baseline)")


def model_from_spec(spec: dict, device: str = "cpu"):
    from ..models.checkpoint import load_model
    from ..models.safety_model import create_model

    if "checkpoint" in spec:
        return load_model(spec["checkpoint"], device=device)
    return create_model("clip", spec["clip"]["model"], spec["clip"]["pretrained"], device=device)


def _source(args):
    from ..collection import open_source

    return open_source(
        images=args.images, texts=args.texts, shards=args.shards, shard_modality=args.shard_modality
    )


def _chunk_options(args) -> dict:
    """The chunked-run options of :func:`_args_source` as the keyword arguments that
    ``score_collection``, ``build_index`` and ``add_to_index`` share."""
    return {
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "progress": not args.no_progress,
        "precision": args.precision,
    }


def cmd_score(args) -> int:
    from ..collection import score_collection

    spec = _model_spec(args)
    res = score_collection(
        model_from_spec(spec, args.device),
        _source(args),
        args.out,
        threshold=args.threshold,
        calibrate=args.calibrate,
        checkpoint=json.dumps(spec),
        **_chunk_options(args),
    )
    if res.path is not None:
        print(
            f"scored {res.rows} items ({res.skipped} skipped) -> {res.path}  "
            f"threshold {res.threshold} ({res.rule})"
        )
    return 0


def cmd_compare(args) -> int:
    from ..collection import CollectionIndex, compare_page, labels_from_manifest

    indexes = {}
    for name, folder in named_paths(args.index, "--index").items():
        stored = CollectionIndex.open(folder)
        indexes[name] = (model_from_spec(stored.meta["model_spec"]), stored)
    if not indexes:
        raise ValueError("give at least one --index NAME=DIR")
    queries = [
        line.strip() for line in Path(args.queries).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if not queries:
        raise ValueError(f"{args.queries}: no queries (one per line)")
    labels = labels_from_manifest(args.labels) if args.labels else None
    print(f"page: {compare_page(indexes, queries, args.out, k=args.k, tau=args.tau, labels=labels)}")
    return 0


def _args_source(p) -> None:
    p.add_argument(
        "--images",
        metavar="DIR|LIST",
        help="an image folder (recursive) or a .txt/.csv/.parquet list of image paths",
    )
    p.add_argument(
        "--texts",
        metavar="FILE",
        help="prompts: .txt (one per line) or .csv/.parquet with a text/prompt/caption column",
    )
    p.add_argument("--shards", metavar="PATTERN", help="WebDataset tar shards, e.g. 'data/{000..099}.tar'")
    p.add_argument(
        "--shard-modality",
        default="image",
        choices=["image", "text"],
        help="what to read from shards (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        help="items per chunk: the unit of work and resumption (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers decoding images (default: %(default)s)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="the towers' autocast precision (auto: bf16 on capable GPUs); "
        "hyperbolic maps stay fp32 (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true")


def _args_model(p, *, required: bool) -> None:
    p.add_argument(
        "--checkpoint",
        help="a hysafe checkpoint" + ("" if required else " (default: the one that built the index)"),
    )
    p.add_argument(
        "--clip-pretrained", metavar="TAG|PATH", help="instead: the plain CLIP baseline with these weights"
    )
    p.add_argument("--model", default="hysafe-tiny", help="open_clip model name of the CLIP baseline")


def args_score(p) -> None:
    _args_model(p, required=True)
    _args_source(p)
    p.add_argument("--out", required=True, help="output .parquet (re-running the same command resumes)")
    p.add_argument(
        "--threshold",
        help="a number, 'bounds' (HySAC's stored bounds; default when present) "
        "or 'fpr:0.05' with --calibrate",
    )
    p.add_argument(
        "--calibrate",
        metavar="MANIFEST",
        help="labelled quadruplets to calibrate an 'fpr:X' threshold on (their 'validation' rows)",
    )


def args_compare(p) -> None:
    from ..models.traversal import DEFAULT_TAU

    p.add_argument(
        "--index",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="an index folder per model (repeatable)",
    )
    p.add_argument("--queries", required=True, metavar="FILE", help="text queries, one per line")
    p.add_argument("--out", required=True, help="output folder (index.html + thumbs/)")
    p.add_argument("-k", "--k", type=positive_int, default=5)
    p.add_argument(
        "--tau",
        default=DEFAULT_TAU,
        type=tau_option,
        help=_TAU_HELP + " for the traversal column (default: %(default)s)",
    )
    p.add_argument(
        "--labels",
        metavar="MANIFEST",
        help="labelled quadruplets: safe/unsafe badges for the items they list",
    )


#: what ``hysafe serve --demo`` needs of a report folder to build its indexes
