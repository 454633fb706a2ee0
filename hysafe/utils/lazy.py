"""Package attributes imported on first use (PEP 562): a package lists its public names and the
modules they come from, and ``import package`` imports none of those modules until a name is read.

``import hysafe`` (and ``hysafe.models``) would otherwise import open_clip, transformers and
scikit-learn before anything runs: 3-4 s of every CLI call and of every process that needs only
the geometry or an index."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    *,
    aliases: Mapping[str, str] | None = None,
    submodules: tuple[str, ...] = (),
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the
    module that defines it, ``aliases`` a public name to another public name whose value it is,
    ``submodules`` names the subpackages reachable as attributes. A name read once is stored in the
    package's namespace, so later reads do not come back here."""
    aliases = dict(aliases or {})
    unknown = sorted(set(aliases.values()) - set(exports))
    if unknown:
        raise ValueError(f"{package}: aliases of names it does not export: {unknown}")
    public = [*exports, *aliases, *submodules]

    def getattr_(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        source = aliases.get(name, name)
        if source not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[source]), source)
        vars(importlib.import_module(package))[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *public})

    return public, getattr_, dir_
