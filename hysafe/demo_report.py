"""The demo's report folder: ``report.md`` (defaults, timings, safety checks, distances, comparison,
plots), ``checks.json``, ``demo_config.json`` and ``timings.json``."""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from .checks import checks_markdown
from .populations import POPULATIONS
from .recipes import get_recipe

logger = logging.getLogger(__name__)

__all__ = ["write_report"]


def _distance_table(bounds: dict) -> list[str]:
    names = {p.bound: p.label for p in POPULATIONS}
    order = sorted(bounds, key=lambda k: bounds[k]["avg"])
    return ["| population | mean | 5% | 95% |", "|---|---|---|---|",
            *[f"| {names[k]} ({k}) | {bounds[k]['avg']:.4f} | {bounds[k]['low_05']:.4f} | {bounds[k]['up_95']:.4f} |" for k in order],
            "", "Order by mean distance: " + " < ".join(names[k] for k in order) + "."]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _defaults_line(cfg: DemoConfig) -> str:
    cones = "absolute K = {}".format(cfg.min_radius) if cfg.min_radius is not None else "K relative to the embeddings (ConeConfig defaults)"
    safer = get_recipe("safer-clip").objective
    return (f"Defaults: fine-tune {cfg.finetune_epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, LoRA r{cfg.lora.r} alpha {cfg.lora.alpha:g}, "
            f"HySAC cones: {cones}, traversal tau `{cfg.traversal}`, SafeR-CLIP target: the own safe pair when within the nearest "
            f"{100 * safer.pair_quantile:g}% of safe captions, else the nearest (redirection scale: {safer.redirection_scale or 'the logit scale'}), "
            f"seed {cfg.seed}.")


def write_report(out: Path, cfg, comparison, results, distances, checks, timings, plots, paths, sizes) -> Path:
    best = ", ".join(f"{name} {res.best_score:.1f}" for name, res in results.items())
    lines = [
        "# hysafe demo report",
        "",
        f"Data: {cfg.data} ({sizes[0]} train / {sizes[1]} validation / {sizes[2]} test quadruplets); backbone `{cfg.model}`"
        + (f" pretrained from `{cfg.pretrained}`" if cfg.pretrained else " pretrained here on safe and unsafe pairs") + ".",
        _defaults_line(cfg),
        f"Machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {cfg.device}.",
        "",
        "## Timings (seconds)",
        "",
        *[f"- {k}: {v:.1f}" for k, v in timings.items()],
        "",
        "## Safety checks (hysafe.checks)",
        "",
        checks_markdown(checks),
        "## HySAC: distance to the root (test split)",
        "",
        *_distance_table(distances),
        "",
        "The validation split's statistics (the safety bounds behind tau and the classifier threshold) are in the checkpoints.",
        "",
        f"Selection score of the kept weights (validation recall sum T->V + V->T R@1/5/10; for HySAC times the "
        f"root-distance ordering 2 AUC - 1): {best}.",
        "",
        "## Comparison on the test split",
        "",
        comparison.to_markdown(),
        "## Plots",
        "",
        *[f"### {title}\n\n![{title}](plots/{p.name})\n" for title, p in plots.items() if p.suffix == ".png"],
        *(["Side by side for every model, with thumbnails: [compare/index.html](compare/index.html) "
           "(also `hysafe compare --index NAME=indexes/NAME ...`).", ""] if "comparison page" in plots else []),
        "## Files",
        "",
        f"- metrics: `{paths['json'].name}`, `{paths['csv'].name}`, `checks.json`; checkpoints in `checkpoints/`; training logs in `runs/*/log.jsonl`.",
        "",
    ]
    (out / "checks.json").write_text(json.dumps([c.to_dict() for c in checks], indent=2))
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "demo_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    logger.info("report written to %s", report)
    return report
