"""The four populations of a quadruplet, named once.

Every quadruplet has a safe and an unsafe caption and (optionally) a safe and an unsafe image.
Embeddings are keyed by :attr:`Population.key` (``T``, ``V``, ``T*``, ``V*``, the names the loss
terms use); safety bounds by :attr:`Population.bound` (``S``, ``V``, ``U``, ``G``, the names of the
HySAC paper and its released ``hysac_bounds.json``). Both come from this table:

===============  =======  =========  ========  ========
population       ``key``  ``bound``  modality  unsafe
===============  =======  =========  ========  ========
``SAFE_TEXT``    ``T``    ``S``      text      no
``SAFE_IMAGE``   ``V``    ``V``      image     no
``UNSAFE_TEXT``  ``T*``   ``U``      text      yes
``UNSAFE_IMAGE`` ``V*``   ``G``      image     yes
===============  =======  =========  ========  ========
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Population",
    "SAFE_TEXT",
    "SAFE_IMAGE",
    "UNSAFE_TEXT",
    "UNSAFE_IMAGE",
    "POPULATIONS",
    "MODALITIES",
    "population",
    "modality_pair",
    "steer_target",
]

MODALITIES = ("text", "image")


@dataclass(frozen=True)
class Population:
    key: str  # embedding name
    bound: str  # safety-bound name
    modality: str  # "text" or "image"
    unsafe: bool
    label: str  # human-readable, for reports and plots

    def __str__(self) -> str:
        return self.key


SAFE_TEXT = Population("T", "S", "text", False, "safe text")
SAFE_IMAGE = Population("V", "V", "image", False, "safe image")
UNSAFE_TEXT = Population("T*", "U", "text", True, "unsafe text")
UNSAFE_IMAGE = Population("V*", "G", "image", True, "unsafe image")

#: in the order HySAC arranges them by distance from the root
POPULATIONS: tuple[Population, ...] = (SAFE_TEXT, SAFE_IMAGE, UNSAFE_TEXT, UNSAFE_IMAGE)

_BY_NAME = {p.key: p for p in POPULATIONS} | {p.bound: p for p in POPULATIONS}


def population(name: str | Population) -> Population:
    """The population with embedding key or bound name ``name`` (``V`` is the safe image in both)."""
    if isinstance(name, Population):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown population {name!r}; expected one of {sorted(_BY_NAME)}") from None


def modality_pair(modality: str) -> tuple[Population, Population]:
    """``(safe, unsafe)`` populations of ``"text"`` or ``"image"``."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be 'text' or 'image', got {modality!r}")
    return (SAFE_TEXT, UNSAFE_TEXT) if modality == "text" else (SAFE_IMAGE, UNSAFE_IMAGE)


def steer_target(query: str | Population) -> Population:
    """The safe population a query of this population or modality is steered to before retrieval:
    the gallery's safe side, i.e. safe images for text queries and safe texts for image queries."""
    modality = query if query in MODALITIES else population(query).modality
    return SAFE_IMAGE if modality == "text" else SAFE_TEXT
