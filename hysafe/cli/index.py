"""The ``index build|add|search`` command of the CLI (a thin layer over
:class:`hysafe.collection.CollectionIndex`): build or extend a collection's index, search it by text or
image queries, with the search settings of approximate indexes."""

from __future__ import annotations

import json

from .collection import _args_model, _args_source, _chunk_options, _model_spec, _source, model_from_spec
from .options import positive_int, tau_option

__all__ = ["cmd_index", "args_index"]


def cmd_index(args) -> int:
    from ..collection import CollectionIndex, add_to_index, build_index

    if args.action == "build":
        spec = _model_spec(args)
        index = build_index(
            model_from_spec(spec, args.device),
            _source(args),
            args.index,
            kind=args.kind,
            model_spec=spec,
            **_chunk_options(args),
        )
        if index is not None:
            print(
                f"index {args.index}: {len(index.index)} "
                f"{index.meta['modality']}s ({index.meta['kind']}, "
                f"{index.meta['skipped']} skipped)"
            )
        return 0
    stored = CollectionIndex.open(args.index)
    model = model_from_spec(
        _model_spec(args) if (args.checkpoint or args.clip_pretrained) else stored.meta["model_spec"],
        args.device,
    )
    if args.action == "add":
        index = add_to_index(
            model,
            _source(args),
            args.index,
            **_chunk_options(args),
        )
        print(f"index {args.index}: {len(index.index)} items")
        return 0
    return _search(args, model, stored)


def _search(args, model, stored) -> int:
    import torch

    from ..data import load_image

    if bool(args.query) == bool(args.image):
        raise ValueError("index search needs --query TEXT or --image FILE (one of them, repeatable)")
    _search_settings(args, stored.index)
    with torch.no_grad():
        if args.query:
            queries, q, modality = args.query, model.encode_text(model.tokenize(args.query)), "text"
        else:
            imgs = [load_image(p, model.preprocess, row_id="-", field="image") for p in args.image]
            queries, q, modality = args.image, model.encode_image(torch.stack(imgs).to(model.device)), "image"
    results = stored.search(model, q.float().cpu(), args.k, modality=modality, tau=args.tau)
    if args.json:
        print(
            json.dumps(
                [{"query": qu, "hits": hits} for qu, hits in zip(queries, results, strict=True)], indent=2
            )
        )
        return 0
    for qu, hits in zip(queries, results, strict=True):
        print(f"query: {qu}" + (f"  (traversal tau {args.tau})" if args.tau is not None else ""))
        for h in hits:
            where = h.get("path") or h.get("text")
            print(f"  {h['rank']:3d}  d={h['distance']:.4f}  nsfw={h['score']:.4f}  {where}")
    return 0


def _search_settings(args, index) -> None:
    """``--nprobe`` / ``--rerank`` for this search (the index files keep theirs)."""
    if args.nprobe is not None:
        if index.kind == "flat":
            raise ValueError(
                f"--nprobe: {args.index} is a flat index (exact search), it has no lists to probe"
            )
        index.nprobe = args.nprobe
    if args.rerank is not None:
        if index.kind != "ivfpq":
            raise ValueError(
                f"--rerank: {args.index} is a {index.kind} index; only ivfpq re-ranks candidates"
            )
        index.rerank = args.rerank


def args_index(p) -> None:
    p.add_argument("action", choices=["build", "add", "search"])
    p.add_argument("--index", required=True, metavar="DIR", help="the index folder")
    _args_model(p, required=False)
    _args_source(p)
    p.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "flat", "ivf", "ivfpq"],
        help="faiss index (auto: IVF from 200k items; ivfpq: compressed codes in "
        "RAM, full vectors memory-mapped for an exact re-rank)",
    )
    p.add_argument("--query", action="append", help="search: a text query (repeatable)")
    p.add_argument("--image", action="append", help="search: an image query (repeatable)")
    p.add_argument("-k", "--k", type=positive_int, default=10)
    p.add_argument(
        "--tau",
        type=tau_option,
        help="search: traverse queries toward the safe region first (HySAC): a number or a rule, 'model' "
        "for the checkpoint's own ('avg' for hysafe-trained); without it, no traversal",
    )
    p.add_argument("--json", action="store_true", help="search: print JSON")
    p.add_argument(
        "--nprobe",
        type=positive_int,
        help="search, IVF kinds: lists probed per query (more: higher recall, slower; default: the index's)",
    )
    p.add_argument(
        "--rerank",
        type=positive_int,
        help="search, ivfpq: candidates per result kept by the codes (up to 10 of them re-ranked exactly; "
        "docs/benchmarks.md section 8 gives the recall / speed curve)",
    )
