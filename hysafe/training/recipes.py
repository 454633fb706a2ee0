"""Training recipes: what it takes to train one kind of safety model, in one object.

A :class:`Recipe` bundles the objective (its terms, weights and cone settings), the model kind it
trains and the optimiser settings the method's reference code uses. The API (``hysafe.train``),
the CLI and the demo all start from :func:`get_recipe`; :class:`~hysafe.training.TrainConfig`
only overrides the optimiser when asked to.

==================  ==========  =========  ============  ==========================================
recipe              model kind  optimiser  weight decay  objective
==================  ==========  =========  ============  ==========================================
``hysac``           hysac       AdamW      0.2           contrastive + entailment cones (Lorentz)
``safeclip``        safeclip    Adam       0             redirection + structure preservation
``safer-clip``      safeclip    Adam       0             proximity-aware redirection (SafeR-CLIP)
``clip-pretrain``   clip        AdamW      0.2           plain CLIP loss on safe and unsafe pairs
==================  ==========  =========  ============  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hysafe.losses import ConeConfig, Objective, get_objective, hysac_objective, safer_clip_objective
from hysafe.models.embed import SENTENCE_KEYS, STEADY_TEXT_KEYS, UNADAPTED_TEXT_KEYS
from hysafe.models.hf_text import hf_text_tower

__all__ = ["Recipe", "RECIPES", "RECIPE_OPTIONS", "get_recipe", "default_recipe", "as_recipe"]


@dataclass(frozen=True)
class Recipe:
    """Objective + the model kind it trains + optimiser settings (no decay on scalars, biases
    and norms is applied for every recipe)."""

    name: str
    model_kind: str
    objective: Objective
    optimizer: str = "adamw"  # "adamw" or "adam"
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)

    def check_model(self, model) -> None:
        """Raise a clear error when ``model`` cannot be trained with this recipe."""
        self.objective.check_space(model.space)
        if self.objective.needs_reference and not hasattr(model, "encode_image_ref"):
            raise ValueError(
                f"objective {self.objective.name!r} needs a frozen reference (a "
                f"SafeCLIP model), got {model.kind!r}"
            )
        if self.objective.needs_reference and model.reference is None:
            raise ValueError(model.reference_problem)
        if self.objective.inputs & SENTENCE_INPUTS and hf_text_tower(model) is None:
            raise ValueError(
                f"objective {self.objective.name!r} anchors to the text model before LoRA "
                "(text_anchor, --text-anchor; root_anchor, --root-anchor), which needs a CLIP with a "
                "Hugging Face text tower: leave the anchor out, or train a 'VISION+hf:FOLDER' model "
                "(--model hysafe-tiny+hf:FOLDER)"
            )
        linear_radius = getattr(model, "text_radius", None) is not None
        if self.objective.inputs & set(UNADAPTED_TEXT_KEYS.values()) and linear_radius:
            raise ValueError(
                f"objective {self.objective.name!r} holds the distance to the root the projection's norm "
                "gives (root_anchor, --root-anchor), but the model reads it from a text radius head of its "
                f"own (text_radius={model.config.text_radius!r}, --text-radius "
                f"{model.config.text_radius}): leave one of them out (--text-radius norm keeps the anchor)"
            )


#: what only a Hugging Face text tower gives: its sentence embeddings, trained and before LoRA (S, S*,
#: S0, S0*), the text embeddings before LoRA (F, F*) and without dropout (T~, T*~)
SENTENCE_INPUTS = frozenset(
    [
        *(name for names in SENTENCE_KEYS.values() for name in names),
        *UNADAPTED_TEXT_KEYS.values(),
        *STEADY_TEXT_KEYS.values(),
    ]
)


#: name -> (model kind, optimiser, weight decay)
RECIPES: dict[str, tuple[str, str, float]] = {
    "hysac": ("hysac", "adamw", 0.2),
    "safeclip": ("safeclip", "adam", 0.0),
    "safer-clip": ("safeclip", "adam", 0.0),
    "clip-pretrain": ("clip", "adamw", 0.2),
}
_DEFAULT_FOR_KIND = {"hysac": "hysac", "safeclip": "safeclip", "clip": "clip-pretrain"}


#: HySAC's recipe options that are not cone settings (hysafe's named options, off by default)
HYSAC_TERM_OPTIONS = (
    "safety_cones",
    "order_weight",
    "order_margin",
    "rank_weight",
    "safety_rank_weight",
    "text_anchor",
    "root_anchor",
)


def _hysac(entailment_weight: float = 1.0, **options) -> Objective:
    terms = {k: options.pop(k) for k in HYSAC_TERM_OPTIONS if k in options}
    return hysac_objective(entailment_weight, ConeConfig(**options), **terms)


#: recipe -> how its objective is built from the recipe's options
_OBJECTIVE_BUILDERS = {"hysac": _hysac, "safer-clip": safer_clip_objective}
#: recipe -> the options it takes (for messages)
RECIPE_OPTIONS = {
    "hysac": (
        "entailment_weight",
        "radius",
        "min_radius",
        "radius_ratio",
        "aperture_scale",
        *HYSAC_TERM_OPTIONS,
    ),
    "safer-clip": ("redirection_weight", "image_target", "redirection_scale", "pair_quantile"),
}


def get_recipe(name: str, **options) -> Recipe:
    """The recipe ``name`` with its options: for ``hysac`` ``entailment_weight`` and the
    :class:`~hysafe.losses.ConeConfig` fields (``radius``, ``min_radius``, ``radius_ratio``,
    ``aperture_scale``) and hysafe's term options ``safety_cones``, ``order_weight``,
    ``order_margin``, ``rank_weight``, ``safety_rank_weight``, ``text_anchor``, ``root_anchor``
    (:func:`~hysafe.losses.hysac_objective`); for
    ``safer-clip`` ``redirection_weight``, ``image_target``, ``redirection_scale`` and ``pair_quantile`` (the
    parts the poster leaves open)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe/objective {name!r}; expected one of {sorted(RECIPES)}")
    kind, optimizer, weight_decay = RECIPES[name]
    unknown = set(options) - set(RECIPE_OPTIONS.get(name, ()))
    if unknown:
        owners = {o: r for r, opts in RECIPE_OPTIONS.items() for o in opts}
        where = ", ".join(
            f"{o} ({'of the ' + owners[o] + ' recipe' if o in owners else 'no recipe has it'})"
            for o in sorted(unknown)
        )
        raise ValueError(f"recipe {name!r} does not take {where}")
    objective = _OBJECTIVE_BUILDERS[name](**options) if name in _OBJECTIVE_BUILDERS else get_objective(name)
    return Recipe(name, kind, objective, optimizer, weight_decay)


def default_recipe(model) -> Recipe:
    """The recipe a model of this kind trains with when none is named."""
    return get_recipe(_DEFAULT_FOR_KIND[model.kind])


def as_recipe(spec: str | Recipe | Objective | None, model) -> Recipe:
    """A recipe from a name, a recipe, a bare objective (trained with the model kind's optimiser
    settings) or ``None`` (the model kind's default)."""
    if spec is None:
        return default_recipe(model)
    if isinstance(spec, Recipe):
        return spec
    if isinstance(spec, Objective):
        return replace(default_recipe(model), name=spec.name, objective=spec)
    return get_recipe(spec)
