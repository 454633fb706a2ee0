"""``hysafe demo``, an application: the whole pipeline on the embedded world (generate, pretrain,
fine-tune the three models, compare, check; :mod:`.pipeline`) and the report folder it writes
(Markdown, JSON/CSV, plots, the comparison page; :mod:`.report`). Its stages (:func:`demo_datasets`,
:func:`pretrained_backbone`, :func:`fine_tune`) are public for benchmarks that run them on other
worlds. The library never imports it.
"""

from .config import DemoConfig
from .pipeline import DemoIncomplete, DemoResult, demo_datasets, fine_tune, pretrained_backbone, run_demo

__all__ = [
    "DemoConfig",
    "DemoIncomplete",
    "DemoResult",
    "demo_datasets",
    "fine_tune",
    "pretrained_backbone",
    "run_demo",
]
