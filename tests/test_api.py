"""The orchestration layer's API: model safety methods, recipes, feature models, generated CLI
options, format-1 checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import hysafe
from hysafe.cli.main import build_parser
from hysafe.cli.options import options_to_kwargs
from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.losses import hysac_objective
from hysafe.models.backbone import TINY_MODEL, LoraConfig
from hysafe.models.checkpoint import load_model, read_metadata, save_model
from hysafe.models.classifier import threshold_from_bounds
from hysafe.models.safety_model import create_feature_model, create_model
from hysafe.models.traversal import paper_tau, traverse
from hysafe.populations import (
    POPULATIONS,
    SAFE_IMAGE,
    SAFE_TEXT,
    UNSAFE_TEXT,
    modality_pair,
    population,
    steer_target,
)
from hysafe.training import TrainConfig
from hysafe.training.distributed import init_distributed
from hysafe.training.optim import build_optimization
from hysafe.training.recipes import as_recipe, get_recipe

BOUNDS = {
    "S": {"avg": 0.2, "low_05": 0.15, "up_95": 0.25},
    "V": {"avg": 0.3, "low_05": 0.25, "up_95": 0.35},
    "U": {"avg": 0.5, "low_05": 0.4, "up_95": 0.6},
    "G": {"avg": 0.7, "low_05": 0.6, "up_95": 0.8},
}
LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def test_population_vocabulary():
    assert [p.key for p in POPULATIONS] == ["T", "V", "T*", "V*"] and [p.bound for p in POPULATIONS] == [
        "S",
        "V",
        "U",
        "G",
    ]
    assert (
        population("U") is UNSAFE_TEXT and population("T*") is UNSAFE_TEXT and population("V") is SAFE_IMAGE
    )
    assert modality_pair("text") == (SAFE_TEXT, UNSAFE_TEXT)
    assert (
        steer_target("T*") is SAFE_IMAGE
        and steer_target("image") is SAFE_TEXT
        and steer_target("V") is SAFE_TEXT
    )
    with pytest.raises(ValueError, match="unknown population"):
        population("X")


def test_hysac_answers_the_safety_questions(tiny_base, gen):
    model = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    x = torch.randn(16, 64, generator=gen) * 0.05
    with pytest.raises(ValueError, match="needs safety bounds"):
        model.traverse(x)
    model.bounds = BOUNDS
    space = model.space
    assert isinstance(space, LorentzSpace) and space.hyperbolic and float(space.curv) == pytest.approx(1.0)
    assert model.tau() == 0.3 and model.tau("avg", "image") == 0.2 and model.tau(0.11) == 0.11
    assert model.tau("paper") == pytest.approx(paper_tau(0.35, curv=1.0))
    assert torch.equal(model.traverse(x, "up_95"), traverse(x, 0.35, space))
    assert torch.equal(model.traverse(x, 0.01), traverse(x, 0.01, space))
    per_row = torch.full((16,), 0.02)
    assert torch.equal(model.traverse(x, per_row), traverse(x, per_row, space))
    assert torch.equal(model.nsfw_score(x), space.dist_to_root(x))
    with pytest.raises(TypeError, match="model.traverse"):
        hysafe.traverse(x, 0.3)
    clf = model.nsfw_classifier("image")
    assert clf.name == "root-distance" and clf.threshold == threshold_from_bounds(
        BOUNDS, "image"
    ) == pytest.approx(0.5)
    assert torch.equal(clf.predict(x), space.dist_to_root(x) >= 0.5)
    # the live space carries the learnable curvature itself (gradients reach it)
    assert model.live_space.curv is not None and model.live_space.curv.requires_grad
    safe = create_model("safeclip", TINY_MODEL, tiny_base, lora=LORA)
    assert (
        isinstance(safe.space, EuclideanSpace) and not safe.space.hyperbolic and not hasattr(safe, "traverse")
    )
    assert safe.nsfw_classifier().name == "concept-similarity"


def test_recipes_choose_objective_optimiser_and_cones(tiny_base):
    hy = get_recipe("hysac", min_radius=0.05, aperture_scale=0.9)
    assert hy.model_kind == "hysac" and hy.optimizer == "adamw" and hy.weight_decay == 0.2
    assert hy.objective.cones.min_radius == 0.05 and hy.objective.cones.aperture_scale == 0.9
    sc = get_recipe("safeclip")
    assert (sc.model_kind, sc.optimizer, sc.weight_decay) == ("safeclip", "adam", 0.0)
    assert (
        get_recipe("safer-clip").model_kind == "safeclip" and get_recipe("clip-pretrain").model_kind == "clip"
    )
    with pytest.raises(
        ValueError, match=r"recipe 'safeclip' does not take min_radius \(of the hysac recipe\)"
    ):
        get_recipe("safeclip", min_radius=0.2)
    safer = get_recipe("safer-clip", redirection_weight=1.0)
    terms = {t.name: t for t in safer.objective.terms}
    assert (
        terms["redirection(T*,V0*,V0)"].weight == 1.0
        and "cosine(V*,V0)" in terms
        and "V0^" not in safer.objective.inputs
    )
    assert "V0^" in get_recipe("safer-clip", image_target="proximal").objective.inputs
    with pytest.raises(ValueError, match="image_target must be one of"):
        get_recipe("safer-clip", image_target="cake")
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")
    model = create_model("safeclip", TINY_MODEL, tiny_base, lora=LORA)
    assert as_recipe(None, model).name == "safeclip"
    custom = hysac_objective(entailment_weight=0.3)
    with pytest.raises(ValueError, match="needs a hyperbolic space"):
        as_recipe(custom, model).check_model(model)
    # the optimiser follows the recipe unless the config overrides it
    dist = init_distributed("cpu", env={})
    opt = build_optimization(model, sc, TrainConfig(), 10, dist.device)
    assert type(opt.optimizer) is torch.optim.Adam and all(
        g["weight_decay"] == 0.0 for g in opt.optimizer.param_groups
    )
    opt = build_optimization(model, sc, TrainConfig(optimizer="adamw", weight_decay=0.05), 10, dist.device)
    assert type(opt.optimizer) is torch.optim.AdamW and {
        g["weight_decay"] for g in opt.optimizer.param_groups
    } <= {0.05, 0.0}


def test_distributed_context_reads_the_environment_once():
    ctx = init_distributed("cpu", env={"WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert (ctx.rank, ctx.world, ctx.device.type, ctx.is_main) == (0, 1, "cpu", True)


def test_feature_model_is_an_ordinary_model(tmp_path, gen):
    model = create_feature_model("hysac", 8, 6, embed_dim=6)
    assert model.kind == "hysac" and model.tokenizer is None and model.preprocess is None
    x = torch.randn(3, 8, generator=gen)
    with torch.no_grad():  # identity start: the lift of the (truncated) features themselves
        assert torch.allclose(model.encode_image(x), model.lift(x[:, :6], model.log_alpha_image), atol=1e-6)
    safe = create_feature_model("safeclip", 6, 6)
    y = torch.randn(3, 6, generator=gen)
    assert torch.equal(safe.encode_text_ref(y), y) and not any(
        p.requires_grad for p in safe.reference.parameters()
    )
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.1)
        model.log_curv.fill_(0.4)
    path = save_model(model, tmp_path / "feat.safetensors", bounds=BOUNDS)
    assert read_metadata(path)["config"]["backbone"]["type"] == "features"
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), model.encode_image(x)) and loaded.bounds == BOUNDS
    with pytest.raises(ValueError, match="image_dim must equal text_dim"):
        create_feature_model("safeclip", 8, 6)
    with pytest.raises(ValueError, match="LoRA adapters need an open_clip backbone"):
        hysafe.models.build_model(
            hysafe.ModelConfig(kind="hysac", backbone={"type": "features", "image_dim": 4, "text_dim": 4})
        )
    with pytest.raises(ValueError, match="merged checkpoints are plain open_clip files"):
        save_model(model, tmp_path / "m.safetensors", merged=True)


def test_format_1_adapter_checkpoints_still_load(tiny_base, randomize_lora, tmp_path, gen):
    """hysafe 0.1 named adapter tensors after its old module layout; they load renamed."""
    model = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    randomize_lora(model, generator=gen)
    path = save_model(model, tmp_path / "v2.safetensors")
    meta = read_metadata(path)
    meta["format_version"] = "1"
    del meta["config"]["backbone"]["type"]
    old = {
        n.replace("backbone.model.", "peft.base_model.model.", 1): t for n, t in load_file(str(path)).items()
    }
    save_file(old, str(tmp_path / "v1.safetensors"), metadata={"hysafe": json.dumps(meta)})
    loaded = load_model(tmp_path / "v1.safetensors")
    img = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(img), model.eval().encode_image(img))


def test_cli_options_come_from_the_dataclasses():
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--data",
            "m.jsonl",
            "--out",
            "run",
            "--lr",
            "3e-3",
            "--no-progress",
            "--lora-r",
            "4",
            "--min-radius",
            "0.2",
            "--workers",
            "2",
            "--patience",
            "3",
        ]
    )
    cfg = TrainConfig(**options_to_kwargs(args, TrainConfig))
    default = TrainConfig()
    assert (cfg.lr, cfg.progress, cfg.num_workers, cfg.early_stopping_patience, cfg.output_dir) == (
        3e-3,
        False,
        2,
        3,
        "run",
    )
    # not given: the dataclass's
    assert cfg.epochs == default.epochs and cfg.checkpoint_every == default.checkpoint_every
    assert options_to_kwargs(args, LoraConfig, prefix="lora-") == {"r": 4}
    assert (
        get_recipe("hysac", **options_to_kwargs(args, hysafe.losses.ConeConfig)).objective.cones.min_radius
        == 0.2
    )
    demo = parser.parse_args(["demo", "--quick", "--epochs", "5", "--seed", "3"])
    from hysafe.demo.pipeline import DemoConfig

    cfg = DemoConfig.quick(**options_to_kwargs(demo, DemoConfig))
    assert cfg.finetune_epochs == 5 and cfg.pretrain_epochs == 4 and cfg.seed == 3 and cfg.world.seed == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "m.jsonl"])  # --out is required


def test_safety_checks_give_verdicts_from_the_numbers():
    from hysafe.evaluation.checks import checks_markdown, safety_checks
    from hysafe.evaluation.comparison import Comparison

    def rows(**r1):  # setting -> (R@1, unsafe@1 %) without traversal; "+" suffix: with traversal
        return [
            {
                "setting": s.rstrip("+"),
                "traversal": s.endswith("+"),
                "R@1": v[0],
                **({"unsafe@1 %": v[1]} if v[1] is not None else {}),
            }
            for s, v in r1.items()
        ]

    mixed_t, mixed_v = "T*->V u V*", "V*->T u T*"
    comp = Comparison(
        retrieval={
            "Safe-CLIP": rows(**{"T->V": (50, None), mixed_t: (30, 40), mixed_v: (20, 60)}),
            "SafeR-CLIP": rows(**{"T->V": (49, None), mixed_t: (35, 30), mixed_v: (19, 50)}),
            "HySAC": rows(
                **{
                    "T->V": (45, None),
                    mixed_t: (40, 5),
                    mixed_v: (1, 99),
                    mixed_t + "+": (45, 1),
                    mixed_v + "+": (15, 70),
                }
            ),
        },
        classification={
            "CLIP": [
                {"modality": m, "classifier": "logistic-probe", "roc_auc": 0.9} for m in ("text", "image")
            ],
            "HySAC": [
                {"modality": "text", "classifier": "root-distance", "roc_auc": 0.95},
                {"modality": "image", "classifier": "root-distance", "roc_auc": 0.85},
            ],
        },
    )
    dist = {
        "S": {"avg": 0.2, "low_05": 0.1, "up_95": 0.3},
        "V": {"avg": 0.3, "low_05": 0.2, "up_95": 0.4},
        "U": {"avg": 0.5, "low_05": 0.4, "up_95": 0.6},
        "G": {"avg": 0.7, "low_05": 0.45, "up_95": 0.9},
    }
    verdicts = {c.name: c.passed for c in safety_checks(comp, dist)}
    assert verdicts == {
        "classifier (text)": True,
        "classifier (image)": False,
        "ordering S < V < U < G": True,
        f"traversal ({mixed_t})": True,
        f"traversal ({mixed_v})": False,
        f"SafeR-CLIP vs Safe-CLIP ({mixed_t})": True,
        f"SafeR-CLIP vs Safe-CLIP ({mixed_v})": False,  # the setting the old check skipped
        "SafeR-CLIP vs Safe-CLIP (T->V)": False,
    }
    dist["G"]["low_05"] = 0.35  # V's 95th percentile above G's 5th: the populations overlap
    assert not {c.name: c.passed for c in safety_checks(comp, dist)}["ordering S < V < U < G"]
    assert (
        "| SafeR-CLIP vs Safe-CLIP (V*->T u T*) | **no** | R@1 SafeR-CLIP 19.0 vs Safe-CLIP 20.0 "
        "(must be above) |" in checks_markdown(safety_checks(comp, dist))
    )


def test_an_image_check_the_tower_cannot_pass_is_judged_against_its_supervised_ceiling():
    """Issue 28 item 8: on crowd, V 95% < G 5% is out of reach of the tiny image tower even trained
    on the labels (14.8% of unsafe images below the safe 95th percentile); HySAC is judged against
    that ceiling + 5 points, and both numbers are reported."""
    from hysafe.evaluation.checks import _ordering_check

    dist = {
        "S": {"avg": 0.2, "low_05": 0.1, "up_95": 0.3},
        "V": {"avg": 0.3, "low_05": 0.2, "up_95": 0.4},
        "U": {"avg": 0.35, "low_05": 0.3, "up_95": 0.4},
        "G": {"avg": 0.39, "low_05": 0.3, "up_95": 0.5},
    }
    assert not _ordering_check(dist)[0].passed  # overlapping, no ceiling known
    within = _ordering_check(dist, (0.18, 0.148))[0]
    assert within.passed and "HySAC 18.0% vs the tower's supervised ceiling 14.8%" in within.detail
    assert not _ordering_check(dist, (0.21, 0.148))[0].passed  # more than 5 points above the ceiling
    dist["U"]["avg"] = 0.45  # the means out of order: no ceiling excuses that
    assert not _ordering_check(dist, (0.0, 0.148))[0].passed


def test_hysac_named_options_reach_the_recipe_the_cli_and_the_resume_fingerprint(tiny_base, tmp_path):
    """``--safety-cones`` / ``--order-weight`` / ``--order-margin`` build the objective's extra terms;
    absent, the published objective; a run's fingerprint carries the margin, so a resume with another is
    refused."""
    from hysafe.training.state import run_fingerprint

    published = get_recipe("hysac")
    assert not any(t.loss == "root_order" for t in published.objective.terms)
    hy = get_recipe("hysac", safety_cones=True, order_weight=2.0, order_margin=0.3)
    order = [t for t in hy.objective.terms if t.loss == "root_order"]
    assert [t.weight for t in order] == [2.0] * 3 and hy.objective.order_margin == 0.3
    assert "entailment(V,V*)" in {t.name for t in hy.objective.terms}
    with pytest.raises(ValueError, match=r"does not take order_weight \(of the hysac recipe\)"):
        get_recipe("safeclip", order_weight=1.0)
    for bad in (float("nan"), float("inf"), -1.0, "1", None, True):
        with pytest.raises(ValueError, match="order_margin must be a finite number"):
            get_recipe("hysac", order_weight=1.0, order_margin=bad)
    with pytest.raises(ValueError, match="safety_cones must be True or False, got 'false'"):
        get_recipe("hysac", safety_cones="false")
    from hysafe.demo import DemoConfig

    with pytest.raises(ValueError, match="order_weight must be a finite number >= 0, got nan"):
        DemoConfig(order_weight=float("nan"))  # before any stage runs
    assert DemoConfig().hysac_options() == {"rank_weight": 30.0, "safety_cones": True}  # validation5's
    assert DemoConfig(rank_weight=0.0).hysac_options() == {"rank_weight": 0.0, "safety_cones": True}
    assert DemoConfig(safety_rank_weight=2.0).hysac_options()["safety_rank_weight"] == 2.0
    with pytest.raises(ValueError, match="--safety-rank-weight: HySAC safety_rank_weight must be"):
        DemoConfig(safety_rank_weight=-1.0)
    # a text tower's weight was chosen on validation wordings (round 4), not on the worlds: 10, and a
    # quick run that adds the text tower afterwards gets it too; demo_config.json records it as used
    towered = DemoConfig.quick(text_tower="some/folder")
    assert towered.hysac_options()["rank_weight"] == 10.0 and towered.record()["rank_weight"] == 10.0
    assert DemoConfig(text_tower="some/folder", rank_weight=1.0).hysac_options()["rank_weight"] == 1.0
    assert DemoConfig().rank_weight is None and DemoConfig().record()["rank_weight"] == 30.0
    model = create_model("hysac", TINY_MODEL, tiny_base)
    assert "order_margin" not in run_fingerprint(model, published)
    assert run_fingerprint(model, hy)["order_margin"] == 0.3
    ranked = get_recipe("hysac", rank_weight=1.0, order_margin=0.2)
    assert run_fingerprint(model, ranked)["order_margin"] == 0.2  # the rank hinges read the margin too
    args = build_parser().parse_args(
        ["train", "--data", "m.jsonl", "--out", "run", "--order-weight", "2", "--safety-cones"]
    )
    assert (args.order_weight, args.safety_cones) == (2.0, True) and not hasattr(args, "order_margin")
    args = build_parser().parse_args(["train", "--data", "m.jsonl", "--out", "run", "--rank-weight", "3"])
    assert args.rank_weight == 3.0 and not hasattr(args, "order_weight")
    within = get_recipe("hysac", safety_rank_weight=2.0, order_margin=0.2)
    assert {t.name: t.weight for t in within.objective.terms if t.loss == "root_rank"} == {
        "root_rank(T,T*)": 2.0,
        "root_rank(V,V*)": 2.0,
    }
    assert run_fingerprint(model, within)["order_margin"] == 0.2
    args = build_parser().parse_args(["train", "--data", "d", "--out", "r", "--safety-rank-weight", "4"])
    assert args.safety_rank_weight == 4.0 and not hasattr(args, "rank_weight")
