"""The same defaults on every synthetic world: comparison, classifier, population distances and the
safety checks (hysafe.checks), plus HySAC ablations against the defaults.

    python bench/worlds.py --out runs/worlds                          # defaults on shapes, crowd, tint
    python bench/worlds.py --out runs/worlds --variants default abs-K0.05 abs-K0.1 rel-0.3
    python bench/worlds.py --report runs/worlds/results.jsonl --markdown docs/worlds_results.md

Per world the tiny CLIP is pretrained once and Safe-CLIP / SafeR-CLIP are fine-tuned once (cached
under OUT/WORLD/checkpoints); every HySAC variant is fine-tuned from the same CLIP and evaluated
with CLIP, Safe-CLIP and SafeR-CLIP on the world's test split. One JSON line per (world, variant)
goes to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine  # noqa: E402

from hysafe.backbone import LoraConfig  # noqa: E402
from hysafe.checkpoint import load_model, save_model  # noqa: E402
from hysafe.checks import safety_checks  # noqa: E402
from hysafe.demo import DemoConfig, _backbone_source, _datasets, _fine_tune  # noqa: E402
from hysafe.evaluation import compare_models  # noqa: E402
from hysafe.models import create_model  # noqa: E402
from hysafe.training import nearest_safe_targets, safety_bounds  # noqa: E402

#: name -> (DemoConfig overrides, HySAC recipe options): one change each against the defaults
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "abs-K0.05": ({}, {"min_radius": 0.05}),  # v0.1's demo setting
    "abs-K0.1": ({}, {"min_radius": 0.1}),  # the papers' K
    "rel-0.1": ({}, {"radius_ratio": 0.1}),
    "rel-0.3": ({}, {"radius_ratio": 0.3}),
    "rel-0.5": ({}, {"radius_ratio": 0.5}),
    "lr1e-3": ({"lr": 1e-3}, {}),
    "epochs60": ({"finetune_epochs": 60}, {}),
    "lora-alpha16": ({"lora": LoraConfig(r=16, alpha=16.0, dropout=0.0)}, {}),
    "entail0.3": ({}, {"entailment_weight": 0.3}),
}
#: Euclidean models per world: name -> (recipe, recipe options, checkpoint stem); the last is SafeR-CLIP's ablation
EUCLIDEAN = {"Safe-CLIP": ("safeclip", {}, "safeclip"), "SafeR-CLIP": ("safer-clip", {}, "safer-clip"),
             "SafeR-CLIP (paired image)": ("safer-clip", {"image_target": "paired"}, "safer-clip-paired")}


def _euclidean(cfg: DemoConfig, base: str, train, val, out: Path) -> dict:
    models = {}
    for name, (recipe, options, stem) in EUCLIDEAN.items():
        path = out / "checkpoints" / f"{stem}.safetensors"
        if path.is_file():
            models[name] = load_model(path)
        else:
            models[name] = _fine_tune(cfg, recipe, base, train, val, out / stem, **options).model
            save_model(models[name], path)
    return models


def own_pair_share(model, train) -> float:
    """Share of unsafe captions whose proximal safe target (SafeR-CLIP) is their own safe caption."""
    targets = nearest_safe_targets(model, train)
    return sum(int(t == i) for i, t in enumerate(targets)) / len(targets)


def _summary(world: str, variant: str, comparison, distances: dict, checks, seconds: float, model, share: float) -> dict:
    return {"world": world, "variant": variant, "seconds": round(seconds, 1), "scalars": model.scalars(), "proximal_is_own_pair": share,
            "checks": [c.to_dict() for c in checks], "passed": all(c.passed for c in checks), "distances": distances,
            "comparison": json.loads(comparison.to_json())}


def run_world(world: str, variants: list[str], out: Path, base_cfg: DemoConfig, results: Path) -> None:
    folder = out / world
    cfg = replace(base_cfg, data=f"synthetic:{world}", out_dir=str(folder))
    probe = create_model("clip", cfg.model, None, lora=None)
    train, val, test = _datasets(cfg, probe, folder)
    cached = folder / "checkpoints" / "clip-pretrained.safetensors"
    base = str(cached) if cached.is_file() else _backbone_source(cfg, train, val, folder, {})
    models = {"CLIP": create_model("clip", cfg.model, base, lora=None), **_euclidean(cfg, base, train, val, folder)}
    share = own_pair_share(models["Safe-CLIP"], train)
    for variant in variants:
        overrides, recipe_options = VARIANTS[variant]
        vcfg = replace(cfg, **overrides)
        t = time.time()
        hysac = _fine_tune(vcfg, "hysac", base, train, val, folder / variant, **recipe_options)
        seconds = time.time() - t
        comparison = compare_models({**models, "HySAC": hysac.model}, test, val, traversal=vcfg.traversal)
        distances = safety_bounds(hysac.model, test)
        record = _summary(world, variant, comparison, distances, safety_checks(comparison, distances), seconds, hysac.model, share)
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{world:7s} {variant:14s} passed={record['passed']} " + "; ".join(
            f"{c.name}: {'ok' if c.passed else 'NO'} ({c.detail})" for c in safety_checks(comparison, distances)), flush=True)


def markdown(records: list[dict]) -> str:
    """One table of checks per (world, variant), then the distances."""
    lines = ["| world | variant | " + " | ".join(c["name"] for c in records[0]["checks"]) + " |",
             "|---|---|" + "---|" * len(records[0]["checks"])]
    for r in records:
        lines.append(f"| {r['world']} | {r['variant']} | " + " | ".join(
            ("ok: " if c["passed"] else "**no**: ") + c["detail"] for c in r["checks"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/worlds")
    p.add_argument("--worlds", nargs="+", default=["shapes", "crowd", "tint"])
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="only render this results.jsonl as Markdown")
    p.add_argument("--markdown", help="write the Markdown table here (default: print it)")
    args = p.parse_args(argv)
    if args.report is None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "machine.json").write_text(json.dumps({**machine(), "command": " ".join(sys.argv)}, indent=2))
        torch.manual_seed(args.seed)
        for world in args.worlds:
            run_world(world, args.variants, out, DemoConfig(progress=False, seed=args.seed), out / "results.jsonl")
    results = Path(args.report) if args.report else Path(args.out) / "results.jsonl"
    table = markdown([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
    if args.markdown:
        Path(args.markdown).write_text(table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
