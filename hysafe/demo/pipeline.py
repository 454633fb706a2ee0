"""``hysafe demo``: the whole pipeline on the embedded synthetic world (or your own data).

generate the world -> pretrain a tiny CLIP on safe and unsafe pairs -> fine-tune Safe-CLIP,
SafeR-CLIP and HySAC (LoRA) -> compare the four (retrieval with and without traversal, NSFW
classification) and check the safety properties (:mod:`hysafe.evaluation.checks`) -> write a report folder
with Markdown, JSON/CSV metrics, plots and checkpoints (:mod:`hysafe.demo.report`).
(Over 300 lines: the demo's stages, in the order they run.)
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..data import QuadrupletDataset, generate_world, load_manifest, load_visu
from ..data.dataset import truncated_count
from ..evaluation.checks import Check, safety_checks
from ..evaluation.comparison import Comparison, compare_models
from ..models.checkpoint import load_model, save_model
from ..models.embed import embed_dataset
from ..models.safety_model import create_model
from ..training import TrainConfig, TrainResult, safety_bounds, train
from ..training.pretrain import export_open_clip, pretrain_clip
from ..training.recipes import get_recipe
from ..utils.progress import logger as progress_logger
from .ceiling import image_ceiling_stage
from .config import DemoConfig
from .language import language_stage
from .preflight import check_demo_requirements, check_pretrained_source, check_report_folder
from .report import write_comparison_page, write_plots, write_report
from .timings import StageTimes, record_stage

logger = logging.getLogger(__name__)

__all__ = [
    "DemoConfig",
    "DemoResult",
    "DemoIncomplete",
    "demo_datasets",
    "fine_tune",
    "pretrained_backbone",
    "run_demo",
]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced (the report folder holds the same, as files)."""

    report: Path
    comparison: Comparison
    bounds: dict
    timings: dict[str, float]
    checkpoints: dict[str, Path]
    plots: dict[str, Path]
    checks: list[Check] = field(default_factory=list)


def demo_datasets(
    cfg: DemoConfig, model, out: Path
) -> tuple[QuadrupletDataset, QuadrupletDataset, QuadrupletDataset]:
    """The train, validation and test splits of ``cfg.data`` for ``model`` (a synthetic world is
    generated under ``out/world``)."""
    if cfg.data.partition(":")[0] == "synthetic":
        kind = cfg.data.partition(":")[2] or cfg.world.kind
        source = generate_world(out / "world", replace(cfg.world, kind=kind), progress=cfg.progress)
        splits = {s: load_manifest(source, split=s) for s in ("train", "validation", "test")}
    elif cfg.data == "visu":
        if cfg.visu_source is None:
            raise ValueError(
                "--data visu needs --visu-root (ViSU-Text split files) or 'hf:aimagelab/ViSU-Text'"
            )
        splits = {
            s: load_visu(
                cfg.visu_source,
                split=s,
                coco_root=cfg.coco_root,
                unsafe_root=cfg.unsafe_root,
                skip_bad_rows=True,
            )
            for s in ("train", "validation", "test")
        }
    else:
        splits = {s: load_manifest(cfg.data, split=s) for s in ("train", "validation", "test")}
    train, val, test = (
        QuadrupletDataset(
            splits[s],
            preprocess=model.preprocess,
            tokenizer=model.tokenizer,
            preload=True,
            progress=cfg.progress,
        )
        for s in ("train", "validation", "test")
    )
    note = context_note((train, val, test))
    if note:
        logger.warning("!" * 72 + "\n%s\n" + "!" * 72, note)
    return train, val, test


#: above this share of unsafe captions cut at the model's context, the demo warns and says so in its report
TRUNCATION_WARN_SHARE = 0.02


def context_note(splits) -> str | None:
    """A warning when more than :data:`TRUNCATION_WARN_SHARE` of the unsafe captions of any split fill
    the model's text context (words after it are invisible to every model), else None."""
    counts = {
        name: (truncated_count(ds.unsafe_tokens, ds.pad_id), len(ds))
        for name, ds in zip(("train", "validation", "test"), splits, strict=True)
    }
    if all(cut <= TRUNCATION_WARN_SHARE * n for cut, n in counts.values()):
        return None
    context = splits[0].unsafe_tokens.shape[-1]
    shares = ", ".join(f"{cut} of {n} in {name}" for name, (cut, n) in counts.items())
    return (
        f"Unsafe captions cut at the model's {context}-token text context ({shares}): words after "
        f"token {context} are invisible to every model, unsafe wording included. Use a backbone "
        "with a longer context (e.g. --model ViT-B-32 --pretrained PATH: 77 tokens) or shorter captions."
    )


def pretrained_backbone(cfg: DemoConfig, train_set, val_set, out: Path, timings: dict) -> str:
    """The ``pretrained=`` of the fine-tunes: the given weights, or a tiny CLIP pretrained here."""
    if cfg.pretrained is not None:
        return cfg.pretrained
    check_pretrained_source(cfg)
    t = time.time()
    # a re-run of the demo reuses a finished pretraining
    pre = pretrain_clip(
        train_set,
        model=cfg.backbone_name,
        val_data=val_set,
        seed=cfg.seed,
        config=TrainConfig(
            epochs=cfg.pretrain_epochs,
            batch_size=cfg.batch_size,
            lr=2e-3,
            weight_decay=0.1,
            warmup_steps=20,
            seed=cfg.seed,
            progress=cfg.progress,
            precision=cfg.precision,
            device=cfg.device,
            output_dir=str(out / "runs" / "clip-pretrain"),
        ),
    )
    record_stage(timings, "pretrain CLIP", time.time() - t, pre)
    # an absolute path: the CLIP model's configuration (and so its index's fingerprint) must be the
    # one that `hysafe serve --demo` rebuilds from the index, whatever folder it is started in
    return str(export_open_clip(pre.model, out / "checkpoints" / "clip-pretrained.safetensors").resolve())


def fine_tune(
    cfg: DemoConfig, recipe_name: str, base: str, train_set, val_set, out: Path, **recipe_options
) -> TrainResult:
    """One of the demo's fine-tunes: recipe ``recipe_name`` (with ``recipe_options``) from the CLIP
    weights ``base``, with the demo's LoRA, epochs, seed and selection; run folder under ``out``."""
    recipe = get_recipe(recipe_name, **recipe_options)
    torch.manual_seed(cfg.seed)
    model_options = cfg.hysac_model_options() if recipe.model_kind == "hysac" else {}
    model = create_model(
        recipe.model_kind,
        cfg.backbone_name,
        base,
        lora=cfg.fine_tune_lora,
        device=cfg.device,
        **model_options,
    )
    # 'safety' scores the root-distance ordering: HySAC's; the Euclidean fine-tunes select on recall
    select = cfg.select if cfg.select != "safety" or recipe.model_kind == "hysac" else "recall"
    config = cfg.train_config(str(out / "runs" / recipe.name), select=select)
    return train(model, train_set, recipe, config, val_data=val_set)


#: the fine-tuned models of the demo: report name -> recipe
FINE_TUNES = {"Safe-CLIP": "safeclip", "SafeR-CLIP": "safer-clip", "HySAC": "hysac"}


def _jobs(cfg: DemoConfig) -> list[tuple[str, str, dict]]:
    """(report name, recipe, recipe options) of each fine-tune."""
    return [
        (
            name,
            recipe,
            cfg.hysac_options() if recipe == "hysac" else {},
        )
        for name, recipe in FINE_TUNES.items()
    ]


def fine_tune_workers(cfg: DemoConfig, threads: int | None = None) -> int:
    """How many fine-tunes run at once: ``cfg.workers``, or for 0 all of them on a CPU with two or
    more threads (the tiny model's steps are too small to use two threads well: 1.5x, measured)."""
    if cfg.workers < 0:
        raise ValueError(f"workers must be >= 0, got {cfg.workers}")
    if cfg.workers:
        return min(cfg.workers, len(FINE_TUNES))
    threads = torch.get_num_threads() if threads is None else threads
    return len(FINE_TUNES) if torch.device(cfg.device).type == "cpu" and threads >= 2 else 1


def _fine_tune_job(job: tuple) -> tuple[TrainResult, float]:
    """One fine-tune in a worker process: trains, saves the checkpoint, returns the result with the
    checkpoint's path in place of the model (loaded back by the parent) and the seconds it took."""
    cfg, recipe, base, train_set, val_set, out, options, threads = job
    torch.set_num_threads(threads)
    # a log line per epoch, tagged with the recipe (bars of three processes would overwrite each other)
    if cfg.progress:
        os.environ["HYSAFE_PROGRESS"] = "log"
        logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s %(name)s [{recipe}]: %(message)s")
        progress_logger.setLevel(logging.INFO)
    t = time.time()
    res = fine_tune(cfg, recipe, base, train_set, val_set, out, **options)
    path = save_model(res.model, out / "checkpoints" / f"{recipe}.safetensors", bounds=res.bounds)
    return replace(res, model=path), time.time() - t


def _fine_tune_all(
    cfg: DemoConfig, base: str, train_set, val_set, out: Path, timings: dict
) -> dict[str, TrainResult]:
    workers, results = fine_tune_workers(cfg), {}
    if workers == 1:
        for name, recipe, options in _jobs(cfg):
            t = time.time()
            results[name] = fine_tune(cfg, recipe, base, train_set, val_set, out, **options)
            record_stage(timings, f"fine-tune {name}", time.time() - t, results[name])
        return results
    import concurrent.futures
    import multiprocessing

    threads = max(1, torch.get_num_threads() // workers)
    report = progress_logger.info if cfg.progress else logger.info
    report(
        "fine-tuning %s at once, in %d processes of %d thread(s) each",
        ", ".join(FINE_TUNES),
        workers,
        threads,
    )
    t = time.time()
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        jobs = {
            name: pool.submit(_fine_tune_job, (cfg, recipe, base, train_set, val_set, out, options, threads))
            for name, recipe, options in _jobs(cfg)
        }
        for name, job in jobs.items():
            res, seconds = job.result()
            results[name] = replace(res, model=load_model(res.model))
            record_stage(timings, f"fine-tune {name}", seconds, res)
            report("fine-tuned %s in %.0f s", name, seconds)
    timings["fine-tunes (wall, in parallel)"] = time.time() - t
    return results


def _save_checkpoints(results: dict[str, TrainResult], out: Path) -> dict[str, Path]:
    paths = {}
    for name, res in results.items():
        paths[FINE_TUNES[name]] = save_model(
            res.model, out / "checkpoints" / f"{FINE_TUNES[name]}.safetensors", bounds=res.bounds
        )
    hysac = results["HySAC"]
    paths["hysac-merged"] = save_model(
        hysac.model, out / "checkpoints" / "hysac-merged.safetensors", merged=True, bounds=hysac.bounds
    )
    return paths


class DemoIncomplete(RuntimeError):
    """A stage after the training failed; the checkpoints and training runs are kept."""


def _write_config(cfg: DemoConfig, out: Path) -> None:
    """``demo_config.json`` first of all, so that even an unfinished report says how it was made."""
    (out / "demo_config.json").write_text(json.dumps(cfg.record(), indent=2, default=str))


def run_demo(cfg: DemoConfig | None = None) -> DemoResult:
    """Run the pipeline (default settings: ``DemoConfig()``), write the report folder and return
    what it holds."""
    cfg = DemoConfig() if cfg is None else cfg
    fine_tune_workers(cfg)  # a bad --workers fails here, not after the pretraining
    check_demo_requirements()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    check_report_folder(cfg, out)
    check_pretrained_source(cfg)
    t_all = t = time.time()
    # preprocess and tokenizer; built (with the given weights) before the report folder, so that a bad
    # --model, --text-tower or --pretrained fails without leaving a folder behind
    probe = create_model("clip", cfg.backbone_name, cfg.pretrained, lora=None, device=cfg.device)
    for folder in ("plots", "checkpoints"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _write_config(cfg, out)
    timings = StageTimes()
    train_set, val_set, test_set = demo_datasets(cfg, probe, out)
    del probe  # its weights only checked --pretrained: not held through the training
    timings["data"] = time.time() - t
    base = pretrained_backbone(cfg, train_set, val_set, out, timings)
    results = _fine_tune_all(cfg, base, train_set, val_set, out, timings)
    models = {
        "CLIP": create_model("clip", cfg.backbone_name, base, lora=None, device=cfg.device),
        **{n: r.model for n, r in results.items()},
    }
    checkpoints = _save_checkpoints(results, out)
    try:
        return _evaluate_and_report(
            cfg, out, base, models, results, checkpoints, (train_set, val_set, test_set), timings, t_all
        )
    except Exception as e:
        raise DemoIncomplete(
            f"the demo's report failed after the training ({type(e).__name__}: "
            f"{e}); the trained models are kept in "
            f"{out / 'checkpoints'} and {out / 'runs'}: re-run the same command to finish the report "
            "(finished trainings are reused, not repeated)"
        ) from e


def _evaluate_and_report(
    cfg: DemoConfig, out: Path, base: str, models, results, checkpoints, splits, timings, t_all
) -> DemoResult:
    """Everything after the training: comparison, safety checks, plots, indexes, the report."""
    train_set, val_set, test_set = splits
    t = time.time()
    comparison = compare_models(models, test_set, val_set, traversal=cfg.traversal, train=train_set)
    paths = comparison.save(out)
    distances = safety_bounds(models["HySAC"], test_set)
    timings["evaluate"] = time.time() - t
    t = time.time()
    ceiling = image_ceiling_stage(cfg, base, models["HySAC"], splits, distances, out)
    if ceiling is not None:
        timings["image ceiling"] = time.time() - t
    checks = safety_checks(comparison, distances, image_ceiling=ceiling)
    t = time.time()
    if language_stage(cfg, models, splits, out) is not None:
        timings["text classifiers"] = time.time() - t
    t = time.time()
    emb = {name: embed_dataset(m, test_set) for name, m in models.items()}
    plots = write_plots(models, emb, comparison, cfg.traversal, out / "plots")
    timings["plots"] = time.time() - t
    t = time.time()
    specs = {
        "CLIP": {
            "clip": {
                "model": cfg.backbone_name,
                "pretrained": str(Path(base).resolve()) if Path(base).exists() else base,
            }
        },
        **{name: {"checkpoint": str(checkpoints[recipe].resolve())} for name, recipe in FINE_TUNES.items()},
    }
    plots |= write_comparison_page(models, specs, test_set.rows, cfg.traversal, out)
    timings["comparison page"] = time.time() - t
    timings["total"] = time.time() - t_all
    report = write_report(
        out,
        cfg,
        comparison,
        results,
        distances,
        checks,
        timings,
        plots,
        paths,
        (len(train_set), len(val_set), len(test_set)),
        note=context_note(splits),
    )
    return DemoResult(report, comparison, results["HySAC"].bounds, timings, checkpoints, plots, checks)
