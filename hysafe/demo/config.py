"""The demo's settings: :class:`DemoConfig`, whose fields are also ``hysafe demo``'s options.

Over 300 lines because each of the 33 fields carries its option's help text beside its default:
splitting the dataclass would separate an option from what it means."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..data import WorldConfig
from ..models.backbone import TINY_MODEL, LoraConfig
from ..models.hf_text import HF_PROJ, HF_TEXT_MARK
from ..models.text_radius import TEXT_RADII
from ..models.traversal import DEFAULT_TAU

__all__ = ["DemoConfig", "RANK_WEIGHTS", "TEXT_RADII_USED", "TEXT_TOWER_LORA", "option_name"]

#: HySAC's root-rank weight where ``--rank-weight`` is not given, per text tower, each chosen on its own
#: validation data: the model's own tower on validation worlds (docs/worlds.md, validation4: 10 over
#: 3; validation5: 30 over 10), a ``--text-tower`` on validation wordings (docs/language.md, round 3:
#: 3 over 0; round 4: 10 over 3; 30 not tried)
RANK_WEIGHTS = {"own": 30.0, "text tower": 10.0}

#: HySAC's text distance to the root where ``--text-radius`` is not given, per text tower: the model's
#: own tower as published (hysafe's radii need a Hugging Face text model), a ``--text-tower`` the probe
#: radius, chosen on validation wordings (docs/language.md, round 6: linear 0.941 over the norm's 0.932;
#: round 7: linear-frozen 0.849, not chosen; round 8: probe 0.967 over linear's 0.941)
TEXT_RADII_USED = {"own": "norm", "text tower": "probe"}

#: ``--text-tower-lora``: the LoRA modules of a Hugging Face text tower (LoraConfig.text_modules)
TEXT_TOWER_LORA = {
    "proj": (HF_PROJ,),
    "attn": ("attn", HF_PROJ),
    "all": ("attn", "mlp.c_fc", "mlp.c_proj", HF_PROJ),
}


def _opt(help: str, **cli) -> dict:
    return {"help": help, **cli}


def _count(help: str, **cli) -> dict:
    """An integer option of at least 1 (``hysafe demo`` refuses less at parse time)."""
    return _opt(help, min=1, **cli)


@dataclass
class DemoConfig:
    """Defaults: the embedded world, tuned to finish in a few minutes on 2 CPU cores. The
    ``hysafe demo`` options are generated from these fields."""

    out_dir: str = field(default="hysafe-report", metadata=_opt("report folder", cli="--out"))
    data: str = field(
        default="synthetic",
        metadata=_opt(
            "'synthetic' (the embedded world), 'synthetic:crowd' / "
            "'synthetic:tint' (two more), 'synthetic:prose' (English captions, unsafe test wordings "
            "never seen in training), 'synthetic:param:SEED' (a member of the parametric "
            "family), 'visu', or a manifest path"
        ),
    )
    world: WorldConfig = field(default_factory=WorldConfig)
    visu_source: str | None = field(
        default=None,
        metadata=_opt(
            "ViSU-Text split files (folder or file) or 'hf:aimagelab/ViSU-Text'", cli="--visu-root"
        ),
    )
    coco_root: str | None = field(default=None, metadata=_opt("COCO image folder (ViSU safe images)"))
    unsafe_root: str | None = field(
        default=None, metadata=_opt("folder of generated unsafe images named {incremental_id}.png")
    )
    model: str = field(default=TINY_MODEL, metadata=_opt("open_clip model name"))
    text_tower: str | None = field(
        default=None,
        metadata=_opt(
            "a Hugging Face text model (a local folder or a hub id: BERT, RoBERTa, XLM-R) as the text "
            "tower of --model: pretraining trains the image tower and the text projection against its "
            "frozen transformer; the fine-tunes' LoRA adapts the image tower and what --text-tower-lora names"
        ),
    )
    text_tower_lora: str = field(
        default="attn",
        metadata=_opt(
            "what LoRA adapts in a --text-tower: 'attn' (its projection and the attention of every "
            "layer; chosen on validation wordings, docs/language.md), 'all' (and the MLPs too), 'proj' "
            "(the projection alone: the transformer frozen, its features cached, ~60x cheaper)",
            choices=tuple(TEXT_TOWER_LORA),
        ),
    )
    text_tower_epochs: int = field(
        default=10,
        metadata=_count(
            "fine-tuning epochs with a --text-tower (chosen with --text-tower-lora on validation)"
        ),
    )
    pretrained: str | None = field(
        default=None,
        metadata=_opt(
            "open_clip tag (e.g. openai) or local checkpoint; default: pretrain the tiny model here"
        ),
    )
    pretrain_epochs: int = field(default=30, metadata=_count("pretraining epochs of the tiny CLIP"))
    finetune_epochs: int = field(
        default=30, metadata=_count("fine-tuning epochs of Safe-CLIP, SafeR-CLIP and HySAC", cli="--epochs")
    )
    batch_size: int = field(default=64, metadata=_count("batch size of pretraining and fine-tuning"))
    lr: float = field(default=3e-3, metadata=_opt("fine-tuning learning rate"))
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32.0, dropout=0.0))
    min_radius: float | None = field(
        default=None,
        metadata=_opt("absolute entailment-cone K for HySAC (default: ConeConfig's, the papers' 0.1)"),
    )
    radius: str | None = field(
        default=None,
        metadata=_opt(
            "HySAC's cone-radius rule: 'absolute' (default, the papers') or 'relative' (ConeConfig)",
            choices=("absolute", "relative"),
        ),
    )

    order_weight: float | None = field(
        default=None,
        metadata=_opt(
            "weight of HySAC's root-order hinges T < V < T* < V* (hysafe's option; default: off, the "
            "published objective)"
        ),
    )
    rank_weight: float | None = field(
        default=None,
        metadata=_opt(
            "weight of HySAC's root-rank hinges: every T in a batch nearer the root than every V, every "
            "V than every T*, every T* than every V* (hysafe's option; 0: off, as published; default: "
            "30, or 10 with --text-tower, each chosen on validation data: docs/worlds.md, "
            "docs/language.md)"
        ),
    )
    safety_rank_weight: float | None = field(
        default=None,
        metadata=_opt(
            "weight of HySAC's root-rank hinges within each modality: every T in a batch nearer the "
            "root than every T*, every V than every V* (hysafe's option; default: off)"
        ),
    )
    text_anchor: float | None = field(
        default=None,
        metadata=_opt(
            "with --text-tower: weight of HySAC's text anchor, the cosine distance of the text model's "
            "sentence embeddings to its own before LoRA (hysafe's option; default: off)"
        ),
    )
    root_anchor: float | None = field(
        default=None,
        metadata=_opt(
            "with --text-tower: weight of HySAC's root anchor, the gap between each caption's log distance "
            "to the root and the one the text model before LoRA gives it (hysafe's option; default: off, "
            "as chosen on validation wordings: docs/language.md, round 5)"
        ),
    )
    text_radius: str | None = field(
        default=None,
        metadata=_opt(
            "with --text-tower: HySAC's text distance to the root, 'norm' (as published), 'linear' "
            "(hysafe's option: a linear read of the text model's sentence embedding, on the log scale), "
            "'linear-frozen' (the same read of the sentence embedding before LoRA) or 'probe' (a read of "
            "its direction, refitted as a logistic probe after training, C chosen on validation); default "
            "with --text-tower: probe, chosen on validation wordings, docs/language.md, round 8",
            choices=TEXT_RADII,
        ),
    )
    safety_cones: bool = field(
        default=True,
        metadata=_opt(
            "HySAC's extra entailments T entails T*, V entails V* (hysafe's option, chosen on validation "
            "worlds, docs/worlds.md; off: the published seven terms)"
        ),
    )

    @property
    def backbone_name(self) -> str:
        """The model every stage builds: ``model``, or ``model+hf:text_tower``."""
        return self.model if self.text_tower is None else f"{self.model}{HF_TEXT_MARK}{self.text_tower}"

    @property
    def fine_tune_lora(self) -> LoraConfig:
        """The fine-tunes' LoRA: ``lora``, adapting what ``text_tower_lora`` names in a ``text_tower``
        (by default its projection alone) unless ``lora.text_modules`` says otherwise."""
        if self.text_tower is None or self.lora.text_modules is not None:
            return self.lora
        return replace(self.lora, text_modules=TEXT_TOWER_LORA[self.text_tower_lora])

    def train_config(self, output_dir: str | None, *, select: str | None = None):
        """The fine-tunes' :class:`~hysafe.training.TrainConfig` (``select``: ``self.select`` unless
        given)."""
        from ..training import TrainConfig

        return TrainConfig(
            epochs=self.fine_tune_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            progress=self.progress,
            select=select or self.select,
            precision=self.precision,
            device=self.device,
            output_dir=output_dir,
        )

    @property
    def fine_tune_epochs(self) -> int:
        """``text_tower_epochs`` with a ``text_tower``, else ``finetune_epochs``."""
        return self.finetune_epochs if self.text_tower is None else self.text_tower_epochs

    @property
    def rank_weight_used(self) -> float:
        """``rank_weight``, or where it is not given the weight validation chose for this text tower
        (:data:`RANK_WEIGHTS`)."""
        return self._given_or_chosen(self.rank_weight, RANK_WEIGHTS)

    @property
    def text_radius_used(self) -> str:
        """``text_radius``, or where it is not given the one validation chose for this text tower
        (:data:`TEXT_RADII_USED`)."""
        return self._given_or_chosen(self.text_radius, TEXT_RADII_USED)

    def _given_or_chosen(self, given, chosen: dict):
        """``given``, or where it is ``None`` the value ``chosen`` holds for this run's text tower."""
        return given if given is not None else chosen["own" if self.text_tower is None else "text tower"]

    def record(self) -> dict:
        """The settings as ``demo_config.json`` holds them: every field, the rank weight and the text
        radius as used."""
        return {**asdict(self), "rank_weight": self.rank_weight_used, "text_radius": self.text_radius_used}

    def hysac_options(self) -> dict:
        """The HySAC recipe options these settings override (none: the recipe's defaults)."""
        given = {
            "min_radius": self.min_radius,
            "radius": self.radius,
            "order_weight": self.order_weight,
            "rank_weight": self.rank_weight_used,
            "safety_rank_weight": self.safety_rank_weight,
            "safety_cones": self.safety_cones,
            "text_anchor": self.text_anchor,
            "root_anchor": self.root_anchor,
        }
        return {k: v for k, v in given.items() if v is not None}

    def hysac_model_options(self) -> dict:
        """The HySAC model settings (ModelConfig fields) these settings override."""
        used = self.text_radius_used
        return {} if used == "norm" else {"text_radius": used}

    select: str = field(
        default="auto",
        metadata=_opt(
            "model selection of the fine-tunes (TrainConfig.select; 'safety' applies to HySAC, the "
            "Euclidean fine-tunes then select on recall)",
            choices=("auto", "recall", "safety"),
        ),
    )
    traversal: str = field(default=DEFAULT_TAU, metadata=_opt("tau rule or number for HySAC + traversal"))
    image_ceiling: str = field(
        default="auto",
        metadata=_opt(
            "measure the image tower's supervised ceiling (the pretrained tower, every weight trained on "
            "the labels) and judge HySAC's image ordering against it: 'auto' only where V 95%% < G 5%% "
            "fails without it, 'always', or 'never'",
            choices=("auto", "always", "never"),
        ),
    )
    ceiling_epochs: int = field(
        default=50, metadata=_count("training epochs of the image tower's supervised ceiling (CeilingConfig)")
    )
    workers: int = field(
        default=0,
        metadata=_opt(
            "fine-tunes run at once, each in its own process with its share of the CPU threads "
            "(0: all three on a CPU with 2+ threads, else 1; 1: one after another in this process)"
        ),
    )
    precision: str = field(
        default="fp32", metadata=_opt("autocast precision", choices=("fp32", "bf16", "fp16", "auto"))
    )
    device: str = field(default="cpu", metadata=_opt("device"))
    seed: int = field(default=0, metadata=_opt("seed of the world and of every training"))
    progress: bool = field(default=True, metadata=_opt("progress bars"))

    def __post_init__(self):
        """HySAC's recipe options are checked before any stage runs (not after pretraining)."""
        from ..training.recipes import get_recipe

        for name, value in self.hysac_options().items():  # each bad value named by its option
            try:
                get_recipe("hysac", **{name: value})
            except ValueError as e:
                raise ValueError(f"{option_name(name)}: {e}") from None
        get_recipe("hysac", **self.hysac_options())
        self.train_config(None)  # a bad --lr, --batch-size ... fails here, before any folder exists
        if self.text_tower is not None and not self.text_tower.strip():
            raise ValueError(
                "DemoConfig.text_tower (--text-tower) is empty: give a Hugging Face text model folder "
                "or hub id, or leave it out for the model's own text tower"
            )
        for name in ("text_anchor", "root_anchor"):
            if getattr(self, name) is not None and self.text_tower is None:
                raise ValueError(
                    f"DemoConfig.{name} ({option_name(name)}) anchors to a Hugging Face text model: it "
                    "needs --text-tower"
                )
        self._check_text_radius()
        if self.text_tower_epochs < 1:
            raise ValueError(f"DemoConfig.text_tower_epochs must be >= 1, got {self.text_tower_epochs}")
        if self.text_tower_lora not in TEXT_TOWER_LORA:
            raise ValueError(
                f"DemoConfig.text_tower_lora must be one of {sorted(TEXT_TOWER_LORA)}, "
                f"got {self.text_tower_lora!r}"
            )
        if self.image_ceiling not in ("auto", "always", "never"):
            raise ValueError(
                f"DemoConfig.image_ceiling must be 'auto', 'always' or 'never', got {self.image_ceiling!r}"
            )

    def _check_text_radius(self) -> None:
        if self.text_radius not in (None, *TEXT_RADII):
            raise ValueError(
                f"DemoConfig.text_radius must be one of {list(TEXT_RADII)}, got {self.text_radius!r}"
            )
        if self.text_radius_used == "norm":
            return
        if self.text_tower is None:
            raise ValueError(
                "DemoConfig.text_radius (--text-radius) reads a Hugging Face text model's sentence "
                "embeddings: it needs --text-tower"
            )
        if self.root_anchor:  # 0 is off, as not given
            default = " (the default with --text-tower)" if self.text_radius is None else ""
            raise ValueError(
                "DemoConfig.root_anchor (--root-anchor) holds the norm-given distance to the root: it does "
                f"not apply with --text-radius {self.text_radius_used}{default}; add --text-radius norm"
            )

    @classmethod
    def quick(cls, seed: int = 0, **overrides) -> "DemoConfig":
        """A small world and few epochs: a smoke run (under a minute with the tiny towers; ~1-2
        minutes with a real ``text_tower``, whose transformer still runs forward and backward)."""
        # starting processes costs more than a smoke run's fine-tunes
        base = cls(
            world=WorldConfig(n_train=320, n_val=64, n_test=64, seed=seed),
            pretrain_epochs=4,
            finetune_epochs=3,
            text_tower_epochs=1,
            ceiling_epochs=3,
            batch_size=32,
            lora=LoraConfig(r=4, alpha=8.0, dropout=0.0),
            seed=seed,
            workers=1,
        )
        return replace(base, **overrides)


def option_name(setting: str) -> str:
    """``hysafe demo``'s option for a :func:`flat_settings` name (``finetune_epochs``: ``--epochs``);
    a nested setting, which has none, keeps its dotted name."""
    from ..cli.options import option_flags

    return option_flags(DemoConfig).get(setting, setting)
