"""``hysafe serve``: the service over saved indexes, checkpoints or a demo report folder (whose
indexes it builds on first use)."""

from __future__ import annotations

import argparse
import errno
import json
import socket
from pathlib import Path

from .collection import model_from_spec
from .options import named_paths, positive_float, positive_int

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


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port, the one taken is printed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, taken before the models load: a port in use or a host that
    does not resolve is a one-line error now, not uvicorn's after minutes of loading."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise OSError(f"--host {host!r}: not an address of this machine ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop
    try:
        sock.bind(address)
        sock.listen(2048)  # now: a second server on the port fails here, not silently later
    except OSError as e:
        sock.close()
        hint = "; another process is using it: pick another --port" if e.errno == errno.EADDRINUSE else ""
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    return sock


def _service(args, indexes: dict[str, str], checkpoints: dict[str, str]):
    """The service the options describe: ``indexes`` (``--index``, with a demo report's, built if
    absent), ``checkpoints`` (``--checkpoint``), models and labels."""
    from ..collection import CollectionIndex, labels_from_manifest
    from ..collection.page import examples_from_manifest
    from ..models.checkpoint import load_model
    from ..serve.app import Served, Service

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
    for name, ckpt in checkpoints.items():
        served[name] = Served(load_model(ckpt, device=args.device))
    return Service(
        served,
        labels=labels_from_manifest(labels_file) if labels_file else None,
        examples=examples_from_manifest(labels_file) if labels_file else None,
        max_k=args.max_k,
        max_upload_mb=args.max_upload_mb,
        max_items=args.max_items,
    )


def cmd_serve(args) -> int:
    from ..serve.app import create_app

    # option errors first, then the report folder, then the port, then the models
    indexes, checkpoints = named_paths(args.index, "--index"), named_paths(args.checkpoint)
    if args.demo:
        _check_demo_report(Path(args.demo))
    with listening_socket(args.host, args.port) as sock:
        service = _service(args, indexes, checkpoints)
        import uvicorn

        host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
        url = f"http://{host}:{sock.getsockname()[1]}/"
        print(f"serving {sorted(service.served)} on {url}  (API docs: /docs)", flush=True)
        uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning")).run(sockets=[sock])
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
    p.add_argument(
        "--port", type=port_number, default=8000, help="TCP port (default: %(default)s; 0: any free one)"
    )
    p.add_argument(
        "--max-k",
        type=positive_int,
        default=100,
        help="most hits a search may ask for (default: %(default)s)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=10.0,
        help="largest request body, uploads included (default: %(default)s MB)",
    )
    p.add_argument(
        "--max-items",
        type=positive_int,
        default=256,
        help="most texts or images one /classify request may carry (default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the models (default: %(default)s)")
