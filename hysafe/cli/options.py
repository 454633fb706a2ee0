"""Command-line options generated from dataclass fields, so every default exists once.

A field's ``metadata`` may hold ``help`` (shown by ``--help``), ``choices``, ``min`` (an integer
field's least value, refused at parse time: a usage error, exit code 2) and ``cli`` (the option's
name, e.g. ``"--out"``; ``None`` leaves the field off the command line). Booleans
become ``--flag`` (default off) or ``--no-flag`` (default on); ``X | None`` fields take an ``X``.

Options that are not given stay out of the parsed namespace (``argparse.SUPPRESS``):
:func:`options_to_kwargs` returns only what the user typed, and the dataclass (or a preset such as
``DemoConfig.quick()``) supplies the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from typing import Any

__all__ = ["add_options", "options_to_kwargs", "option_flags", "named_paths"]


#: the splits of a quadruplet manifest
SPLITS = ["train", "validation", "test"]


def _scalar_type(hint) -> type | None:
    """``int``, ``float``, ``str`` or ``bool`` behind a type hint (``None``: not a CLI scalar)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else None
    return hint if hint in (int, float, str, bool) else None


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: ``a,b,c`` as ``("a", "b", "c")`` (a ``tuple[str, ...]`` field's option)."""
    items = tuple(item.strip() for item in text.split(","))
    if not all(items):
        raise argparse.ArgumentTypeError(f"expects NAME[,NAME...], got {text!r}")
    return items


def _is_str_tuple(hint) -> bool:
    """``tuple[str, ...]`` or ``tuple[str, ...] | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) == 1 and _is_str_tuple(args[0])
    return typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...)


def _option_type(f: dataclasses.Field, hint) -> type | None:
    """A field's option type: its scalar type, or :func:`comma_list` for a ``tuple[str, ...]`` field
    that has help text (the others stay off the command line)."""
    if _is_str_tuple(hint) and "help" in f.metadata:
        return comma_list
    return _scalar_type(hint)


def _cli_fields(cls, prefix: str, exclude: tuple[str, ...]) -> list[tuple[dataclasses.Field, type, str]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        typ = _option_type(f, hints[f.name])
        name = f.metadata.get("cli", "--" + prefix + f.name.replace("_", "-"))
        if f.name in exclude or typ is None or name is None or not f.init:
            continue
        out.append((f, typ, name))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def add_options(
    parser: argparse.ArgumentParser,
    cls,
    *,
    prefix: str = "",
    exclude: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
) -> None:
    """Add one option per scalar field of dataclass ``cls`` (``required``: fields that must be given)."""
    for f, typ, name in _cli_fields(cls, prefix, exclude):
        default = _default(f)
        dest = prefix.replace("-", "_") + f.name
        help_text = f.metadata.get("help", "")
        if typ is bool:
            flag = name if not default else "--" + prefix + "no-" + f.name.replace("_", "-")
            help_text = f"turn off: {help_text}" if default else help_text
            parser.add_argument(
                flag,
                dest=dest,
                action="store_false" if default else "store_true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        shown = f" (default: {default})" if default is not None else ""
        low = f.metadata.get("min")
        parser.add_argument(
            name,
            dest=dest,
            type=typ if low is None else functools.partial(_int_at_least, low=low),
            default=argparse.SUPPRESS,
            choices=f.metadata.get("choices"),
            required=f.name in required,
            help=help_text + shown,
        )


def option_flags(cls, *, prefix: str = "") -> dict[str, str]:
    """Field name -> the option :func:`add_options` makes of it (a boolean on by default keeps its
    plain name here, not the ``--no-`` form)."""
    return {f.name: name for f, _, name in _cli_fields(cls, prefix, ())}


def options_to_kwargs(
    args: argparse.Namespace, cls, *, prefix: str = "", exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The options the user gave for ``cls`` (made by :func:`add_options`), as constructor keywords."""
    dests = {f.name: prefix.replace("-", "_") + f.name for f, _, _ in _cli_fields(cls, prefix, exclude)}
    return {field: getattr(args, dest) for field, dest in dests.items() if hasattr(args, dest)}


def named_paths(values: list[str] | None, option: str = "--checkpoint") -> dict[str, str]:
    """``NAME=PATH`` option values (repeatable options such as ``--checkpoint``, ``--index``)."""
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{option} expects NAME=PATH, got {v!r}")
        if name in out:
            raise ValueError(
                f"{option} names {name!r} twice ({out[name]} and {path}); give each a name of its own"
            )
        out[name] = path
    return out


def manifest_dataset(model, manifest: str, split: str):
    """One split of a quadruplet manifest, tokenised and preprocessed for ``model``."""
    from ..data import QuadrupletDataset

    return QuadrupletDataset.from_manifest(manifest, model, split=split)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (sizes in MB, seconds), refused at parse time."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (sizes, counts), refused at parse time with the value."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (repeats, a setting where 0 means off)."""
    return _int_at_least(text, 0)


def tau_option(text: str, *, extra: tuple[str, ...] = ("model",)) -> str:
    """An argparse type: a tau rule (:func:`~hysafe.models.traversal.check_tau_rule`), a finite number
    >= 0 (as text) or one of ``extra``, refused at parse time."""
    from ..models.traversal import check_tau_rule

    if text in extra:
        return text
    try:
        check_tau_rule(text, "tau")
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}, or {' / '.join(repr(x) for x in extra)}") from None
    try:
        value = float(text)
    except ValueError:
        return text  # a rule
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 or a rule, got {text}")
    return text
