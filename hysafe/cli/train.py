"""Training commands: ``train`` (a recipe on a manifest, or a feature model on cached features) and
``embed`` (cache frozen-encoder features). The options of ``train`` are generated from
``TrainConfig``/``LoraConfig``/``ConeConfig`` fields (:mod:`.options`), so their defaults live only
in those dataclasses.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import partial

from .options import SPLITS, add_options, manifest_dataset, options_to_kwargs, positive_int

logger = logging.getLogger(__name__)


def _named_errors(build, *args, **options):
    """``build(*args, **options)``, its ValueError naming the option of the setting it refuses
    (``--rank-weight: HySAC rank_weight must be ...``)."""
    try:
        return build(*args, **options)
    except ValueError as err:
        named = sorted((k for k in options if k in str(err)), key=len)
        if not named:
            raise
        raise ValueError(f"--{named[-1].replace('_', '-')}: {err}") from None


def cmd_train(args) -> int:
    from hysafe.losses import ConeConfig

    from ..models.backbone import LoraConfig
    from ..models.safety_model import create_feature_model, create_model
    from ..training import TrainConfig, train
    from ..training.loop import seed_everything
    from ..training.recipes import HYSAC_TERM_OPTIONS, RECIPE_OPTIONS, get_recipe

    named = (*RECIPE_OPTIONS["safer-clip"], *HYSAC_TERM_OPTIONS)
    recipe_options = options_to_kwargs(args, ConeConfig) | {
        k: getattr(args, k) for k in named if hasattr(args, k)
    }
    recipe = _named_errors(get_recipe, args.objective, **recipe_options)
    cfg = TrainConfig(**options_to_kwargs(args, TrainConfig))
    device = cfg.device or "cpu"
    seed_everything(cfg.seed)  # before the model exists: its LoRA init is part of the run
    if args.features:
        data, val_data = _feature_splits(args, cfg.seed)
        model = create_feature_model(recipe.model_kind, *data.dims, device=device)
    elif args.data:
        lora = LoraConfig(**options_to_kwargs(args, LoraConfig, prefix="lora-"))
        radius = {"text_radius": args.text_radius} if hasattr(args, "text_radius") else {}
        kind = recipe.model_kind
        build = partial(create_model, kind, args.model, args.pretrained, lora=lora, device=device)
        model = _named_errors(build, **radius)  # only --text-radius is named in its errors
        data, val_data = args.data, None
    else:
        raise ValueError("train needs --data MANIFEST (or --features FILE for the head strategy)")
    res = train(model, data, recipe, cfg, val_data=val_data)
    print(
        json.dumps(
            {
                "steps": res.steps,
                "seconds": round(res.seconds, 1),
                "best_validation_score": res.best_score,
                "best_checkpoint": str(res.best_checkpoint),
                "bounds": res.bounds,
            },
            indent=2,
        )
    )
    return 0


def _feature_splits(args, seed: int):
    """Training and validation feature sets: ``--val-features``, or a held-out share of ``--features``
    (never training rows: validation picks the best weights and fits the safety bounds)."""
    from ..models.features import FeatureDataset

    data = FeatureDataset.load(args.features)
    if args.val_features:
        val = FeatureDataset.load(args.val_features)
        if val.dims != data.dims:
            raise ValueError(
                f"--val-features {args.val_features} has dims {val.dims}, "
                f"--features {args.features} has {data.dims}"
            )
        return data, val
    data, val = data.split_holdout(args.val_fraction, seed=seed)
    logger.info("validating on %d held-out feature rows, training on the other %d", len(val), len(data))
    return data, val


def cmd_embed(args) -> int:
    from ..models.checkpoint import load_model
    from ..models.features import cache_features
    from ..models.safety_model import create_model

    model = (
        load_model(args.checkpoint)
        if args.checkpoint
        else create_model("clip", args.model, args.pretrained, device=args.device)
    )
    path = cache_features(
        model,
        manifest_dataset(model, args.data, args.split),
        args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    print(f"features: {path}")
    return 0


def args_train(p) -> None:
    from hysafe.losses import ConeConfig

    from ..models.backbone import LoraConfig
    from ..training import TrainConfig
    from ..training.recipes import RECIPES

    p.add_argument(
        "--objective",
        default="hysac",
        choices=[r for r in RECIPES if r != "clip-pretrain"],
        help="training recipe",
    )
    p.add_argument("--data", metavar="MANIFEST", help="quadruplet manifest (train + validation splits)")
    p.add_argument(
        "--features", metavar="FILE", help="cached features (hysafe embed): train projections over them"
    )
    p.add_argument(
        "--val-features",
        metavar="FILE",
        help="cached features of a validation split (hysafe embed --split validation)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="without --val-features: share of --features rows held out for validation",
    )
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name")
    p.add_argument("--pretrained", help="open_clip tag or local checkpoint")
    add_options(p, TrainConfig, required=("output_dir",))
    add_options(p, LoraConfig, prefix="lora-")
    add_options(p, ConeConfig)
    _args_hysac_terms(p)
    _args_safer_clip(p)


def _args_hysac_terms(p) -> None:
    """hysafe's named HySAC options (absent unless given: the published objective and model)."""
    from ..models.text_radius import TEXT_RADII

    p.add_argument(
        "--safety-cones",
        action="store_true",
        default=argparse.SUPPRESS,
        help="hysac: add the entailments 'T entails T*' and 'V entails V*' (hysafe's option)",
    )
    p.add_argument(
        "--order-weight",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac: weight of the root-order hinges T < V < T* < V* (default 0: off, as published)",
    )
    p.add_argument(
        "--order-margin",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac: margin of the root-order hinges on the log of the distance (default 0.1)",
    )
    p.add_argument(
        "--rank-weight",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac: weight of the root-rank hinges, every T in a batch nearer the root than every V, "
        "V than T*, T* than V* (default 0: off)",
    )
    p.add_argument(
        "--safety-rank-weight",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac: weight of the root-rank hinges within each modality, every T in a batch nearer "
        "the root than every T*, V than V* (default 0: off)",
    )
    p.add_argument(
        "--text-anchor",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac with a Hugging Face text tower: weight of the cosine distance of the text model's "
        "sentence embeddings to its own before LoRA (default 0: off)",
    )
    p.add_argument(
        "--text-radius",
        choices=TEXT_RADII,
        default=argparse.SUPPRESS,
        help="hysac with a Hugging Face text tower: the text embeddings' distance to the root, 'norm' "
        "(as published: the norm of the projected features), 'linear' (hysafe's option: a linear read "
        "of the text model's sentence embedding on the log scale), 'linear-frozen' (the same read of "
        "the sentence embedding before LoRA) or 'probe' (a read of its direction, refitted as a logistic "
        "probe after training, C chosen on the validation split); default: norm",
    )
    p.add_argument(
        "--root-anchor",
        type=float,
        default=argparse.SUPPRESS,
        help="hysac with a Hugging Face text tower: weight of the gap between each caption's log distance "
        "to the root and the one the text model before LoRA gives it (default 0: off)",
    )


def _args_safer_clip(p) -> None:
    """The SafeR-CLIP recipe's options (absent unless given: the recipe's defaults apply)."""
    p.add_argument(
        "--redirection-weight",
        type=float,
        default=argparse.SUPPRESS,
        help="safer-clip: weight of the redirection terms (default 0.5)",
    )
    p.add_argument(
        "--image-target",
        choices=("proximal", "paired"),
        default=argparse.SUPPRESS,
        help="safer-clip: frozen image the text side is redirected to (default "
        "paired: the row's own safe image)",
    )
    p.add_argument(
        "--redirection-scale",
        type=float,
        default=argparse.SUPPRESS,
        help="safer-clip: temperature of the redirection terms (default: the "
        "logit scale, 100; 1 is the poster's formula as written)",
    )
    p.add_argument(
        "--pair-quantile",
        type=float,
        default=argparse.SUPPRESS,
        help="safer-clip: the unsafe caption's own safe pair is its target when "
        "it ranks within this top share of safe "
        "captions (default 0: always the nearest, the poster's rule)",
    )


def args_embed(p) -> None:
    p.add_argument("--data", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--checkpoint", help="a hysafe checkpoint (default: plain CLIP from --model/--pretrained)")
    p.add_argument("--model", default="hysafe-tiny")
    p.add_argument("--pretrained")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
