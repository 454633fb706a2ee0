"""The optional extras of the install, and one-line errors that name the extra to install.

The base install (``pip install -e .``) runs everything ``hysafe demo`` runs. The ``serve``,
``hf`` and ``tensorboard`` extras add the HTTP service, transformers interop and TensorBoard
logs; a command that needs one checks for it before any work (:func:`require_extra`), and any
``ModuleNotFoundError`` that still reaches the command line is rewritten by
:func:`missing_module_message` into a line that says what to install.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "extra_of_module", "missing_extra_modules", "require_extra", "missing_module_message"]

#: extra -> the import names it provides (as ``import NAME`` spells them)
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "fastapi_offline", "uvicorn", "multipart", "starlette"),
    "hf": ("transformers", "huggingface_hub"),
    "tensorboard": ("tensorboard",),
}


def extra_of_module(module: str) -> str | None:
    """The extra that provides top-level module ``module``, or None."""
    top = module.split(".")[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extra_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty: the extra is installed)."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    return [m for m in EXTRAS[extra] if not _importable(m)]


def install_hint(extra: str) -> str:
    return f"pip install 'hysafe[{extra}]'  (from a checkout: pip install -e '.[{extra}]')"


def require_extra(extra: str, what: str) -> None:
    """Raise an ``ImportError`` naming the extra when ``what`` (e.g. 'hysafe serve') cannot run."""
    missing = missing_extra_modules(extra)
    if missing:
        raise ImportError(
            f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): {install_hint(extra)}"
        )


def missing_module_message(e: ModuleNotFoundError) -> str:
    """One line for a module that could not be imported: the extra to install, or a reinstall."""
    name = e.name or str(e)
    extra = extra_of_module(name)
    if extra is not None:
        return f"this needs the '{extra}' extra ({name} is not installed): {install_hint(extra)}"
    return (
        f"the package {name!r} is missing from this environment; reinstall hysafe "
        f"(pip install -c constraints.txt -e . from a checkout)"
    )
