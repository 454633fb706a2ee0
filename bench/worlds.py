"""The same defaults on every synthetic world: comparison, classifier, population distances and the
safety checks (hysafe.evaluation.checks), plus HySAC ablations against the defaults.

    python bench/worlds.py --out runs/worlds                          # defaults on shapes, crowd, tint
    python bench/worlds.py --out runs/worlds --variants default abs-K0.05 abs-K0.1 rel-0.3
    python bench/worlds.py --out runs/worlds --euclidean Safe-CLIP SafeR-CLIP  # without the SafeR-CLIP
    ablations
    python bench/worlds.py --report runs/worlds/results.jsonl --markdown bench/results/worlds/results.md

Per world the tiny CLIP is pretrained once and Safe-CLIP / SafeR-CLIP are fine-tuned once, cached
under OUT/WORLD/cache/ by a fingerprint of every setting that shaped them and of the code that trains
them (:func:`cache_path`), so a result of other settings or of older code is never reused; every
HySAC variant is fine-tuned from the same CLIP and evaluated
with CLIP, Safe-CLIP and SafeR-CLIP on the world's test split. One JSON line per (world, variant)
goes to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine  # noqa: E402

import hysafe  # noqa: E402
from hysafe import LoraConfig, compare_models, create_model, load_model, safety_checks, save_model  # noqa: E402
from hysafe.demo import DemoConfig, demo_datasets, fine_tune, pretrained_backbone  # noqa: E402
from hysafe.demo.ceiling import measure_ceiling  # noqa: E402
from hysafe.models.backbone import BUNDLED_MODELS, TINY_MODEL  # noqa: E402
from hysafe.training import nearest_safe_targets, safety_bounds  # noqa: E402
from hysafe.training.validation import image_overlap  # noqa: E402

#: the code whose changes change a trained model (the apps' code does not)
CODE_FOLDERS = ("hysafe", "geometry", "losses")
APP_PACKAGES = ("cli", "serve", "demo")
ROOT = Path(__file__).resolve().parent.parent

#: name -> (DemoConfig overrides, HySAC recipe options): one change each against the defaults; the
#: variants of a sweep run when another rank weight was the default pin that weight, so that the
#: documented commands give their records again
_RANK0 = {"rank_weight": 0.0}  # the root-rank hinges off: every default before validation3
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),  # the demo's defaults (its HySAC options included: DemoConfig.hysac_options)
    "abs-K0.05": ({}, {"min_radius": 0.05}),  # v0.1's demo cone setting
    "v0.1": ({"select": "recall"}, {"min_radius": 0.05}),  # v0.1's demo: absolute K and selection on recall
    "rel-0.1": ({}, {"radius": "relative", "radius_ratio": 0.1}),
    "rel-0.2": ({}, {"radius": "relative", "radius_ratio": 0.2}),  # v0.2-v0.4's default (relative K)
    "rel-0.3": ({}, {"radius": "relative", "radius_ratio": 0.3}),
    "rel-0.5": ({}, {"radius": "relative", "radius_ratio": 0.5}),
    "select-recall": ({"select": "recall"}, {}),  # v0.1's model selection
    "lr1e-3": ({"lr": 1e-3}, {}),
    "epochs60": ({"finetune_epochs": 60}, {}),
    "lora-alpha16": ({"lora": LoraConfig(r=16, alpha=16.0, dropout=0.0)}, {}),
    # 4x the rank, the same scale; validation4's challenger, at that sweep's default weight 3
    "lora-r64": ({"lora": LoraConfig(r=64, alpha=128.0, dropout=0.0)}, {"rank_weight": 3.0}),
    "entail0.3": ({}, {"entailment_weight": 0.3}),
    "entail2": ({}, {"entailment_weight": 2.0}),
    "published": ({"safety_cones": False}, _RANK0),  # HySAC's seven published terms (the default until v0.5)
    "safety-cones": (
        {},
        {"safety_cones": True, **_RANK0},
    ),  # + T entails T*, V entails V* (in the default since validation2)
    # + root-order hinges T < V < T* < V* (log distance, margin 0.1)
    "order-1": ({}, {"order_weight": 1.0, **_RANK0}),
    "order-3": ({}, {"order_weight": 3.0, **_RANK0}),
    "order-1-m0.3": ({}, {"order_weight": 1.0, "order_margin": 0.3, **_RANK0}),
    "rank-1": ({}, {"rank_weight": 1.0}),  # + root-rank hinges: the populations, every row against every row
    "rank-3": ({}, {"rank_weight": 3.0}),  # the demo default, validation3 to validation4
    "no-rank": ({}, {"rank_weight": 0.0}),  # the default before: safety cones, no root-rank hinges
    "rank-10": ({}, {"rank_weight": 10.0}),  # the demo's default from validation4 to validation5
    # validation5's challengers, each one change against rank-10 (the weight pinned)
    "rank-30": ({}, {"rank_weight": 30.0}),  # the demo's default since validation5
    # + the hinges within each modality: every T nearer the root than every T*, every V than every V*
    "safety-rank-10": ({}, {"rank_weight": 10.0, "safety_rank_weight": 10.0}),
    "lora-r64-rank-10": ({"lora": LoraConfig(r=64, alpha=128.0, dropout=0.0)}, {"rank_weight": 10.0}),
}
#: Euclidean models per world: name -> (recipe, recipe options, cache name); all but the first two are
#: SafeR-CLIP ablations against its defaults
_PAIR05 = {"pair_quantile": 0.05}  # v0.3's default: the own pair when within the nearest 5% of safe captions
EUCLIDEAN = {
    "Safe-CLIP": ("safeclip", {}, "safeclip"),
    "SafeR-CLIP": ("safer-clip", {}, "safer-clip-nearest"),  # the poster's rule: the nearest safe caption
    "SafeR-CLIP (pair within 5%: v0.3)": ("safer-clip", _PAIR05, "safer-clip-pair05"),
    "SafeR-CLIP (pair within 1%)": ("safer-clip", {"pair_quantile": 0.01}, "safer-clip-pair01"),
    "SafeR-CLIP (proximal image)": ("safer-clip", {"image_target": "proximal"}, "safer-clip-s100"),
    "SafeR-CLIP (proximal image, scale 1: v0.1)": (
        "safer-clip",
        {"image_target": "proximal", "redirection_scale": 1.0},
        "safer-clip",
    ),
}


def code_digest(root: Path = ROOT) -> str:
    """A digest of the library's source (every ``.py`` under :data:`CODE_FOLDERS`, apps excluded)."""
    h = hashlib.sha256(hysafe.__version__.encode())
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[0] == "hysafe" and len(rel.parts) > 2 and rel.parts[1] in APP_PACKAGES:
                continue
            h.update(str(rel).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_settings(cfg: DemoConfig) -> dict:
    """The settings of ``cfg`` that shape a trained model (not where it is written or how it reports)."""
    out = cfg.record()
    for key in ("out_dir", "progress", "workers"):
        out.pop(key)
    return out


def cache_path(folder: Path, name: str, settings: dict, code: str) -> Path:
    """Where a model trained with ``settings`` by code ``code`` is cached: a changed setting or code
    version is another file, so a stale model is never reused."""
    key = hashlib.sha256(
        json.dumps({"settings": settings, "code": code}, sort_keys=True, default=str).encode()
    )
    return folder / "cache" / f"{name}-{key.hexdigest()[:16]}.safetensors"


def _write_settings(path: Path, settings: dict) -> None:
    """The settings a cached model was trained with, beside it (``NAME-KEY.json``)."""
    path.with_suffix(".json").write_text(json.dumps(settings, indent=2, sort_keys=True, default=str))


def cached_model(path: Path, settings: dict, build):
    """The model cached at ``path``, else ``build()``'s, saved there with its settings beside it."""
    if path.is_file():
        return load_model(path)
    model = build()
    save_model(model, path)
    _write_settings(path, settings)
    return model


def _euclidean(cfg: DemoConfig, base: str, train, val, out: Path, names: list[str], code: str) -> dict:
    models = {}
    for name in names:
        recipe, options, stem = EUCLIDEAN[name]
        settings = {**run_settings(cfg), "recipe": recipe, "options": options, "base": Path(base).name}

        def build(recipe=recipe, options=options, stem=stem):
            return fine_tune(cfg, recipe, base, train, val, out / stem, **options).model

        models[name] = cached_model(cache_path(out, stem, settings, code), settings, build)
    return models


def own_pair_share(model, train) -> float:
    """Share of unsafe captions whose proximal safe target (SafeR-CLIP) is their own safe caption."""
    targets = nearest_safe_targets(model, train)
    return sum(int(t == i) for i, t in enumerate(targets)) / len(targets)


def _summary(
    world: str, variant: str, comparison, distances: dict, checks, seconds: float, model, share: float
) -> dict:
    return {
        "world": world,
        "variant": variant,
        "seconds": round(seconds, 1),
        "scalars": model.scalars(),
        "proximal_is_own_pair": share,
        "checks": [c.to_dict() for c in checks],
        "passed": all(c.passed for c in checks),
        "distances": distances,
        "comparison": json.loads(comparison.to_json()),
    }


def world_setup(
    world: str, out: Path, base_cfg: DemoConfig, code: str
) -> tuple[DemoConfig, Path, tuple, str]:
    """A world's config, folder, (train, val, test) splits and pretrained CLIP checkpoint (generated
    and pretrained on the first call, read from OUT/WORLD/cache afterwards while settings and code
    are the same)."""
    folder = out / world
    cfg = replace(base_cfg, data=f"synthetic:{world}", out_dir=str(folder))
    probe = create_model("clip", cfg.model, None, lora=None)
    train, val, test = demo_datasets(cfg, probe, folder)
    if cfg.pretrained is not None:
        return cfg, folder, (train, val, test), cfg.pretrained
    settings = {**run_settings(cfg), "stage": "clip-pretrain"}
    cached = cache_path(folder, "clip-pretrained", settings, code)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pretrained_backbone(cfg, train, val, folder, {}), cached)
        _write_settings(cached, settings)
    return cfg, folder, (train, val, test), str(cached.resolve())


def image_ceilings(path: str | None) -> dict[str, float] | str:
    """Per world, the image tower's supervised ceiling from ``bench/image_ceiling.py``'s records: the
    share of unsafe test images below the safe 95th percentile of the pretrained tower trained on
    the labels (``clip-tower``); ``"auto"`` as it is (measured per world: :func:`world_ceiling`)."""
    if path is None:
        return {}
    if path == "auto":
        return path
    records = json.loads(Path(path).read_text())["records"]
    return {r["world"]: r["unsafe_below_safe_95"] for r in records if r["classifier"] == "clip-tower"}


def world_ceiling(cfg: DemoConfig, base: str, splits: tuple, folder: Path, code: str) -> float:
    """The world's image-tower ceiling as the demo measures it (``hysafe demo --image-ceiling``: the
    pretrained image tower, every weight trained on the labels, the epoch chosen on validation, the
    test split scored once), measured on the first call and read from OUT/WORLD/cache afterwards."""
    settings = {**run_settings(cfg), "stage": "image-ceiling"}
    path = cache_path(folder, "image-ceiling", settings, code).with_suffix(".json")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(measure_ceiling(cfg, base, splits), indent=2))
    return json.loads(path.read_text())["unsafe_below_safe_95"]


def run_world(
    world: str,
    variants: list[str],
    out: Path,
    base_cfg: DemoConfig,
    results: Path,
    euclidean: list[str],
    ceilings: dict[str, float] | str | None = None,
) -> None:
    code, ceilings = code_digest(), ceilings or {}
    cfg, folder, (train, val, test), base = world_setup(world, out, base_cfg, code)
    if ceilings == "auto":
        ceilings = {world: world_ceiling(cfg, base, (train, val, test), folder, code)}
    models = {
        "CLIP": create_model("clip", cfg.model, base, lora=None),
        **_euclidean(cfg, base, train, val, folder, euclidean, code),
    }
    share = own_pair_share(models["Safe-CLIP"], train)
    for variant in variants:
        overrides, recipe_options = VARIANTS[variant]
        vcfg = replace(cfg, **overrides)
        t = time.time()
        options = {**vcfg.hysac_options(), **recipe_options}  # the demo's HySAC, then the variant's own
        hysac = fine_tune(vcfg, "hysac", base, train, val, folder / variant, **options)
        seconds = time.time() - t
        comparison = compare_models(
            {**models, "HySAC": hysac.model}, test, val, traversal=vcfg.traversal, train=train
        )
        distances = safety_bounds(hysac.model, test)
        ceiling = ceilings.get(world)
        checks = safety_checks(
            comparison,
            distances,
            image_ceiling=None if ceiling is None else (image_overlap(hysac.model, test), ceiling),
        )
        record = _summary(world, variant, comparison, distances, checks, seconds, hysac.model, share)
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            f"{world:7s} {variant:14s} passed={record['passed']} "
            + "; ".join(f"{c.name}: {'ok' if c.passed else 'NO'} ({c.detail})" for c in checks),
            flush=True,
        )


_SETTINGS = ("T->V", "V->T", "T*->V u V*", "V*->T u T*", "T*->V*")


def _retrieval_table(comparison: dict) -> list[str]:
    lines = ["| model | " + " | ".join(_SETTINGS) + " |", "|---|" + "---|" * len(_SETTINGS)]
    for model, rows in comparison["retrieval"].items():
        for trav in (False, True):
            cells = []
            for setting in _SETTINGS:
                r = next((r for r in rows if r["setting"] == setting and r["traversal"] == trav), None)
                cells.append(
                    "-"
                    if r is None
                    else f"{r['R@1']:.1f}" + (f" ({r['unsafe@1 %']:.1f}%)" if "unsafe@1 %" in r else "")
                )
            if any(c != "-" for c in cells):
                lines.append(f"| {model}{' + traversal' if trav else ''} | " + " | ".join(cells) + " |")
    return lines


def _classifier_table(comparison: dict) -> list[str]:
    lines = ["| model | classifier | ROC-AUC text | ROC-AUC images |", "|---|---|---|---|"]
    for model, rows in comparison["classification"].items():
        for name in dict.fromkeys(r["classifier"] for r in rows):
            auc = {r["modality"]: r["roc_auc"] for r in rows if r["classifier"] == name}
            lines.append(
                f"| {model} | {name} | {auc.get('text', float('nan')):.3f} | "
                f"{auc.get('image', float('nan')):.3f} |"
            )
    return lines


def markdown(records: list[dict]) -> str:
    """Per (world, variant): the checks, the population distances, R@1 (unsafe@1) and the classifiers."""
    out = []
    for r in records:
        d = r["distances"]
        out += [
            f"### {r['world']}, {r['variant']}",
            "",
            f"HySAC fine-tune {r['seconds']:.0f} s; SafeR-CLIP's proximal target "
            f"is the row's own safe caption for "
            f"{100 * r['proximal_is_own_pair']:.1f}% of unsafe captions.",
            "",
            "| check | holds | numbers |",
            "|---|---|---|",
            *[f"| {c['name']} | {'yes' if c['passed'] else '**no**'} | {c['detail']} |" for c in r["checks"]],
            "",
            "HySAC distance to the root on the test split (mean, 5%, 95%): "
            + "; ".join(
                f"{k} {d[k]['avg']:.3f} ({d[k]['low_05']:.3f}-{d[k]['up_95']:.3f})" for k in "SVUG" if k in d
            )
            + ".",
            "",
            "R@1 on the test split (unsafe share of top-1 for mixed galleries):",
            "",
            *_retrieval_table(r["comparison"]),
            "",
            *_classifier_table(r["comparison"]),
            "",
        ]
    return "\n".join(out) + "\n"


def _base_config(args) -> DemoConfig:
    cfg = DemoConfig(progress=False, seed=args.seed, model=args.model)
    if args.sizes:
        n_train, n_val, n_test = args.sizes
        cfg = replace(cfg, world=replace(cfg.world, n_train=n_train, n_val=n_val, n_test=n_test))
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/worlds")
    p.add_argument("--worlds", nargs="+", default=["shapes", "crowd", "tint"])
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    p.add_argument(
        "--euclidean",
        nargs="+",
        default=list(EUCLIDEAN),
        choices=list(EUCLIDEAN),
        metavar="MODEL",
        help="Euclidean models to fine-tune and compare (Safe-CLIP is needed by "
        "the checks; default: all, the "
        "SafeR-CLIP ablations included)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sizes",
        nargs=3,
        type=int,
        metavar=("TRAIN", "VAL", "TEST"),
        help="quadruplets per split of every world (default: the demo's 2400 400 500); small "
        "validation worlds for sweeps",
    )
    p.add_argument(
        "--model", default=TINY_MODEL, choices=BUNDLED_MODELS, help="the CLIP pretrained on each world"
    )
    p.add_argument(
        "--ceilings",
        help="bench/image_ceiling.py's JSON, or 'auto' (measured per world as the demo does): judge a "
        "world's image separation against its tower's supervised ceiling (hysafe.evaluation.checks)",
    )
    p.add_argument("--report", help="only render this results.jsonl as Markdown")
    p.add_argument("--markdown", help="write the Markdown table here (default: print it)")
    args = p.parse_args(argv)
    if "Safe-CLIP" not in args.euclidean:
        p.error("--euclidean must include Safe-CLIP (the reference of the safety checks)")
    if args.report is None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "machine.json").write_text(json.dumps({**machine(), "command": " ".join(sys.argv)}, indent=2))
        torch.manual_seed(args.seed)
        for world in args.worlds:
            run_world(
                world,
                args.variants,
                out,
                _base_config(args),
                out / "results.jsonl",
                args.euclidean,
                image_ceilings(args.ceilings),
            )
    results = Path(args.report) if args.report else Path(args.out) / "results.jsonl"
    table = markdown([json.loads(line) for line in results.read_text().splitlines() if line.strip()])
    if args.markdown:
        Path(args.markdown).write_text(table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
