"""Geometry core of hysafe: pure functions on tensors (installed as ``hysafe.geometry``).

* :mod:`.lorentz` -- the Lorentz model (space components, curvature ``-curv``).
* :mod:`.euclidean` -- cosine geometry with the same interface.
* :mod:`.space` -- :class:`Space` objects so downstream code is written once for both.
"""

from . import euclidean, lorentz
from ._checks import validation
from .space import EuclideanSpace, LorentzSpace, Space, space_from_dict

__all__ = ["lorentz", "euclidean", "Space", "LorentzSpace", "EuclideanSpace", "space_from_dict", "validation"]
