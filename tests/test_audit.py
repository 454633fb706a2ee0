"""The independent audit's findings (issue 15), one test each; every test fails on the old behaviour."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from hysafe.cli.main import main
from hysafe.geometry import euclidean
from hysafe.geometry import lorentz as L
from hysafe.losses import ConeConfig, entailment_loss
from hysafe.models.backbone import TINY_MODEL, LoraConfig
from hysafe.models.checkpoint import read_metadata, save_model
from hysafe.models.features import FeatureDataset
from hysafe.models.safety_model import create_model
from hysafe.training.recipes import get_recipe

LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def _features(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, 16, generator=g) for k in ("image", "unsafe_image", "text", "unsafe_text")}


def test_feature_training_validates_on_held_out_rows_not_training_rows(tmp_path, monkeypatch):
    feats = _features(200, 0)
    save_file(feats, str(tmp_path / "train.safetensors"))
    save_file(_features(30, 1), str(tmp_path / "val.safetensors"))
    seen = {}

    def fake_train(model, data, recipe, config, val_data=None):
        seen["data"], seen["val"] = data, val_data
        return SimpleNamespace(steps=0, seconds=0.0, best_score=None, best_checkpoint=None, bounds=None)

    monkeypatch.setattr("hysafe.training.train", fake_train)
    argv = [
        "train",
        "--features",
        str(tmp_path / "train.safetensors"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main(argv) == 0
    train_rows = {tuple(r.tolist()) for r in seen["data"].features["text"]}
    val_rows = {tuple(r.tolist()) for r in seen["val"].features["text"]}
    assert len(val_rows) == 20 and len(train_rows) == 180 and not train_rows & val_rows
    assert main(argv + ["--val-features", str(tmp_path / "val.safetensors")]) == 0
    assert len(seen["val"]) == 30 and len(seen["data"]) == 200
    with pytest.raises(ValueError, match="cannot hold out"):
        FeatureDataset(**_features(1, 0)).split_holdout(0.1)


def test_cosine_logits_are_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 512, generator=g), torch.randn(64, 512, generator=g)
    exact = 100 * euclidean.cosine_pairwise(a.double(), b.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = 100 * euclidean.cosine_pairwise(a, b)
        elementwise = euclidean.cosine(a, b)
    assert logits.dtype == torch.float32 and elementwise.dtype == torch.float32
    assert (logits.double() - exact).abs().max() < 1e-4  # bf16 matmul: errors ~0.1-0.2 at scale 100


def test_float32_cone_margins_are_representable():
    # inside the saturated zone the aperture stays below pi/2 in float32 (1 - 1e-8 rounds to 1.0)
    x = torch.tensor([[0.01, 0.02]])
    assert (
        L.half_aperture(x, curv=1.0, min_radius=0.1).item()
        < torch.tensor(math.pi / 2, dtype=torch.float32).item()
    )
    # the slope at the saturation boundary stays bounded (asin'(1 - eps) <= 1/sqrt(2 eps))
    r = torch.linspace(0.19, 0.21, 4001)
    x = torch.zeros(4001, 3)
    x[:, 0] = r
    x.requires_grad_(True)
    L.half_aperture(x, curv=1.0, min_radius=0.1).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() < 5000  # 14,481 with the old margin
    y = x.detach() * 3  # on the ray beyond x: acos's argument sits at its margin
    x2 = x.detach().clone().requires_grad_(True)
    L.exterior_angle(x2, y, curv=1.0).sum().backward()
    assert torch.isfinite(x2.grad).all()


def test_relative_cone_radius_makes_the_entailment_loss_scale_free():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g, dtype=torch.float64) * 1e-3
    y = x * 1.5 + torch.randn(256, 8, generator=g, dtype=torch.float64) * 4e-4
    rel, absolute = ConeConfig(radius="relative", radius_ratio=0.5), ConeConfig()  # absolute: the papers

    def loss(cones, s):
        return float(entailment_loss(s * x, s * y, curv=1.0, **cones.loss_options()))

    # relative K: the same loss at any scale near the root (no reward for shrinking) ...
    assert loss(rel, 1.0) > 0.05 and loss(rel, 10.0) == pytest.approx(loss(rel, 1.0), rel=5e-3)
    # ... while an absolute K saturates every cone of a small configuration: ~zero loss, no ordering needed
    assert loss(absolute, 1.0) < 1e-3 and loss(absolute, 1000.0) > 0.05
    with pytest.raises(ValueError, match="radius_ratio must be in"):
        ConeConfig(radius_ratio=1.5)


def test_retraining_a_merged_safeclip_keeps_the_original_reference(tiny_base, randomize_lora, tmp_path):
    torch.manual_seed(0)
    tuned = create_model("safeclip", TINY_MODEL, tiny_base, lora=LORA)
    randomize_lora(tuned, std=0.5)  # a visible fine-tune
    merged = save_model(tuned, tmp_path / "merged.safetensors", merged=True)
    assert read_metadata(merged)["config"]["backbone"]["origin"] == str(Path(tiny_base).resolve())
    again = create_model("safeclip", TINY_MODEL, str(merged), lora=LORA)
    original = create_model("clip", TINY_MODEL, tiny_base, lora=None)
    tokens = original.tokenize(["a red circle"])
    with torch.no_grad():
        ref, base, live = (
            again.encode_text_ref(tokens),
            original.encode_text(tokens),
            again.encode_text(tokens),
        )
    assert torch.allclose(ref, base, atol=1e-5)  # the frozen reference is the original CLIP ...
    assert not torch.allclose(live, base, atol=1e-3)  # ... not the fine-tune being trained further
    get_recipe("safeclip").check_model(again)

    # a merged fine-tune that does not record its origin is refused for training, kept for inference
    meta = read_metadata(merged)
    meta["config"]["backbone"]["origin"] = None
    save_file(load_file(str(merged)), str(tmp_path / "old.safetensors"), {"hysafe": json.dumps(meta)})
    orphan = create_model("safeclip", TINY_MODEL, str(tmp_path / "old.safetensors"), lora=LORA)
    with pytest.raises(
        ValueError, match="merged safeclip fine-tune that does not record the weights it was tuned from"
    ):
        get_recipe("safeclip").check_model(orphan)
    with torch.no_grad():
        assert orphan.encode_text(tokens).shape == live.shape
