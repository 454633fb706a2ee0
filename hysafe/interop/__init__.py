"""transformers <-> open_clip, and the authors' released HySAC / Safe-CLIP weights.

* :func:`open_clip_config_from_hf` derives the open_clip architecture from a transformers
  ``CLIPConfig`` (any size: the named ViT-B/32 ... H/14 fall out of it, tiny test configs too);
  :func:`hf_to_open_clip` / :func:`open_clip_to_hf` map the state dicts (q/k/v <-> packed
  ``in_proj``, class/positional embeddings, layer norms, projections, logit scale).
* :func:`load_hysac_release` reads the released ``hysac_model.pth`` (a plain state dict of the
  authors' module: peft-wrapped transformers towers, LoRA on k/v/out projections, MLPs and the
  patch embedding; log-scalars ``curv``, ``visual_alpha``, ``textual_alpha``, ``logit_scale``) and
  ``hysac_bounds.json``, merges the LoRA deltas and returns a hysafe :class:`~hysafe.models.HySAC`
  whose embeddings equal the authors' computation.
* :func:`load_transformers_clip` loads a transformers ``CLIPModel`` folder (the released Safe-CLIP)
  as a hysafe ``SafeCLIP`` or ``CLIP``; :func:`export_transformers` writes a hysafe model as a
  ``CLIPModel`` folder, its text encoder alone as ``text_encoder/`` (what diffusers'
  ``StableDiffusionPipeline(text_encoder=...)`` takes) and CLIP tokenizer files built from
  open_clip's own BPE vocabulary.

Needs the ``hf`` extra (``pip install 'hysafe[hf]'``). Nothing here unpickles: torch files are
read with ``weights_only=True``.
"""

from .convert import (
    HYSAC_SIDE_FILE,
    export_transformers,
    hf_config_from_open_clip,
    hf_to_open_clip,
    load_transformers_clip,
    open_clip_config_from_hf,
    open_clip_name,
    open_clip_to_hf,
    write_clip_tokenizer,
)
from .release import HYSAC_BASE, HYSAC_REPO, load_hysac_release, merge_lora

__all__ = [
    "open_clip_config_from_hf",
    "hf_config_from_open_clip",
    "open_clip_name",
    "hf_to_open_clip",
    "open_clip_to_hf",
    "load_hysac_release",
    "merge_lora",
    "load_transformers_clip",
    "export_transformers",
    "write_clip_tokenizer",
    "HYSAC_REPO",
    "HYSAC_BASE",
    "HYSAC_SIDE_FILE",
]
