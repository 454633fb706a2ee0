import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    """Seeded generator: every random draw in a test goes through it."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def randomize_lora():
    """``randomize_lora(model, std=0.05, generator=None)``: draws every LoRA B matrix of ``model``
    from N(0, std) in place (peft starts them at zero, so the adapters would change nothing) and
    returns the model."""

    @torch.no_grad()
    def randomize(model, std: float = 0.05, generator: torch.Generator | None = None):
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std, generator=generator)
        return model

    return randomize


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A local open_clip checkpoint of the tiny config (random init, seeded): the offline
    stand-in for a pretrained tag."""
    import open_clip
    from safetensors.torch import save_file

    from hysafe.models.backbone import TINY_MODEL, register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    path = tmp_path_factory.mktemp("base") / "tiny-base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)
