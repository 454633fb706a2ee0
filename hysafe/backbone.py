"""open_clip backbones and LoRA adapters.

Any open_clip model name works, with ``pretrained`` either an open_clip tag (downloaded by
open_clip when online), a local checkpoint file (``.safetensors``, ``.pt``, ``.bin``), or ``None``
for random initialisation. ``hysafe-tiny`` is a small registered config used by the tests and the
demo (3.3M parameters, 32x32 images).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_MODEL",
    "BackboneConfig",
    "LoraConfig",
    "Backbone",
    "register_model_configs",
    "create_backbone",
    "apply_lora",
    "lora_target_regex",
]

TINY_MODEL = "hysafe-tiny"
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def register_model_configs() -> None:
    """Register hysafe's bundled open_clip configs (idempotent)."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


@dataclass
class BackboneConfig:
    """Which open_clip model to build and where its weights come from."""

    model: str = "ViT-B-32"  # open_clip model name (open_clip.list_models())
    pretrained: str | None = None  # open_clip tag, local checkpoint path, or None (random init)
    precision: str = "fp32"  # open_clip precision: fp32, bf16, fp16, amp, ...

    def is_local(self) -> bool:
        p = self.pretrained
        return p is not None and (os.sep in p or p.endswith(_CHECKPOINT_SUFFIXES) or os.path.exists(p))


@dataclass
class LoraConfig:
    """LoRA adapter settings (defaults from the HySAC reference code: r=16, alpha=1, dropout=0.1)."""

    r: int = 16
    alpha: float = 1.0
    dropout: float = 0.1
    towers: tuple[str, ...] = ("visual", "text")  # which towers get adapters
    modules: tuple[str, ...] = ("attn", "mlp.c_fc", "mlp.c_proj")  # module names inside each residual block

    def __post_init__(self):
        self.towers = tuple(self.towers)
        self.modules = tuple(self.modules)
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = set(self.towers) - {"visual", "text"}
        if unknown or not self.towers:
            raise ValueError(f"LoRA towers must be a non-empty subset of ('visual', 'text'), got {self.towers}")


@dataclass
class Backbone:
    model: nn.Module
    preprocess: Callable
    tokenizer: Callable
    config: BackboneConfig = field(default_factory=BackboneConfig)


def create_backbone(config: BackboneConfig, *, device: str | torch.device = "cpu") -> Backbone:
    """Build an open_clip model, its eval preprocess and tokenizer, with clear errors on bad sources."""
    register_model_configs()
    if config.model not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {config.model!r}; choose one of open_clip.list_models() "
            f"(e.g. 'ViT-B-32', 'ViT-L-14', or {TINY_MODEL!r})"
        )
    if config.is_local() and not os.path.isfile(config.pretrained):
        raise FileNotFoundError(f"pretrained checkpoint file not found: {config.pretrained}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            config.model, pretrained=config.pretrained, precision=config.precision, device=device
        )
    except RuntimeError as e:  # unknown tag, failed download, mismatched state dict
        where = "local checkpoint" if config.is_local() else "pretrained tag"
        raise RuntimeError(
            f"could not load {where} {config.pretrained!r} for {config.model!r}: {e}. "
            "Offline? Pass a local checkpoint file path as pretrained."
        ) from e
    tokenizer = open_clip.get_tokenizer(config.model)
    logger.info("built %s (pretrained=%s, %.1fM params)", config.model, config.pretrained,
                sum(p.numel() for p in model.parameters()) / 1e6)
    return Backbone(model=model, preprocess=preprocess, tokenizer=tokenizer, config=config)


def lora_target_regex(config: LoraConfig) -> str:
    """Regex (peft ``target_modules``) over open_clip module names for the chosen towers/modules."""
    prefixes = {"visual": r"visual\.transformer", "text": r"transformer"}
    towers = "|".join(prefixes[t] for t in config.towers)
    modules = "|".join(re.escape(m) for m in config.modules)
    return rf"^({towers})\.resblocks\.\d+\.({modules})$"


def apply_lora(model: nn.Module, config: LoraConfig) -> Any:
    """Wrap ``model`` with peft LoRA adapters; returns the ``PeftModel`` (base weights frozen).

    The adapted open_clip model stays reachable as ``peft_model.base_model.model``.
    """
    import peft

    target = lora_target_regex(config)
    names = [n for n, _ in model.named_modules() if re.fullmatch(target, n)]
    if not names:
        raise ValueError(f"no module of this backbone matches the LoRA targets {target!r}")
    peft_config = peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=target, bias="none"
    )
    peft_model = peft.get_peft_model(model, peft_config)
    logger.info("LoRA on %d modules (r=%d, alpha=%g)", len(names), config.r, config.alpha)
    return peft_model

