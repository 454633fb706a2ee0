"""hysafe: safety-aware CLIP models (HySAC, Safe-CLIP) in one toolkit."""

__version__ = "0.1.0"
