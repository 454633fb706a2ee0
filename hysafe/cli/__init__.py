"""The ``hysafe`` command line, an application: :mod:`.main` holds the parser and the one-line error
handling, and each command group has its module (:mod:`.demo`, :mod:`.models`, :mod:`.interop`,
:mod:`.collection`), built on the Python API only. The library never imports it.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
