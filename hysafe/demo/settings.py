"""The demo's settings compared: between a report folder's ``demo_config.json`` and a new run
(:mod:`hysafe.demo.preflight`), as ``hysafe demo``'s options name them, and what ``--quick`` sets."""

from __future__ import annotations

import json

from .config import DemoConfig, option_name

__all__ = [
    "RERUN_FREE",
    "OFF_WHEN_UNSET",
    "ADDED_SETTINGS",
    "flat_settings",
    "option_name",
    "changed_settings",
    "changed_runs",
    "quick_values",
    "quick_settings",
]


#: settings a re-run in the same report folder may change: they touch no training it reuses
RERUN_FREE = ("out_dir", "progress", "workers", "device", "traversal", "image_ceiling")


def flat_settings(cfg: DemoConfig | dict) -> dict:
    """``cfg`` as ``demo_config.json`` holds it (JSON values), nested settings under dotted names
    (``world.n_train``, ``lora.r``)."""
    data = json.loads(json.dumps(cfg.record() if isinstance(cfg, DemoConfig) else cfg, default=str))

    def flat(value, prefix: str) -> dict:
        if not isinstance(value, dict):
            return {prefix: value}
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}

    return {k.rstrip("."): v for k, v in flat(data, "").items()}


#: settings added after earlier hysafe versions wrote their ``demo_config.json``, with the value such a
#: record stands for (a run with a text tower from before round 6 used the published norm)
ADDED_SETTINGS = {"text_radius": "norm"}

#: HySAC's optional terms, off where not given: ``None`` and ``0`` are the same setting
OFF_WHEN_UNSET = ("order_weight", "safety_rank_weight", "text_anchor", "root_anchor")


def _value(key: str, value):
    """A setting's value as compared (an optional term that is off: ``None``, however it was given)."""
    return None if key in OFF_WHEN_UNSET and not value else value


def _shown(key: str, value) -> str:
    """A setting's value as the refusal says it (an optional term that is off: ``off``)."""
    return "off" if key in OFF_WHEN_UNSET and _value(key, value) is None else repr(value)


def changed_settings(before: dict, now: dict, *, skip: tuple[str, ...] = ()) -> list[str]:
    """``"OPTION: X there, Y now"`` for each :func:`flat_settings` entry both hold with another value
    (a setting only one holds, from another hysafe version, is not compared, except those of
    :data:`ADDED_SETTINGS`, which an older record holds at their value then), except under ``skip``."""
    before = {**ADDED_SETTINGS, **before}
    return [
        f"{option_name(k)}: {_shown(k, before[k])} there, {_shown(k, now[k])} now"
        for k in sorted(set(before) & set(now))
        if k.split(".")[0] not in skip and _value(k, before[k]) != _value(k, now[k])
    ]


def quick_values() -> dict:
    """The :func:`flat_settings` that ``--quick`` sets, with its values (from :meth:`DemoConfig.quick`)."""
    full, quick = flat_settings(DemoConfig()), flat_settings(DemoConfig.quick())
    return {k: quick[k] for k in sorted(full) if full[k] != quick[k]}


def quick_settings() -> str:
    """What ``--quick`` sets, as ``OPTION VALUE`` pairs (so the help cannot drift from it)."""
    return ", ".join(f"{option_name(k)} {v}" for k, v in quick_values().items())


def changed_runs(before: dict, now: dict, *, skip: tuple[str, ...] = ()) -> list[str]:
    """:func:`changed_settings`, with a run made with ``--quick`` against one without said as such
    (``"--quick there, not now"``) in place of the settings ``--quick`` sets."""
    quick = {k: v for k, v in quick_values().items() if k.split(".")[0] not in skip}
    was, now_quick = (all(s.get(k) == v for k, v in quick.items()) for s in (before, now))
    if was == now_quick:
        return changed_settings(before, now, skip=skip)
    rest = changed_settings(
        {k: v for k, v in before.items() if k not in quick},
        {k: v for k, v in now.items() if k not in quick},
        skip=skip,
    )
    return ["--quick there, not now" if was else "--quick now, not there", *rest]
