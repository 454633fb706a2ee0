"""open_clip backbones and LoRA adapters.

A *backbone* is the encoder under a hysafe model: it turns model inputs into raw features
(``image_features``, ``text_features``) and knows how to take LoRA adapters and how to give its
frozen reference (the original encoder). :class:`OpenClipBackbone` is the one for pixels and token ids;
:class:`~hysafe.models.feature_backbone.FeatureBackbone` is the one for cached feature tables.

Any open_clip model name works, with ``pretrained`` either an open_clip tag (downloaded by
open_clip when online), a local checkpoint file (``.safetensors``, ``.pt``, ``.bin``), or ``None``
for random initialisation. ``hysafe-tiny`` is a small registered config used by the tests and the
demo (3.3M parameters, 32x32 images); ``hysafe-tiny-rn`` is the same CLIP with a ResNet image tower
(open_clip's ModifiedResNet, width 32: 5.2M image parameters, ~11x the image compute), which separates
small local image cues the 8 px-patch ViT tower cannot (docs/worlds.md). (Over 300 lines: building the
open_clip model and targeting LoRA at its modules both depend on open_clip's module layout, kept in one
place.)
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import open_clip
import torch
from torch import nn

from .attention import MATH_MAX_TOKENS, compute_dtype, image_tokens, training_attention
from .hf_text import (
    hf_lora_target,
    hf_text_model_cfg,
    hf_text_type,
    recorded_text_source,
    registered_name,
    split_hf_text_name,
    trimmed_hf_text_features,
)
from .hf_text_cache import cached_hf_text_features
from .hf_text_load import quiet_hf_text_load
from .lora_dropout import use_sparse_dropout
from .registry import BUNDLED_MODELS, TINY_MODEL, register_model_config, register_model_configs
from .text_trim import trimmed_text_features

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_MODEL",
    "BUNDLED_MODELS",
    "BackboneConfig",
    "LoraConfig",
    "OpenClipBackbone",
    "register_model_configs",
    "create_backbone",
    "open_clip_name",
    "autocast_dtype",
    "check_device",
    "apply_lora",
    "lora_target_regex",
    "lora_targets",
    "finetune_record",
]

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass
class BackboneConfig:
    """Which open_clip model to build and where its weights come from."""

    type: ClassVar[str] = "open_clip"
    model: str = "ViT-B-32"  # open_clip model name (open_clip.list_models())
    pretrained: str | None = None  # open_clip tag, local checkpoint path, or None (random init)
    precision: str = "fp32"  # open_clip precision: fp32, bf16, fp16, amp, ...
    model_cfg: dict | None = (
        None  # an architecture open_clip does not name (e.g. converted from transformers)
    )
    # the weights ``pretrained`` was fine-tuned from, when it is a merged hysafe fine-tune: the frozen
    # reference of Safe-CLIP training (recorded by save_model(merged=True), read back from the file)
    origin: str | None = None

    def is_local(self) -> bool:
        p = self.pretrained
        return p is not None and (os.sep in p or p.endswith(_CHECKPOINT_SUFFIXES) or os.path.exists(p))


#: safetensors metadata key of hysafe checkpoints
CHECKPOINT_META_KEY = "hysafe"


def _hysafe_metadata(path: str | None) -> dict | None:
    """The hysafe metadata of a safetensors file at ``path`` (``None``: not a hysafe checkpoint)."""
    if path is None or not str(path).endswith(".safetensors") or not os.path.isfile(path):
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(CHECKPOINT_META_KEY)
        return json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None


def finetune_record(path: str | None) -> tuple[str | None, str | None]:
    """``(kind, origin)`` of a merged hysafe fine-tune at ``path`` (a Safe-CLIP / HySAC whose LoRA
    was merged into the weights), ``(None, None)`` for anything else (a tag, plain open_clip weights)."""
    meta = _hysafe_metadata(path) or {}
    config = meta.get("config") or {}
    if (
        meta.get("form") != "merged"
        or config.get("kind", "clip") == "clip"
        and not (config.get("backbone") or {}).get("origin")
    ):
        return None, None
    return config.get("kind"), (config.get("backbone") or {}).get("origin")


@dataclass
class LoraConfig:
    """LoRA adapter settings (defaults from the HySAC reference code: r=16, alpha=1, dropout=0.1)."""

    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: float = field(
        default=1.0, metadata={"help": "LoRA scale numerator (the update is scaled by alpha / r)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    towers: tuple[str, ...] = ("visual", "text")  # which towers get adapters
    modules: tuple[str, ...] = ("attn", "mlp.c_fc", "mlp.c_proj")  # module names inside each residual block
    # "proj" alone adapts an HF text tower's projection and leaves its transformer frozen, whose features
    # are then cached (hysafe.models.hf_text_cache)
    text_modules: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "the text tower's LoRA modules, comma-separated (default: those of the image tower); "
            "for a Hugging Face text tower 'attn,proj' (attention and projection: the demo's default), "
            "'proj' (the projection alone: the transformer frozen, its features cached) or "
            "'attn,mlp.c_fc,mlp.c_proj,proj'"
        },
    )
    # a ResNet image tower (open_clip's ModifiedResNet, e.g. RN50): these modules of every bottleneck block.
    # Not its attention pool: that forward reads the projection weights directly, so adapters there would be
    # dead in training and appear only when merged
    resnet_modules: tuple[str, ...] = ("conv1", "conv2", "conv3")

    def __post_init__(self):
        self.towers = tuple(self.towers)
        self.modules = tuple(self.modules)
        if self.text_modules is not None:
            self.text_modules = tuple(self.text_modules)
            if not self.text_modules:
                raise ValueError("LoraConfig.text_modules must name at least one module (or be None)")
        self.resnet_modules = tuple(self.resnet_modules)
        if any(m.startswith("attnpool") for m in self.resnet_modules):
            raise ValueError(
                "LoRA cannot adapt a ResNet tower's attention pool (its forward reads the projection "
                "weights directly, so peft's adapters would never run); choose bottleneck modules"
            )
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha (--lora-alpha) must be a finite number > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = set(self.towers) - {"visual", "text"}
        if unknown or not self.towers:
            raise ValueError(
                f"LoRA towers must be a non-empty subset of ('visual', 'text'), got {self.towers}"
            )


def _tower_image_size(visual: nn.Module) -> tuple[int, int] | None:
    """The input size an image tower was built for (None when it does not say, e.g. a timm tower)."""
    size = getattr(visual, "image_size", None)
    if isinstance(size, int):
        return size, size
    return tuple(size) if isinstance(size, (tuple, list)) and len(size) == 2 else None


def check_image_batch(images: torch.Tensor, visual: nn.Module) -> None:
    """Refuse what the image tower cannot take with a message naming the expected shape, before torch
    fails deep inside it (a missing batch dimension, raw pixels of another size)."""
    size = _tower_image_size(visual)
    expected = f"(B, 3, {size[0]}, {size[1]})" if size else "(B, 3, H, W)"
    wrong = (
        images.dim() != 4 or images.shape[1] != 3 or (size is not None and tuple(images.shape[-2:]) != size)
    )
    if wrong:
        raise ValueError(
            f"encode_image expects preprocessed images of shape {expected} (model.preprocess makes "
            f"them from PIL images), got {tuple(images.shape)}"
        )


class OpenClipBackbone(nn.Module):
    """An open_clip model as a hysafe backbone (``self.model``), optionally with peft LoRA adapters.

    With adapters, ``self.peft`` is the ``PeftModel`` wrapping the same modules (kept for
    ``merge_and_unload``); parameter names stay ``model.*`` either way.
    """

    def __init__(self, model: nn.Module, preprocess: Callable, tokenizer: Callable, config: BackboneConfig):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.config = config
        self.peft = None
        self.finetune_kind: str | None = None  # set when the weights are a merged hysafe fine-tune

    @property
    def embed_dim(self) -> int:
        return (
            int(self.model.text_projection.shape[1])
            if hasattr(self.model, "text_projection")
            else int(self.model.visual.output_dim)
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        """open_clip's (learnable, stored as log) logit scale."""
        return self.model.logit_scale.exp()

    @property
    def has_adapters(self) -> bool:
        return self.peft is not None

    @property
    def rebuildable(self) -> bool:
        """Whether the frozen weights can be rebuilt from the config alone (adapter checkpoints)."""
        return self.config.pretrained is not None

    def train(self, mode: bool = True) -> "OpenClipBackbone":
        """Train mode, except for BatchNorm layers with frozen weights (a ResNet tower under LoRA): they
        keep their running statistics, as a frozen backbone should."""
        super().train(mode)
        if mode:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters(recurse=False)
                ):
                    m.eval()
        return self

    #: the longest sequence whose bf16 CPU training forward takes the math attention kernel
    # (hysafe.models.attention);
    #: 0 leaves the choice to torch (the reference loop's)
    math_attention_max_tokens: int = MATH_MAX_TOKENS

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, self.model.visual)
        with self._attention(self.model.visual, image_tokens(self.model.visual), images.device):
            return self.model.encode_image(images, normalize=False)

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        with self._attention(getattr(self.model, "text", self.model), tokens.shape[-1], tokens.device):
            if hf_text_type(self.model) is not None:
                cached = cached_hf_text_features(self.model, tokens)
                return cached if cached is not None else trimmed_hf_text_features(self.model, tokens)
            return trimmed_text_features(self.model, tokens)

    def _attention(self, tower: nn.Module, tokens: int | None, device: torch.device):
        """The attention kernel rule for one tower's call; a checkpointed tower recomputes its blocks in the
        backward pass, outside this call, so it keeps torch's choice (the recomputation must match)."""
        checkpointed = getattr(getattr(tower, "transformer", None), "grad_checkpointing", False)
        return training_attention(
            None if checkpointed else tokens,
            device,
            compute_dtype(tower, device),
            self.math_attention_max_tokens,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute both towers' block activations in the backward pass (open_clip's own switch)."""
        self.model.set_grad_checkpointing(enable)

    def frozen_reference(self) -> "OpenClipBackbone":
        """The original towers: a deep copy with gradients off, in eval mode (taken before adapters)."""
        if self.has_adapters:
            raise ValueError("take the frozen reference before adding LoRA adapters")
        ref = OpenClipBackbone(copy.deepcopy(self.model), self.preprocess, self.tokenizer, self.config)
        return ref.requires_grad_(False).eval()

    def add_lora(self, config: "LoraConfig") -> None:
        self.peft = apply_lora(self.model, config)

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The open_clip state dict with LoRA merged into the weights (the live model is untouched)."""
        model = copy.deepcopy(self.peft).merge_and_unload() if self.has_adapters else self.model
        return dict(model.state_dict())


def open_clip_name(config: BackboneConfig) -> str:
    """The name open_clip builds ``config``'s model by, its architecture registered first: a config the
    backbone carries (``model_cfg``: converted from transformers, or an HF text tower
    ``"VISION+hf:SOURCE"``, :mod:`hysafe.models.hf_text`) or one of open_clip's and hysafe's own."""
    register_model_configs()
    hf = split_hf_text_name(config.model)
    if hf is not None and config.model_cfg is None:
        config.model_cfg = hf_text_model_cfg(*hf)
    name = config.model
    if config.model_cfg is not None:
        name = registered_name(config.model, config.model_cfg)
        register_model_config(name, config.model_cfg)
    if name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {config.model!r}; choose one of open_clip.list_models() "
            f"(e.g. 'ViT-B-32', 'ViT-L-14', or {TINY_MODEL!r}), or an HF text tower 'VISION+hf:FOLDER'"
        )
    return name


def _key_summary(message: str) -> str:
    """torch's load_state_dict error in one line: how many keys are missing and unexpected, a few named."""
    parts = []
    for what in ("Missing", "Unexpected"):
        found = re.search(
            rf"{what} key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s+\w+ key|\.\s*\n)", message, re.S
        )
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(
                f"{what.lower()} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            )
    shapes = message.count("size mismatch for")
    if shapes:
        parts.append(f"{shapes} of other shapes")
    return "; ".join(parts) if parts else message.splitlines()[0][:300]


def _mismatch_message(config: BackboneConfig, e: BaseException) -> str:
    """Why a local file does not load into the model, in one line: a hysafe checkpoint (which
    hysafe.load reads), or weights of another model, with the keys summarised."""
    meta = _hysafe_metadata(config.pretrained)
    if meta is not None:
        kind = (meta.get("config") or {}).get("kind", "")
        return (
            f"{config.pretrained}: a hysafe {kind} {meta.get('form', '')} checkpoint (load it with "
            "hysafe.load), not the CLIP weights a model is built from (e.g. a demo's "
            "checkpoints/clip-pretrained.safetensors)"
        )
    return (
        f"{config.pretrained}: does not load into open_clip {config.model!r} (a checkpoint of another "
        f"model or width?): {type(e).__name__}: {_key_summary(str(e))}"
    )


def _unpickling_message(path: str) -> str:
    """Why torch.load refused ``path``: a pickle (a torch file starts as a zip or a pickle) with more
    than weights, or no torch file at all."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return (
            f"{path}: a pickle that is not plain weights; hysafe never unpickles code. "
            "Convert it to .safetensors (or a weights-only torch file) first"
        )
    return f"{path}: not a weights file (neither safetensors nor a torch checkpoint)"


def create_backbone(config: BackboneConfig, *, device: str | torch.device = "cpu") -> OpenClipBackbone:
    """Build an open_clip model, its eval preprocess and tokenizer, with clear errors on bad sources."""
    name = open_clip_name(config)
    if config.is_local() and not os.path.isfile(config.pretrained):
        raise FileNotFoundError(f"pretrained checkpoint file not found: {config.pretrained}")
    check_device(device)
    try:
        with _quiet_random_init(config), _quiet_hf_text(config):
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=config.pretrained, precision=config.precision, device=device
            )
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) refused it: nothing was executed
        raise ValueError(_unpickling_message(config.pretrained)) from e
    except ValueError as e:  # transformers refuses an HF text model's config (e.g. heads vs width)
        source = recorded_text_source(config.model_cfg)
        if source is None:
            raise
        raise ValueError(f"{source}: its config.json does not build a text model ({e})") from e
    except (
        RuntimeError,
        AssertionError,
        KeyError,
    ) as e:  # unknown tag, failed download, mismatched state dict
        if config.is_local():
            raise ValueError(_mismatch_message(config, e)) from e
        raise RuntimeError(
            f"could not load pretrained tag {config.pretrained!r} for {config.model!r}: {e}. "
            "Offline? Pass a local checkpoint file path as pretrained."
        ) from e
    tokenizer = open_clip.get_tokenizer(name)
    logger.info(
        "built %s (pretrained=%s, %.1fM params)",
        config.model,
        config.pretrained,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    backbone = OpenClipBackbone(model, preprocess, tokenizer, config)
    backbone.finetune_kind, origin = finetune_record(config.pretrained) if config.is_local() else (None, None)
    config.origin = config.origin or origin
    return backbone


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision name; ``None`` for full fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_device(device: str | torch.device) -> None:
    """Refuse a CUDA device on a machine without one, before any weights are loaded."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} requested, but this machine has no usable CUDA GPU "
            "(torch.cuda.is_available() is False); use --device cpu"
        )


def _quiet_hf_text(config: BackboneConfig):
    """:func:`~hysafe.models.hf_text_load.quiet_hf_text_load` for a CLIP with an HF text tower."""
    hf = split_hf_text_name(config.model)
    return quiet_hf_text_load(hf[1]) if hf is not None else nullcontext()


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init(config: BackboneConfig):
    """open_clip warns on every random initialisation; hysafe asked for it, so it says so itself."""
    if config.pretrained is not None:
        yield
        return
    logger.info("building %s with random weights (pretrained=None)", config.model)
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def lora_target_regex(config: LoraConfig, resnet_visual: bool = False, hf_text: str | None = None) -> str:
    """Regex (peft ``target_modules``) over open_clip module names for the chosen towers/modules;
    ``resnet_visual``: the image tower is a ModifiedResNet (``config.resnet_modules``); ``hf_text``: the
    text tower is a Hugging Face model of this ``model_type``
    (:func:`~hysafe.models.hf_text.hf_lora_target`)."""
    block = "|".join(re.escape(m) for m in config.modules)
    text_modules = config.text_modules or config.modules
    text_block = "|".join(re.escape(m) for m in text_modules)
    tower = {"text": rf"transformer\.resblocks\.\d+\.({text_block})"}
    if hf_text is not None and "text" in config.towers:
        tower["text"] = hf_lora_target(hf_text, text_modules)
    if resnet_visual:
        convs = "|".join(re.escape(m) for m in config.resnet_modules) or "(?!)"  # (?!): no module
        tower["visual"] = rf"visual\.layer\d+\.\d+\.({convs})"
    else:
        tower["visual"] = rf"visual\.transformer\.resblocks\.\d+\.({block})"
    return rf"^({'|'.join(tower[t] for t in config.towers)})$"


def lora_targets(model: nn.Module, config: LoraConfig) -> tuple[str, list[str]]:
    """The target regex for ``model``'s towers and the module names it matches; a chosen tower whose
    architecture has none of the targets is an error (an adapter-less tower would train nothing)."""
    visual = getattr(model, "visual", None)
    target = lora_target_regex(
        config, resnet_visual=type(visual).__name__ == "ModifiedResNet", hf_text=hf_text_type(model)
    )
    names = [n for n, _ in model.named_modules() if re.fullmatch(target, n)]
    for tower in config.towers:
        if not any(n.startswith("visual.") == (tower == "visual") for n in names):
            kind = type(visual).__name__ if tower == "visual" else hf_text_type(model) or "text transformer"
            raise ValueError(
                f"no module of the {tower} tower ({kind}) matches the LoRA targets {target!r}; "
                f"adapt the other tower only (LoraConfig(towers=...)) or name its modules "
                f"(LoraConfig.modules / resnet_modules)"
            )
    return target, names


def apply_lora(model: nn.Module, config: LoraConfig) -> Any:
    """Wrap ``model`` with peft LoRA adapters; returns the ``PeftModel`` (base weights frozen).

    The adapted open_clip model stays reachable as ``peft_model.base_model.model``. The adapters' input
    dropout draws only the dropped positions on CPU (:mod:`hysafe.models.lora_dropout`: same distribution, ~4x
    cheaper than torch's per-element ``bernoulli_`` at p = 0.1).
    """
    import peft

    target, names = lora_targets(model, config)
    peft_config = peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=target, bias="none"
    )
    peft_model = peft.get_peft_model(model, peft_config)
    use_sparse_dropout(peft_model)
    logger.info("LoRA on %d modules (r=%d, alpha=%g)", len(names), config.r, config.alpha)
    return peft_model
