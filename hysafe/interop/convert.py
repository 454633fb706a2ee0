"""transformers ``CLIPModel`` <-> open_clip: configs, state dicts, tokenizer files, folders.

The open_clip architecture is derived from the transformers config (any size: the named ViT-B/32
... H/14 fall out of it, tiny test configs too); state dicts map q/k/v <-> packed ``in_proj``,
class/positional embeddings, layer norms, projections (transposed) and the logit scale.
(Over 300 lines: both directions share one name map and one config derivation, so they stay together.)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from ..models.backbone import BackboneConfig
from ..models.safety_model import ModelConfig, SafetyModel, build_model
from ..utils.extras import require_extra
from ..utils.folder_lock import make_folder

logger = logging.getLogger(__name__)

__all__ = [
    "open_clip_config_from_hf",
    "hf_config_from_open_clip",
    "open_clip_name",
    "hf_to_open_clip",
    "open_clip_to_hf",
    "load_transformers_clip",
    "export_transformers",
    "write_clip_tokenizer",
    "HYSAC_SIDE_FILE",
]

HYSAC_SIDE_FILE = "hysafe_hysac.json"

# transformers name -> open_clip name, per residual block and outside the blocks
_BLOCK = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_TOWER = {
    "vision_model.encoder.layers": "visual.transformer.resblocks",
    "text_model.encoder.layers": "transformer.resblocks",
}
_SAME = {
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}


def _transformers():
    require_extra("hf", "transformers interop")
    import transformers

    return transformers


# ------------------------------------------------------------------------------ configs


def open_clip_config_from_hf(config) -> dict:
    """The open_clip model config of a transformers ``CLIPConfig``."""
    v, t = config.vision_config, config.text_config
    if v.hidden_act != t.hidden_act or v.hidden_act not in ("quick_gelu", "gelu"):
        raise ValueError(
            f"unsupported activations {v.hidden_act!r}/{t.hidden_act!r}: "
            f"open_clip towers share quick_gelu or gelu"
        )
    return {
        "embed_dim": config.projection_dim,
        "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": v.image_size,
            "layers": v.num_hidden_layers,
            "width": v.hidden_size,
            "head_width": v.hidden_size // v.num_attention_heads,
            "patch_size": v.patch_size,
            "mlp_ratio": v.intermediate_size / v.hidden_size,
        },
        "text_cfg": {
            "context_length": t.max_position_embeddings,
            "vocab_size": t.vocab_size,
            "width": t.hidden_size,
            "heads": t.num_attention_heads,
            "layers": t.num_hidden_layers,
            "mlp_ratio": t.intermediate_size / t.hidden_size,
        },
    }


def _normalised(cfg: dict) -> dict:
    """An open_clip config with the defaults of the fields the converters set made explicit."""
    v, t = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    v.setdefault("head_width", 64)
    v.setdefault("mlp_ratio", 4.0)
    t.setdefault("mlp_ratio", 4.0)
    t.setdefault("heads", 8)
    return {
        "embed_dim": cfg.get("embed_dim"),
        "quick_gelu": bool(cfg.get("quick_gelu", False)),
        "vision_cfg": v,
        "text_cfg": t,
    }


def open_clip_name(cfg: dict) -> str | None:
    """The registered open_clip model whose architecture is ``cfg`` (e.g. ``ViT-L-14-quickgelu``)."""
    import open_clip

    target = _normalised(cfg)
    for name in open_clip.list_models():
        if _normalised(open_clip.get_model_config(name) or {}) == target:
            return name
    return None


def hf_config_from_open_clip(cfg: dict):
    """A transformers ``CLIPConfig`` for an open_clip model config (standard ViT towers only)."""
    tf = _transformers()
    hf_text = cfg.get("text_cfg", {}).get("hf_model_name")
    if hf_text:
        raise ValueError(
            "a transformers CLIPModel has CLIP's own text tower; this model's is the Hugging Face model "
            f"{hf_text}, so it cannot be exported as one. Its merged hysafe checkpoint is an open_clip "
            "file (CustomTextCLIP) that open_clip loads with the same model config"
        )
    v, t = _normalised(cfg)["vision_cfg"], _normalised(cfg)["text_cfg"]
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    text = dict(
        vocab_size=t["vocab_size"],
        hidden_size=t["width"],
        intermediate_size=int(t["width"] * t["mlp_ratio"]),
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        max_position_embeddings=t["context_length"],
        hidden_act=act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
        projection_dim=cfg["embed_dim"],
    )
    vision = dict(
        hidden_size=v["width"],
        intermediate_size=int(v["width"] * v["mlp_ratio"]),
        num_hidden_layers=v["layers"],
        num_attention_heads=v["width"] // v["head_width"],
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        hidden_act=act,
        projection_dim=cfg["embed_dim"],
    )
    return tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg["embed_dim"])


def _backbone_config(model: SafetyModel) -> dict:
    import open_clip

    b = model.config.backbone
    cfg = b.model_cfg or open_clip.get_model_config(b.model)
    if cfg is None:
        raise ValueError(f"no open_clip config for {b.model!r}")
    return cfg


# -------------------------------------------------------------------------- state dicts


def _block_names(hf_key: str) -> tuple[str, str] | None:
    """``(tower prefix, rest)`` of a residual-block key, e.g. ``('...resblocks.3', 'mlp.fc1.weight')``."""
    for hf_tower, oc_tower in _TOWER.items():
        if hf_key.startswith(hf_tower + "."):
            index, rest = hf_key[len(hf_tower) + 1 :].split(".", 1)
            return f"{oc_tower}.{index}", rest
    return None


def hf_to_open_clip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ``CLIPModel`` state dict as an open_clip ``CLIP`` state dict."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key in _SAME:
            out[_SAME[key]] = value.reshape(-1) if key.endswith("class_embedding") else value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()
        elif (names := _block_names(key)) is not None:
            block, rest = names
            module, _, param = rest.rpartition(".")
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{block}.attn.in_proj_{param}", {})[module[10]] = value
            elif module in _BLOCK:
                out[f"{block}.{_BLOCK[module]}.{param}"] = value
            else:
                raise ValueError(f"unexpected transformers CLIP key {key!r}")
        elif not key.endswith("position_ids"):
            raise ValueError(f"unexpected transformers CLIP key {key!r}")
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{name}: q/k/v projections incomplete (have {sorted(parts)})")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def open_clip_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """An open_clip ``CLIP`` state dict as a transformers ``CLIPModel`` state dict (inverse of
    :func:`hf_to_open_clip`)."""
    same, transposed = {v: k for k, v in _SAME.items()}, {v: k for k, v in _TRANSPOSED.items()}
    block, tower = {v: k for k, v in _BLOCK.items()}, {v: k for k, v in _TOWER.items()}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in same:
            out[same[key]] = value
        elif key in transposed:
            out[transposed[key]] = value.T.contiguous()
        elif key == "attn_mask" or key.endswith(".attn_mask"):
            continue
        else:
            oc_tower = next((t for t in tower if key.startswith(t + ".")), None)
            if oc_tower is None:
                raise ValueError(
                    f"open_clip key {key!r} has no transformers CLIP counterpart (not a standard ViT CLIP)"
                )
            index, rest = key[len(oc_tower) + 1 :].split(".", 1)
            prefix = f"{tower[oc_tower]}.{index}"
            module, _, param = rest.rpartition(".")
            if module == "attn" and param.startswith("in_proj_"):
                for name, part in zip("qkv", value.chunk(3), strict=True):
                    out[f"{prefix}.self_attn.{name}_proj.{param[len('in_proj_') :]}"] = part
            elif module in block:
                out[f"{prefix}.{block[module]}.{param}"] = value
            else:
                raise ValueError(f"open_clip key {key!r} has no transformers CLIP counterpart")
    return out


def _load_clip_model(base: str):
    tf = _transformers()
    try:
        return tf.CLIPModel.from_pretrained(base)
    except OSError as e:
        kind = (
            "local folder" if Path(base).exists() else "hub id (not cached here and not reachable: offline?)"
        )
        raise FileNotFoundError(
            f"CLIP base {base!r}: cannot load it as a transformers CLIPModel {kind}: {str(e).splitlines()[0]}"
        ) from e


def _model_on(kind: str, cfg: dict, sd_open_clip: dict[str, Tensor], device, **overrides) -> SafetyModel:
    name = open_clip_name(cfg)
    digest = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    backbone = BackboneConfig(
        model=name or f"hf-clip-{digest}", pretrained=None, model_cfg=None if name else cfg
    )
    model = build_model(ModelConfig(kind=kind, backbone=backbone, lora=None, **overrides), device=device)
    try:
        missing, unexpected = model.backbone.model.load_state_dict(sd_open_clip, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(
            f"converted weights do not fit open_clip {backbone.model!r} (weights of another architecture?): "
            f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}"
        ) from e
    missing = [k for k in missing if not k.endswith("attn_mask")]
    if missing or unexpected:
        raise ValueError(
            f"converted weights do not fit open_clip {backbone.model!r}: missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}"
        )
    if kind == "safeclip":  # the reference of a converted model is the converted weights themselves
        model.reference.model.load_state_dict(model.backbone.model.state_dict())
    return model.to(device)


def load_transformers_clip(
    path: str, kind: str = "safeclip", *, device: str | torch.device = "cpu"
) -> SafetyModel:
    """A transformers ``CLIPModel`` (folder or hub id; e.g. the released Safe-CLIP
    ``aimagelab/safeclip_vit-l_14``) as a hysafe ``SafeCLIP`` (default) or ``CLIP``."""
    if kind not in ("safeclip", "clip"):
        raise ValueError(f"kind must be 'safeclip' or 'clip', got {kind!r}")
    clip = _load_clip_model(path)
    return _model_on(
        kind, open_clip_config_from_hf(clip.config), hf_to_open_clip(clip.state_dict()), device
    ).eval()


# ----------------------------------------------------------------------------- export


def _bpe_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` of open_clip's CLIP BPE (the vocabulary OpenAI CLIP uses)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = (
        vocab
        + [v + "</w>" for v in vocab]
        + ["".join(m) for m in merges]
        + ["<|startoftext|>", "<|endoftext|>"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False)
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def write_clip_tokenizer(folder: str | Path, context_length: int = 77):
    """A transformers ``CLIPTokenizer`` folder with open_clip's vocabulary; returns the tokenizer.

    Up to the end-of-text token both give the same ids (truncated captions included); after it,
    transformers pads with ``<|endoftext|>`` (as OpenAI's released tokenizer does) where open_clip
    pads with 0. Both text towers pool at the first end-of-text token, so embeddings agree."""
    tf = _transformers()
    vocab, merges = _bpe_files(Path(folder))
    tok = tf.CLIPTokenizer(
        str(vocab), str(merges), model_max_length=context_length, pad_token="<|endoftext|>"
    )
    tok.save_pretrained(str(folder))
    return tok


#: PIL resampling filters by open_clip's interpolation names (transformers stores PIL's numbers)
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def image_processor_options(preprocess_cfg: dict) -> dict:
    """``CLIPImageProcessor`` options that preprocess as open_clip's ``preprocess_cfg`` does
    (resize the shortest side, centre crop, or squash; the model's mean and std)."""
    size = preprocess_cfg["size"]
    height, width = size if isinstance(size, (tuple, list)) else (size, size)
    mode = preprocess_cfg.get("resize_mode", "shortest")
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    square = height == width or mode == "squash"
    if mode not in ("shortest", "squash") or interpolation not in _PIL_RESAMPLE or not square:
        raise ValueError(
            f"open_clip preprocessing {mode!r} / {interpolation!r} at {height}x{width} "
            "has no CLIPImageProcessor form"
        )
    crop = {"height": height, "width": width}
    return {
        "do_resize": True,
        "size": crop if mode == "squash" else {"shortest_edge": height},
        "resample": _PIL_RESAMPLE[interpolation],
        "do_center_crop": mode == "shortest",
        "crop_size": crop,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocess_cfg["mean"]),
        "image_std": list(preprocess_cfg["std"]),
        "do_convert_rgb": True,
    }


def _new_folder(out: Path) -> Path:
    """``out``, checked to be a new or empty folder, with its parent folders made."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not a folder; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; choose a new folder")
    make_folder(out.parent, what=str(out), advice="choose a new folder")
    return out


def export_transformers(model: SafetyModel, out_dir: str | Path) -> Path:
    """Write ``model`` as a transformers ``CLIPModel`` folder (+ tokenizer), with its text encoder
    alone in ``text_encoder/`` (a ``CLIPTextModel``) and ``tokenizer/``; HySAC's scalars and bounds
    go to ``hysafe_hysac.json``, and HySAC's own logit scale is the folder's ``logit_scale``. The
    image preprocessing is ``preprocessor_config.json`` (``CLIPProcessor.from_pretrained`` loads
    the folder). Written to a temporary folder and renamed: never half-written."""
    tf = _transformers()
    out = _new_folder(Path(out_dir))
    cfg = _backbone_config(model)
    hf_config = hf_config_from_open_clip(cfg)
    sd = open_clip_to_hf(model.backbone.merged_state_dict())
    if model.kind == "hysac":  # HySAC's contrastive temperature, not the backbone's unused one
        sd["logit_scale"] = model.logit_scale.detach().log().reshape(sd["logit_scale"].shape).clone()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # beside it: renamed, not copied
    try:
        clip = tf.CLIPModel(hf_config)
        clip.load_state_dict(sd, strict=True)
        clip.save_pretrained(str(tmp))
        text = tf.CLIPTextModel(hf_config.text_config)
        # transformers 4 nests, 5 does not
        keep_prefix = any(k.startswith("text_model.") for k in text.state_dict())
        text.load_state_dict(
            {
                (k if keep_prefix else k[len("text_model.") :]): v
                for k, v in sd.items()
                if k.startswith("text_model.")
            },
            strict=True,
        )
        text.save_pretrained(str(tmp / "text_encoder"))
        for folder in (tmp, tmp / "tokenizer"):
            write_clip_tokenizer(folder, cfg["text_cfg"]["context_length"])
        preprocess_cfg = model.backbone.model.visual.preprocess_cfg
        tf.CLIPImageProcessor(**image_processor_options(preprocess_cfg)).save_pretrained(str(tmp))
        if model.kind == "hysac":
            (tmp / HYSAC_SIDE_FILE).write_text(
                json.dumps(
                    {
                        "scalars": model.scalars(),
                        "bounds": model.bounds,
                        "curv": float(model.curv.detach()),
                        "note": "embedding = exp_map0(exp(log_alpha) * embeds, curv)",
                    },
                    indent=2,
                )
            )
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported %s to %s", model.kind, out)
    return out
