"""Building a CLIP with a Hugging Face text tower quietly: transformers reports the pooler weights a
BERT checkpoint holds and open_clip's mean pooling does not use, and open_clip says the model was
"initialized partially", on every build. Those two are expected and dropped; any other loading report
(missing or mismatched weights) is still shown."""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

__all__ = ["quiet_hf_text_load", "unused_pooler_report"]

logger = logging.getLogger(__name__)


def _report_rows(message: str) -> list[tuple[str, str]]:
    """``(key, status)`` of each row of a transformers loading report (its table, ANSI styles removed)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message)
    rows = [[cell.strip() for cell in line.split("|")] for line in plain.splitlines() if "|" in line]
    return [(row[0], row[1]) for row in rows if len(row) > 1 and row[0] != "Key"]


def unused_pooler_report(message: str) -> bool:
    """Whether ``message`` is a transformers loading report whose only rows are a checkpoint's pooler
    weights that the model does not have (``pooler.* | UNEXPECTED``): open_clip's HFTextEncoder builds
    BERT-like towers without their pooler when it pools the hidden states itself (mean pooling)."""
    if "LOAD REPORT" not in message:
        return False
    rows = _report_rows(message)
    return bool(rows) and all(key.startswith("pooler.") and status == "UNEXPECTED" for key, status in rows)


class _DropExpectedHfLoadWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (unused_pooler_report(message) or message.endswith("initialized partially."))


@contextmanager
def quiet_hf_text_load(source: str):
    """Build a CLIP with the HF text tower at ``source`` without the warnings that building one always
    gives (transformers' report of the unused pooler weights, open_clip's "initialized partially":
    the text tower's weights come from ``source``, the rest from hysafe) or transformers' loading bar;
    any other loading report (missing or mismatched weights) is still shown."""
    from transformers.utils import logging as hf_logging

    drop, bar = _DropExpectedHfLoadWarnings(), hf_logging.is_progress_bar_enabled()
    targets = (logging.getLogger(), logging.getLogger("transformers.modeling_utils"))
    for target in targets:
        target.addFilter(drop)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(drop)
        if bar:
            hf_logging.enable_progress_bar()
    logger.info("HF text tower: the transformer's weights from %s (its pooler unused)", source)
