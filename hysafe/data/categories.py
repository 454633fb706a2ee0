"""The 20 ViSU NSFW categories and the 7 I2P groups they belong to."""

from __future__ import annotations

__all__ = ["I2P_GROUPS", "CATEGORIES", "CATEGORY_TO_GROUP", "category_group"]

I2P_GROUPS: dict[str, tuple[str, ...]] = {
    "hate": ("hate",),
    "harassment": ("harassment",),
    "violence": ("violence", "suffering", "humiliation", "harm", "abuse", "brutality", "cruelty"),
    "self-harm": ("suicide",),
    "sexual": ("sexual", "nudity"),
    "shocking": ("bodily fluids", "blood", "obscene gestures"),
    "illegal activity": ("illegal activity", "drug use", "theft", "vandalism", "weapons"),
}

CATEGORIES: tuple[str, ...] = tuple(c for group in I2P_GROUPS.values() for c in group)
CATEGORY_TO_GROUP: dict[str, str] = {c: g for g, cats in I2P_GROUPS.items() for c in cats}
assert len(CATEGORIES) == 20


def category_group(category: str) -> str:
    """I2P group of a ViSU category (case-insensitive); ``"unknown"`` for anything else."""
    return CATEGORY_TO_GROUP.get(category.strip().lower(), "unknown")
