"""Where a Hugging Face text model comes from: a local ``save_pretrained`` folder or a hub id, checked
before transformers reads it, so that a wrong folder, an unreadable config, missing weights or
tokenizer files, a model that is not a text encoder, or a hub that cannot be reached (offline) is an
error that names the source and what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "HF_WEIGHT_FILES",
    "HF_TOKENIZER_FILES",
    "is_local_source",
    "check_local_files",
    "hf_config",
    "check_text_model",
]


def is_local_source(source: str) -> bool:
    """A folder path (existing, or absolute / relative-looking); anything else is a hub id."""
    return os.path.exists(source) or source.startswith((os.sep, ".", "~"))


#: the weight files ``save_pretrained`` writes (one of them, or its index, must be in a local folder)
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: the vocabulary files of the tokenizers of the mapped text towers (BERT, RoBERTa, XLM-R)
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def _check_local_folder(folder: Path) -> None:
    """A local text model folder holds a config and weights; errors name the folder and what is missing."""
    if not folder.exists():
        raise FileNotFoundError(f"Hugging Face text model folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(
            f"{folder}: a file, not a Hugging Face model folder; give the folder that holds it "
            "(config.json, weights, tokenizer files)"
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder}: not a Hugging Face model folder (no config.json); give the folder that "
            "save_pretrained wrote (config.json, weights, tokenizer files)"
        )


def check_local_files(folder: Path) -> None:
    """A local text model folder's weights and tokenizer files are there (before transformers reads them)."""
    for what, names in (("weights", HF_WEIGHT_FILES), ("tokenizer", HF_TOKENIZER_FILES)):
        if not any((folder / name).is_file() for name in names):
            raise ValueError(
                f"{folder}: a Hugging Face text model folder without {what} (none of {', '.join(names)}); "
                "give the folder that save_pretrained wrote for the model and its tokenizer"
            )


def _unreachable_hub(source: str) -> str | None:
    """The hub's host name when ``source`` (a hub id) is not in the Hugging Face cache and that host does
    not resolve (offline): transformers would retry for half a minute before saying so."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(source, "config.json"), str):
            return None
    except Exception:  # not a valid repo id: transformers says so itself
        return None
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return host
    return None


def hf_config(source: str):
    """The transformers config at ``source``, with errors that name the folder and what is wrong."""
    from transformers import AutoConfig

    local = is_local_source(source)
    if local:
        _check_local_folder(Path(source).expanduser())
    elif (host := _unreachable_hub(source)) is not None:
        raise ValueError(
            f"could not read the Hugging Face config of {source!r}: {host} does not resolve (offline?) "
            "and the model is not in the Hugging Face cache; give a local folder"
        )
    try:
        return AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError, KeyError) as e:
        if local:
            raise ValueError(
                f"{Path(source).expanduser() / 'config.json'}: not a readable Hugging Face config "
                f"({type(e).__name__}: {e})"
            ) from e
        raise ValueError(
            f"could not read the Hugging Face config of {source!r} ({type(e).__name__}: {e}); offline? "
            "give a local folder"
        ) from e


def check_text_model(source: str, config) -> None:
    from open_clip.hf_configs import arch_dict

    model_type = getattr(config, "model_type", None)
    if model_type not in arch_dict:
        raise ValueError(
            f"{source}: a {model_type!r} model, not a text encoder open_clip's HFTextEncoder builds "
            f"(model types {', '.join(sorted(arch_dict))})"
        )
