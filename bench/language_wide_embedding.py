"""Validation only: HySAC attn-10 with a text tower on a tiny CLIP whose embedding is wider than 64-d.

The tiny CLIP's config with ``embed_dim`` replaced, registered for this run only; pretraining and
HySAC's fine-tune as in bench/language.py; the validation split is read, the test split never.

    python bench/language_wide_embedding.py --text-tower "$minilm" --out runs/language-r2/wide256 --dim 256
    # record: bench/results/language/wide256_validation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from language import VARIANTS, run_variant  # noqa: E402

import hysafe.demo.pipeline as pipeline  # noqa: E402
import hysafe.demo.preflight as preflight  # noqa: E402
from hysafe.demo import DemoConfig  # noqa: E402
from hysafe.models.registry import register_model_config, register_model_configs  # noqa: E402
from hysafe.models.safety_model import create_model  # noqa: E402

TINY_CONFIG = BENCH.parent / "hysafe" / "models" / "configs" / "hysafe-tiny.json"


def wide_tiny(dim: int) -> str:
    """Register the tiny CLIP with a ``dim``-wide embedding (this process only); its name."""
    register_model_configs()
    name = f"hysafe-tiny-e{dim}"
    register_model_config(name, {**json.loads(TINY_CONFIG.read_text()), "embed_dim": dim})
    preflight.BUNDLED_MODELS = (*preflight.BUNDLED_MODELS, name)  # pretrained here, like the tiny one
    return name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text-tower", required=True, help="Hugging Face text model folder")
    p.add_argument("--out", required=True)
    p.add_argument("--dim", type=int, default=256, help="embedding width")
    p.add_argument(
        "--variant", default="attn-10", choices=sorted(VARIANTS), help="bench/language.py's variant"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    cfg = DemoConfig(
        data="synthetic:prose",
        model=wide_tiny(args.dim),
        text_tower=args.text_tower,
        out_dir=str(out),
        progress=False,
        workers=1,
    )
    model = create_model("clip", cfg.backbone_name, None, lora=None)
    train_set, val_set, _ = pipeline.demo_datasets(cfg, model, out)  # the test split is never read
    timings: dict = {}
    base = pipeline.pretrained_backbone(cfg, train_set, val_set, out, timings)
    row = run_variant(cfg, args.variant, base, (train_set, val_set), out)
    row["embed_dim"], row["pretrain_seconds"] = args.dim, timings.get("pretrain CLIP")
    (out / "row.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
