"""Interop commands: ``convert`` (the authors' release, a transformers CLIPModel) and ``export``."""

from __future__ import annotations


def cmd_convert(args) -> int:
    from ..interop import load_hysac_release, load_transformers_clip
    from ..models.checkpoint import save_model

    if args.source == "hysac-release":
        model = load_hysac_release(args.weights, args.bounds, base=args.base, repo=args.repo)
    else:
        if not args.transformers:
            raise ValueError(
                "convert transformers needs --transformers FOLDER|HUB_ID (a transformers CLIPModel)"
            )
        model = load_transformers_clip(args.transformers, args.kind)
    path = save_model(model, args.out, merged=True, bounds=model.bounds)
    print(f"{model.kind} checkpoint: {path}")
    return 0


def cmd_export(args) -> int:
    from ..interop import export_transformers
    from ..models.checkpoint import load_model

    out = export_transformers(load_model(args.checkpoint), args.out_dir)
    print(f"transformers CLIPModel folder: {out} (text encoder alone: {out / 'text_encoder'})")
    return 0


def args_convert(p) -> None:
    from ..interop import HYSAC_BASE, HYSAC_REPO

    p.add_argument(
        "source",
        choices=["hysac-release", "transformers"],
        help="the released HySAC, or a transformers CLIPModel (e.g. Safe-CLIP)",
    )
    p.add_argument(
        "--weights",
        default="hysac_model.pth",
        help="HySAC weights: a local file, or a file name in --repo (default: %(default)s)",
    )
    p.add_argument(
        "--bounds",
        default="hysac_bounds.json",
        help="HySAC bounds: a local file, or a file name in --repo (default: %(default)s)",
    )
    p.add_argument("--repo", default=HYSAC_REPO, help="hub repo of the HySAC files (default: %(default)s)")
    p.add_argument(
        "--base",
        default=HYSAC_BASE,
        help="transformers CLIP the release was trained from: folder or hub id (default: %(default)s)",
    )
    p.add_argument(
        "--transformers", metavar="FOLDER|HUB_ID", help="a transformers CLIPModel (for source 'transformers')"
    )
    p.add_argument(
        "--kind",
        default="safeclip",
        choices=["safeclip", "clip"],
        help="hysafe model kind of a transformers CLIPModel",
    )
    p.add_argument("--out", required=True, help="output hysafe checkpoint (.safetensors, merged)")


def args_export(p) -> None:
    p.add_argument("--format", default="transformers", choices=["transformers"])
    p.add_argument("checkpoint", help="a hysafe checkpoint")
    p.add_argument(
        "out_dir", help="new folder: CLIPModel + tokenizer, text_encoder/ and tokenizer/ (diffusers layout)"
    )
