"""The ``hysafe`` command line: the parser, the command table and the one-line errors.

Commands: demo, train, embed, evaluate, classify, traverse, plot, convert, export, score, index, compare,
serve. A thin layer: each command parses its options and calls the Python API. The handlers live in one
module per command group (:mod:`.demo`, :mod:`.models`, :mod:`.interop`, :mod:`.collection`);
options of ``demo`` and ``train`` are generated from dataclass fields (:mod:`.options`), so their
defaults live only in those dataclasses.

Exit codes: 0 success, 1 bad input (missing file, bad manifest row, mismatched checkpoint, ...),
2 bad command-line usage, 3 a bug in hysafe (shown with its traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tarfile
import traceback

from safetensors import SafetensorError

from ..utils.extras import missing_module_message, require_extra
from . import collection, demo, index, interop, models, serve, train

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

EXIT_INPUT_ERROR = 1
#: an error no input should cause (a bug): the traceback is shown
EXIT_BUG = 3

#: errors a user's input can cause (files, values, formats): one line each, exit code 1
USER_ERRORS = (ValueError, OSError, RuntimeError, KeyError, ImportError, tarfile.TarError, SafetensorError)


# ------------------------------------------------------------------------------ subcommands


# ----------------------------------------------------------------------------------- parser


#: command -> (help, arguments, handler)
COMMANDS = {
    "demo": (
        "the whole pipeline on the embedded synthetic world; writes a report folder",
        demo.args_demo,
        demo.cmd_demo,
    ),
    "train": (
        "fine-tune HySAC, Safe-CLIP or SafeR-CLIP (or a feature model on cached features)",
        train.args_train,
        train.cmd_train,
    ),
    "embed": (
        "cache frozen-encoder features of a manifest split (for the head strategy)",
        train.args_embed,
        train.cmd_embed,
    ),
    "evaluate": (
        "comparative table (retrieval recall, unsafe share, classifiers)",
        models.args_evaluate,
        models.cmd_evaluate,
    ),
    "classify": (
        "NSFW scores (distance to root) of texts, images or a manifest",
        models.args_classify,
        models.cmd_classify,
    ),
    "traverse": (
        "retrieve images for a text query with and without root-directed traversal",
        models.args_traverse,
        models.cmd_traverse,
    ),
    "plot": (
        "distance-to-root distributions (and Poincare disk for HySAC)",
        models.args_plot,
        models.cmd_plot,
    ),
    "convert": (
        "the released HySAC, or a transformers CLIPModel, as a hysafe checkpoint",
        interop.args_convert,
        interop.cmd_convert,
    ),
    "export": (
        "a hysafe checkpoint as a transformers CLIPModel folder (and text encoder for diffusers)",
        interop.args_export,
        interop.cmd_export,
    ),
    "score": (
        "NSFW scores of every item of a folder, list or shards -> Parquet (resumable)",
        collection.args_score,
        collection.cmd_score,
    ),
    "index": (
        "build, extend or search a saved retrieval index of a collection",
        index.args_index,
        index.cmd_index,
    ),
    "compare": (
        "an HTML page: what each model's index returns for the same queries",
        collection.args_compare,
        collection.cmd_compare,
    ),
    "serve": (
        "a search and moderation service with a comparative search page (needs [serve])",
        serve.args_serve,
        serve.cmd_serve,
    ),
}

#: command -> the extra it cannot run without (checked before any work)
COMMAND_EXTRAS = {"serve": "serve", "convert": "hf", "export": "hf"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hysafe", description="Safety-aware CLIP: HySAC and Safe-CLIP, trained and compared."
    )
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
    except USER_ERRORS as e:
        print(f"hysafe {args.command}: error: {error_message(e)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except Exception as e:  # anything else is hysafe's fault: the traceback, said so
        traceback.print_exc()
        print(
            f"hysafe {args.command}: internal error ({type(e).__name__}): this is a bug in hysafe, "
            "not in your input; please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


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
