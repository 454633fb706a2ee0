"""``hysafe demo``: the whole pipeline on the embedded synthetic world (or your own data).

generate the world -> pretrain a tiny CLIP on safe and unsafe pairs -> fine-tune Safe-CLIP and
HySAC (LoRA) -> compare CLIP, Safe-CLIP and HySAC (retrieval with and without traversal, NSFW
classification) -> write a report folder with Markdown, JSON/CSV metrics, plots and checkpoints.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backbone import TINY_MODEL, LoraConfig
from .checkpoint import save_model
from .classifier import NSFWClassifier
from .data import QuadrupletDataset, WorldConfig, generate_world, load_manifest, load_visu
from .embed import embed_dataset
from .evaluation import compare_models, traversal_tau
from .models import create_model
from .plots import plot_poincare_disk, plot_recall_bars, plot_roc_curves, plot_root_distances, plot_traversal
from .pretrain import export_open_clip, pretrain_clip
from .training import TrainConfig, train

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Defaults: the embedded world, tuned to finish in a few minutes on 2 CPU cores."""

    out_dir: str = "hysafe-report"
    data: str = "synthetic"  # "synthetic", "visu", or a manifest path
    world: WorldConfig = field(default_factory=WorldConfig)
    visu_source: str | None = None  # ViSU-Text split files (folder/file) or "hf:aimagelab/ViSU-Text"
    coco_root: str | None = None
    unsafe_root: str | None = None
    model: str = TINY_MODEL
    pretrained: str | None = None  # None with the tiny model: pretrain it here first
    pretrain_epochs: int = 30
    finetune_epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32.0, dropout=0.0))
    min_radius: float = 0.05  # entailment-cone K; the tiny world's embeddings sit close to the root
    traversal: str = "avg"  # tau = mean distance to root of the target safe population
    precision: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    progress: bool = True


def _datasets(cfg: DemoConfig, model, out: Path) -> tuple[QuadrupletDataset, QuadrupletDataset, QuadrupletDataset, object]:
    if cfg.data == "synthetic":
        source = generate_world(out / "world", cfg.world)
        splits = {s: load_manifest(source, split=s) for s in ("train", "validation", "test")}
    elif cfg.data == "visu":
        if cfg.visu_source is None:
            raise ValueError("--data visu needs --visu-root (ViSU-Text split files) or 'hf:aimagelab/ViSU-Text'")
        splits = {s: load_visu(cfg.visu_source, split=s, coco_root=cfg.coco_root, unsafe_root=cfg.unsafe_root, skip_bad_rows=True)
                  for s in ("train", "validation", "test")}
        source = splits["train"]
    else:
        source = cfg.data
        splits = {s: load_manifest(source, split=s) for s in ("train", "validation", "test")}
    make = lambda rows: QuadrupletDataset(rows, preprocess=model.preprocess, tokenizer=model.tokenizer, preload=True)  # noqa: E731
    return make(splits["train"]), make(splits["validation"]), make(splits["test"]), source


def run_demo(cfg: DemoConfig = DemoConfig()) -> Path:
    """Run the pipeline and return the path of ``report.md``."""
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.time()

    # 1. backbone: pretrained weights given, or pretrain the tiny CLIP on the world
    probe = create_model("clip", cfg.model, None, lora=None, device=cfg.device)
    t = time.time()
    train_set, val_set, test_set, source = _datasets(cfg, probe, out)
    timings["data"] = time.time() - t
    base = cfg.pretrained
    if base is None:
        if cfg.model != TINY_MODEL:
            raise ValueError(f"--model {cfg.model} needs --pretrained (a tag or a checkpoint file); only {TINY_MODEL} is pretrained here")
        t = time.time()
        pre = pretrain_clip(train_set, model=cfg.model, val_data=val_set, seed=cfg.seed, config=TrainConfig(
            epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size, lr=2e-3, weight_decay=0.1, warmup_steps=20,
            seed=cfg.seed, progress=cfg.progress, precision=cfg.precision, device=cfg.device))
        base = str(export_open_clip(pre.model, out / "checkpoints" / "clip-pretrained.safetensors"))
        timings["pretrain CLIP"] = time.time() - t
    common = dict(batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress, precision=cfg.precision,
                  device=cfg.device, epochs=cfg.finetune_epochs)

    # 2. the three models
    models = {"CLIP": create_model("clip", cfg.model, base, lora=None, device=cfg.device)}
    t = time.time()
    torch.manual_seed(cfg.seed)
    safe = train(create_model("safeclip", cfg.model, base, lora=cfg.lora, device=cfg.device), train_set, "safeclip",
                 TrainConfig(**common, optimizer="adam", weight_decay=0.0, output_dir=str(out / "runs" / "safeclip")), val_data=val_set)
    timings["fine-tune Safe-CLIP"] = time.time() - t
    t = time.time()
    torch.manual_seed(cfg.seed)
    hysac = train(create_model("hysac", cfg.model, base, lora=cfg.lora, device=cfg.device), train_set, "hysac",
                  TrainConfig(**common, min_radius=cfg.min_radius, output_dir=str(out / "runs" / "hysac")), val_data=val_set)
    timings["fine-tune HySAC"] = time.time() - t
    models["Safe-CLIP"], models["HySAC"] = safe.model, hysac.model
    save_model(safe.model, out / "checkpoints" / "safeclip.safetensors", bounds=safe.bounds)
    save_model(hysac.model, out / "checkpoints" / "hysac.safetensors", bounds=hysac.bounds)
    save_model(hysac.model, out / "checkpoints" / "hysac-merged.safetensors", merged=True, bounds=hysac.bounds)

    # 3. evaluation
    t = time.time()
    comparison = compare_models(models, test_set, val_set, traversal=cfg.traversal)
    paths = comparison.save(out)
    timings["evaluate"] = time.time() - t

    # 4. plots
    t = time.time()
    emb = {name: embed_dataset(m, test_set) for name, m in models.items()}
    plots = _plots(models, emb, comparison, cfg, out / "plots")
    timings["plots"] = time.time() - t
    timings["total"] = time.time() - t_all
    report = _write_report(out, cfg, comparison, hysac, safe, timings, plots, paths, len(train_set), len(val_set), len(test_set))
    return report


def _plots(models, emb, comparison, cfg: DemoConfig, folder: Path) -> dict[str, Path]:
    hy, hy_emb = models["HySAC"], emb["HySAC"]
    files = {
        "distance-to-root distributions": folder / "root_distances.png",
        "HySAC in the Poincare disk": folder / "poincare_disk.png",
        "traversal paths": folder / "traversal.png",
        "ROC curves": folder / "roc_curves.png",
        "recall comparison": folder / "recall_bars.png",
    }
    plot_root_distances({n: (m.space, emb[n]) for n, m in models.items()}, files["distance-to-root distributions"])
    plot_poincare_disk(hy.space, hy_emb, files["HySAC in the Poincare disk"])
    tau = traversal_tau("T*", cfg.traversal, hy)
    # show the queries that need traversal: those whose nearest image is unsafe before moving
    gallery = torch.cat([hy_emb["V"], hy_emb["V*"]])
    first_hit_unsafe = hy.space.similarity(hy_emb["T*"], gallery).argmax(1) >= hy_emb["V"].shape[0]
    order = torch.cat([torch.nonzero(first_hit_unsafe).flatten(), torch.nonzero(~first_hit_unsafe).flatten()])[:8]
    plot_traversal(hy.space, hy_emb["T*"][order], hy_emb["V"], hy_emb["V*"], files["traversal paths"], tau=tau,
                   labels=[f"unsafe text #{int(i)}" for i in order])
    curves = {}
    for name, m in models.items():
        clf = NSFWClassifier.root_distance(m.space) if m.space.name == "lorentz" else NSFWClassifier.concept_similarity(m)
        for mod, (a, b) in {"text": ("T", "T*"), "image": ("V", "V*")}.items():
            scores = torch.cat([clf.score(emb[name][a]), clf.score(emb[name][b])]).numpy()
            labels = np.r_[np.zeros(len(emb[name][a])), np.ones(len(emb[name][b]))]
            curves[f"{name} {clf.name} ({mod})"] = (scores, labels)
    plot_roc_curves(curves, files["ROC curves"])
    plot_recall_bars(comparison, files["recall comparison"])
    import matplotlib.pyplot as plt

    plt.close("all")
    return files


def _write_report(out: Path, cfg, comparison, hysac, safe, timings, plots, paths, n_train, n_val, n_test) -> Path:
    b = hysac.bounds
    order = sorted(b, key=lambda k: b[k]["avg"])
    names = {"S": "safe text", "V": "safe image", "U": "unsafe text", "G": "unsafe image"}
    lines = [
        "# hysafe demo report",
        "",
        f"Data: {cfg.data} ({n_train} train / {n_val} validation / {n_test} test quadruplets); backbone `{cfg.model}`"
        + (f" pretrained from `{cfg.pretrained}`" if cfg.pretrained else " pretrained here on safe and unsafe pairs") + ".",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {cfg.device}.",
        "",
        "## Timings (seconds)",
        "",
        *[f"- {k}: {v:.1f}" for k, v in timings.items()],
        "",
        "## HySAC: distance to the root (validation split)",
        "",
        "| population | mean | 5% | 95% |",
        "|---|---|---|---|",
        *[f"| {names[k]} ({k}) | {b[k]['avg']:.4f} | {b[k]['low_05']:.4f} | {b[k]['up_95']:.4f} |" for k in order],
        "",
        "Order by mean distance: " + " < ".join(names[k] for k in order) + ".",
        "",
        f"Validation recall sum (T->V + V->T, R@1/5/10): Safe-CLIP {safe.best_score:.1f}, HySAC {hysac.best_score:.1f}.",
        "",
        "## Comparison on the test split",
        "",
        comparison.to_markdown(),
        "## Plots",
        "",
        *[f"### {title}\n\n![{title}](plots/{p.name})\n" for title, p in plots.items()],
        "## Files",
        "",
        f"- metrics: `{paths['json'].name}`, `{paths['csv'].name}`; checkpoints in `checkpoints/`; training logs in `runs/*/log.jsonl`.",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "demo_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    logger.info("report written to %s", report)
    return report
