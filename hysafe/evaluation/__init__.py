"""Measuring models side by side: recall from similarity scores (:mod:`.metrics`), the comparative
table of CLIP / Safe-CLIP / HySAC in the four ViSU settings with unsafe shares and classifier scores
(:mod:`.comparison`), the safety checks the papers' claims reduce to (:mod:`.checks`) and embedding
distribution plots (:mod:`.plots`). May import models, index, data and geometry; never training or
the apps.
"""

from .checks import Check, safety_checks
from .comparison import Comparison, compare_models

__all__ = ["Check", "Comparison", "compare_models", "safety_checks"]
