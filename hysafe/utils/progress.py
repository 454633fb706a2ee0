"""Progress on long work: a bar on a terminal, a log line per unit of work elsewhere.

tqdm redraws flood logs that are not terminals (CI, ``nohup``, pipes); there the bars are off and
long loops report through the ``hysafe.progress`` logger (the CLI shows it at INFO level).
"""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

__all__ = ["bar", "report", "on_terminal"]

logger = logging.getLogger("hysafe.progress")


def on_terminal() -> bool:
    """Whether stderr is a terminal that shows bars (``HYSAFE_PROGRESS=log``: never; processes that
    share one terminal report in log lines instead)."""
    return os.environ.get("HYSAFE_PROGRESS") != "log" and sys.stderr.isatty()


def bar(iterable=None, *, desc: str, enabled: bool = True, total: int | None = None) -> tqdm:
    """A progress bar shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not (enabled and on_terminal()),
        leave=False,
        mininterval=1.0,
    )


def report(enabled: bool, message: str, *args) -> None:
    """A progress line for logs that are not terminals (where the bars are off)."""
    if enabled and not on_terminal():
        logger.info(message, *args)
