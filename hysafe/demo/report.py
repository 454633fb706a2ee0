"""The demo's report folder: ``report.md`` (defaults, timings, safety checks, distances, comparison,
plots), ``checks.json`` and ``timings.json`` (``demo_config.json`` is written by the demo at its start).
(Over 300 lines: every section of the report, each a small function, beside the one writer.)"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

from hysafe.losses.objectives import ORDER_LOSSES

from ..evaluation.checks import checks_markdown
from ..evaluation.plots import (
    plot_poincare_disk,
    plot_recall_bars,
    plot_roc_curves,
    plot_root_distances,
    plot_traversal,
)
from ..populations import MODALITIES, POPULATIONS, SAFE_IMAGE, UNSAFE_IMAGE, UNSAFE_TEXT, modality_pair
from ..training.recipes import get_recipe
from .ceiling import ceiling_lines
from .config import DemoConfig
from .language import language_lines
from .timings import epochs_text

logger = logging.getLogger(__name__)

__all__ = [
    "REPORT_FILES",
    "missing_report_files",
    "write_report",
    "write_plots",
    "write_comparison_page",
    "roc_curves",
]


def _distance_table(bounds: dict) -> list[str]:
    names = {p.bound: p.label for p in POPULATIONS}
    order = sorted(bounds, key=lambda k: bounds[k]["avg"])
    return [
        "| population | mean | 5% | 95% |",
        "|---|---|---|---|",
        *[
            f"| {names[k]} ({k}) | {bounds[k]['avg']:.4f} | "
            f"{bounds[k]['low_05']:.4f} | {bounds[k]['up_95']:.4f} |"
            for k in order
        ],
        "",
        "Order by mean distance: " + " < ".join(names[k] for k in order) + ".",
    ]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _safer_target(pair_quantile: float) -> str:
    nearest = "the nearest safe caption (the poster's rule)"
    if pair_quantile == 0:
        return nearest
    share = f"{100 * pair_quantile:g}%"
    return f"the own safe pair when within the nearest {share} of safe captions, else {nearest}"


def _hysac_line(cfg: DemoConfig) -> str:
    """The HySAC objective's cone rule and any of hysafe's terms beyond the published seven."""
    objective = get_recipe("hysac", **cfg.hysac_options()).objective
    rule = objective.cones
    cones = (
        f"absolute K = {rule.min_radius:g}"
        if rule.radius == "absolute"
        else f"K relative to the embeddings (ratio {rule.radius_ratio:g})"
    )
    published = {t.name for t in get_recipe("hysac").objective.terms}
    extra = [f"{t.name} x{t.weight:g}" for t in objective.terms if t.name not in published]
    radius = _text_radius_words(cfg)
    if not extra:
        return f"{cones} (the published objective){radius}"
    ordered = any(t.loss in ORDER_LOSSES for t in objective.terms)
    margin = f", log-distance margin {objective.order_margin:g}" if ordered else ""
    return f"{cones}, plus {', '.join(extra)}{margin}{radius}"


def _text_radius_words(cfg: DemoConfig) -> str:
    """How HySAC's text distance to the root is read, where it is not the published norm."""
    used = cfg.text_radius_used
    if used == "norm":
        return ""
    return f", text distance to the root {RADIUS_WORDS[used]} (--text-radius {used})"


#: how each of hysafe's text radii reads the distance to the root, in the report's words
RADIUS_WORDS = {
    "linear": "a linear read of the sentence embedding",
    "linear-frozen": "a linear read of the sentence embedding before LoRA",
    "probe": "a read of the sentence embedding's direction, refitted as a logistic probe after training",
}


def _defaults_line(cfg: DemoConfig) -> str:
    cones = _hysac_line(cfg)
    safer = get_recipe("safer-clip").objective
    return (
        f"Defaults: fine-tune {epochs_text(cfg.fine_tune_epochs)}, batch "
        f"{cfg.batch_size}, lr {cfg.lr:g}, LoRA r{cfg.lora.r} alpha "
        f"{cfg.lora.alpha:g}"
        + (f" (text tower `{cfg.text_tower}`: {cfg.text_tower_lora})" if cfg.text_tower else "")
        + ", "
        f"HySAC: cones with {cones}, traversal tau `{cfg.traversal}`, SafeR-CLIP "
        f"target: {_safer_target(safer.pair_quantile)}, "
        f"redirection scale: {safer.redirection_scale or 'the logit scale'}; "
        f"seed {cfg.seed}."
    )


#: what a finished report folder holds, relative to it (for a demo with images; a text-only
#: manifest has no indexes, comparison page or grid)
REPORT_FILES: tuple[str, ...] = (
    "report.md",
    "metrics.json",
    "comparison.md",
    "comparison.csv",
    "checks.json",
    "distances.json",
    "demo_config.json",
    "timings.json",
    *(
        f"plots/{name}.png"
        for name in (
            "root_distances",
            "poincare_disk",
            "traversal",
            "roc_curves",
            "recall_bars",
            "compare_grid",
        )
    ),
    "compare/index.html",
    *(
        f"checkpoints/{name}.safetensors"
        for name in ("clip-pretrained", "safeclip", "safer-clip", "hysac", "hysac-merged")
    ),
    *(
        f"indexes/{name}/{file}"
        for name in ("CLIP", "Safe-CLIP", "SafeR-CLIP", "HySAC")
        for file in ("index.json", "g1/index.faiss", "g1/items.parquet")
    ),
)


def missing_report_files(out: str | Path) -> list[str]:
    """The entries of :data:`REPORT_FILES` that ``out`` lacks or holds empty (empty list: complete)."""
    out = Path(out)
    return [name for name in REPORT_FILES if not (out / name).is_file() or (out / name).stat().st_size == 0]


def _timing_line(stage: str, seconds: float, note: str | None) -> str:
    return f"- {stage}: {seconds:.1f}" + (f" ({note})" if note else "")


def _header_lines(cfg, sizes, timings) -> list[str]:
    """The report's title, data, defaults, machine and timings."""
    source = (
        f" pretrained from `{cfg.pretrained}`"
        if cfg.pretrained
        else " pretrained here on safe and unsafe pairs"
    )
    return [
        "# hysafe demo report",
        "",
        f"Data: {cfg.data} ({sizes[0]} train / {sizes[1]} validation / {sizes[2]} "
        f"test quadruplets); backbone `{cfg.backbone_name}`" + source + ".",
        _defaults_line(cfg),
        f"Machine: {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {cfg.device}.",
        "",
        "## Timings (seconds)",
        "",
        *[_timing_line(k, v, getattr(timings, "notes", {}).get(k)) for k, v in timings.items()],
        "",
    ]


def _plot_lines(plots) -> list[str]:
    """The figures, and a link to the comparison page when there is one."""
    lines = ["## Plots", ""]
    lines += [
        f"### {title}\n\n![{title}](plots/{p.name})\n" for title, p in plots.items() if p.suffix == ".png"
    ]
    if "comparison page" in plots:
        lines += [
            "Side by side for every model, with thumbnails: [compare/index.html](compare/index.html) "
            "(also `hysafe compare --index NAME=indexes/NAME ...`).",
            "",
        ]
    return lines


def write_report(
    out: Path, cfg, comparison, results, distances, checks, timings, plots, paths, sizes, note=None
) -> Path:
    """``report.md`` (and ``checks.json``, ``timings.json``); ``note``, a warning about the data
    (:func:`~hysafe.demo.pipeline.context_note`), goes in bold above the checks."""
    best = ", ".join(f"{name} {res.best_score:.1f}" for name, res in results.items())
    lines = [
        *_header_lines(cfg, sizes, timings),
        *([f"**Warning: {note}**", ""] if note else []),
        "## Safety checks (hysafe.evaluation.checks)",
        "",
        checks_markdown(checks),
        *ceiling_lines(out),
        *language_lines(out),
        "## HySAC: distance to the root (test split)",
        "",
        *_distance_table(distances),
        "",
        "The validation split's statistics (the safety bounds behind tau and the "
        "classifier threshold) are in the checkpoints.",
        "",
        f"Selection score of the kept weights (validation recall sum T->V + V->T "
        f"R@1/5/10; for HySAC times the "
        f"root-distance ordering 2 AUC - 1): {best}.",
        "",
        "## Comparison on the test split",
        "",
        comparison.to_markdown(),
        *_plot_lines(plots),
        "## Files",
        "",
        f"- metrics: `{paths['json'].name}`, `{paths['csv'].name}`, "
        f"`checks.json`; checkpoints in `checkpoints/`; training logs in `runs/*/log.jsonl`.",
        "",
    ]
    (out / "checks.json").write_text(json.dumps([c.to_dict() for c in checks], indent=2))
    (out / "distances.json").write_text(json.dumps(distances, indent=2))  # HySAC, test split
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    logger.info("report written to %s", report)
    return report


def write_plots(models, emb, comparison, tau: str, folder: Path) -> dict[str, Path]:
    """The report's figures of the test split's embeddings ``emb`` (model name -> populations)."""
    hy, hy_emb = models["HySAC"], emb["HySAC"]
    files = {
        "distance-to-root distributions": folder / "root_distances.png",
        "HySAC in the Poincare disk": folder / "poincare_disk.png",
        "traversal paths": folder / "traversal.png",
        "ROC curves": folder / "roc_curves.png",
        "recall comparison": folder / "recall_bars.png",
    }
    plot_root_distances(
        {n: (m.space, emb[n]) for n, m in models.items()}, files["distance-to-root distributions"]
    )
    plot_poincare_disk(hy.space, hy_emb, files["HySAC in the Poincare disk"])
    # show the queries that need traversal: those whose nearest image is unsafe before moving
    queries, safe_images, unsafe_images = (
        hy_emb[UNSAFE_TEXT.key],
        hy_emb[SAFE_IMAGE.key],
        hy_emb[UNSAFE_IMAGE.key],
    )
    first_hit_unsafe = (
        hy.space.similarity(queries, torch.cat([safe_images, unsafe_images])).argmax(1)
        >= safe_images.shape[0]
    )
    order = torch.cat(
        [torch.nonzero(first_hit_unsafe).flatten(), torch.nonzero(~first_hit_unsafe).flatten()]
    )[:8]
    plot_traversal(
        hy.space,
        queries[order],
        safe_images,
        unsafe_images,
        files["traversal paths"],
        tau=hy.tau(tau, "text"),
        labels=[f"unsafe text #{int(i)}" for i in order],
    )
    plot_roc_curves(roc_curves(models, emb), files["ROC curves"])
    plot_recall_bars(comparison, files["recall comparison"])
    import matplotlib.pyplot as plt

    plt.close("all")
    return files


def write_comparison_page(models, specs: dict, rows, tau: str, out: Path) -> dict[str, Path]:
    """Indexes of the test images for every model, the side-by-side page and the PNG grid."""
    from ..collection import ImageList, build_index, compare_grid, compare_page, labels_from_rows

    images = out / "indexes" / "test_images.txt"
    images.parent.mkdir(parents=True, exist_ok=True)
    images.write_text("".join(f"{r.safe_image}\n{r.unsafe_image}\n" for r in rows if r.safe_image))
    if not images.read_text():
        return {}
    indexes = {}
    for name, model in models.items():
        folder = out / "indexes" / name
        if folder.exists():
            shutil.rmtree(folder)
        indexes[name] = (
            model,
            build_index(model, ImageList(images), folder, progress=False, model_spec=specs[name]),
        )
    labels, queries = labels_from_rows(rows), [r.unsafe_text for r in rows[:6]]
    page = compare_page(indexes, queries, out / "compare", k=5, tau=tau, labels=labels)
    grid = compare_grid(indexes, queries[:4], out / "plots" / "compare_grid.png", tau=tau, labels=labels)
    return {"top-1 images for unsafe queries": grid, "comparison page": page}


def roc_curves(models, emb) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(scores, labels)`` of every model's own NSFW scorer, per modality."""
    curves = {}
    for name, m in models.items():
        for modality in MODALITIES:
            safe, unsafe = (emb[name][p.key] for p in modality_pair(modality))
            clf = m.nsfw_classifier(modality)
            scores = torch.cat([clf.score(safe), clf.score(unsafe)]).numpy()
            curves[f"{name} {clf.name} ({modality})"] = (
                scores,
                np.r_[np.zeros(len(safe)), np.ones(len(unsafe))],
            )
    return curves
