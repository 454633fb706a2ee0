"""``hysafe demo``, an application: the whole pipeline on the embedded world (generate, pretrain,
fine-tune the three models, compare, check; :mod:`.pipeline`) and the report folder it writes
(Markdown, JSON/CSV, plots, the comparison page; :mod:`.report`). The library never imports it.
"""

from .config import DemoConfig
from .pipeline import DemoIncomplete, DemoResult, run_demo

__all__ = ["DemoConfig", "DemoIncomplete", "DemoResult", "run_demo"]
