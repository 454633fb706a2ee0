"""``hysafe serve``: the service over saved indexes, checkpoints or a demo report folder (whose
indexes it builds on first use)."""

from __future__ import annotations

import json
from pathlib import Path

from .collection import model_from_spec
from .options import named_paths, positive_int

__all__ = ["cmd_serve", "args_serve", "demo_report_missing", "DEMO_SERVE_FILES"]


DEMO_SERVE_FILES = (
    "demo_config.json",
    "world/manifest.jsonl",
    "checkpoints/clip-pretrained.safetensors",
    "checkpoints/safeclip.safetensors",
    "checkpoints/safer-clip.safetensors",
    "checkpoints/hysac.safetensors",
)


def demo_report_missing(report: Path) -> list[str]:
    """The files of :data:`DEMO_SERVE_FILES` that ``report`` lacks (empty: it can be served). The
    manifest is needed only where the list of test images is not there yet."""
    has_images = (report / "indexes" / "test_images.txt").is_file()
    needed = [n for n in DEMO_SERVE_FILES if not (has_images and n == "world/manifest.jsonl")]
    return [name for name in needed if not (report / name).is_file()]


def _check_demo_report(report: Path) -> None:
    if report.exists() and not report.is_dir():
        raise NotADirectoryError(f"{report} is a file, not a hysafe demo report folder")
    if not report.is_dir():
        raise FileNotFoundError(f"{report}: no such folder; make it with 'hysafe demo --out {report}'")
    missing = demo_report_missing(report)
    if missing:
        raise FileNotFoundError(
            f"{report}: an incomplete hysafe demo report (missing {', '.join(missing)}); "
            f"finish it with 'hysafe demo --out {report}' and the options it was made with "
            "(finished trainings are reused)"
        )


def _demo_indexes(report: Path) -> dict[str, str]:
    """The indexes ``hysafe demo`` wrote for its test images (built now if the report has none)."""
    _check_demo_report(report)  # also where the indexes are there: they name the report's checkpoints
    folders = {name: report / "indexes" / name for name in ("CLIP", "Safe-CLIP", "SafeR-CLIP", "HySAC")}
    if all((f / "index.json").is_file() for f in folders.values()):
        return {n: str(f) for n, f in folders.items()}
    from ..collection import ImageList, build_index
    from ..data import load_manifest

    images, manifest = report / "indexes" / "test_images.txt", report / "world" / "manifest.jsonl"
    if not images.is_file():
        images.parent.mkdir(parents=True, exist_ok=True)
        images.write_text(
            "".join(f"{r.safe_image}\n{r.unsafe_image}\n" for r in load_manifest(manifest, split="test"))
        )
    specs = {
        "CLIP": {
            "clip": {
                "model": json.loads((report / "demo_config.json").read_text())["model"],
                "pretrained": str((report / "checkpoints" / "clip-pretrained.safetensors").resolve()),
            }
        },
        "Safe-CLIP": {"checkpoint": str((report / "checkpoints" / "safeclip.safetensors").resolve())},
        "SafeR-CLIP": {"checkpoint": str((report / "checkpoints" / "safer-clip.safetensors").resolve())},
        "HySAC": {"checkpoint": str((report / "checkpoints" / "hysac.safetensors").resolve())},
    }
    for name, folder in folders.items():
        if not (folder / "index.json").is_file():
            build_index(
                model_from_spec(specs[name]),
                ImageList(images),
                folder,
                progress=False,
                model_spec=specs[name],
            )
    return {n: str(f) for n, f in folders.items()}


def cmd_serve(args) -> int:
    from ..collection import CollectionIndex, labels_from_manifest
    from ..collection.page import examples_from_manifest
    from ..models.checkpoint import load_model
    from ..serve.app import Served, Service, create_app

    indexes = named_paths(args.index, "--index")
    labels_file = args.labels
    if args.demo:
        report = Path(args.demo)
        indexes = {**_demo_indexes(report), **indexes}
        if labels_file is None and (report / "world" / "manifest.jsonl").is_file():
            labels_file = str(report / "world" / "manifest.jsonl")
    served = {}
    for name, folder in indexes.items():
        stored = CollectionIndex.open(folder)
        served[name] = Served(model_from_spec(stored.meta["model_spec"], args.device), stored)
    for name, ckpt in named_paths(args.checkpoint).items():
        served[name] = Served(load_model(ckpt, device=args.device))
    service = Service(
        served,
        labels=labels_from_manifest(labels_file) if labels_file else None,
        examples=examples_from_manifest(labels_file) if labels_file else None,
        max_k=args.max_k,
        max_upload_mb=args.max_upload_mb,
    )
    app = create_app(service)
    import uvicorn

    print(f"serving {sorted(served)} on http://{args.host}:{args.port}/  (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def args_serve(p) -> None:
    p.add_argument(
        "--index", action="append", metavar="NAME=DIR", help="an index folder per model (repeatable)"
    )
    p.add_argument(
        "--checkpoint", action="append", metavar="NAME=CKPT", help="a model for /classify only (repeatable)"
    )
    p.add_argument(
        "--demo",
        metavar="REPORT",
        help="serve a 'hysafe demo' report folder: its four indexes (built if absent) and labels",
    )
    p.add_argument("--labels", metavar="MANIFEST", help="labelled quadruplets: safe/unsafe badges")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-k", type=positive_int, default=100)
    p.add_argument("--max-upload-mb", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
