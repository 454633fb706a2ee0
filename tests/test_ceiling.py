"""The image tower's supervised ceiling (issue 28, item 8): what a tower trained on the labels reaches,
and when the demo measures it."""

import pytest
import torch
from torch import nn

from hysafe.demo import DemoConfig
from hysafe.demo.ceiling import needs_image_ceiling
from hysafe.evaluation.ceiling import CeilingConfig, image_tower_ceiling, labelled_images


class _Split:
    """A quadruplet split as the ceiling reads it: rows with a safe and an unsafe image."""

    def __init__(self, n: int, seed: int, cue: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.safe = torch.rand(n, 3, 16, 16, generator=g) * 0.3
        self.unsafe = torch.rand(n, 3, 16, 16, generator=g) * 0.3
        if cue:
            self.unsafe[:, 0, 4:8, 4:8] += 0.7  # a red patch on every unsafe image

    def __len__(self):
        return len(self.safe)

    def __getitem__(self, i):
        return {"image": self.safe[i], "unsafe_image": self.unsafe[i]}


class _Tower(nn.Module):
    output_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.net(x)


def test_a_tower_that_can_separate_the_images_reaches_a_ceiling_of_zero_and_is_left_unchanged():
    torch.manual_seed(0)
    tower = _Tower()
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    splits = (_Split(64, 0), _Split(32, 1), _Split(32, 2))
    rec = image_tower_ceiling(tower, splits, CeilingConfig(epochs=40, lr=1e-2, batch_size=16))
    assert rec["roc_auc"] == 1.0 and rec["separated"] and rec["unsafe_below_safe_95"] == 0.0
    assert rec["safe_up_95"] < rec["unsafe_low_05"] and rec["epochs"] == 40 and rec["seconds"] >= 0
    for k, v in tower.state_dict().items():  # the ceiling trains a copy
        assert torch.equal(v, before[k]), k


def test_without_a_cue_the_ceiling_is_near_chance():
    torch.manual_seed(0)
    splits = (_Split(64, 0, cue=False), _Split(32, 1, cue=False), _Split(64, 2, cue=False))
    rec = image_tower_ceiling(_Tower(), splits, CeilingConfig(epochs=5, lr=1e-2, batch_size=16))
    assert 0.3 < rec["roc_auc"] < 0.7 and not rec["separated"] and rec["unsafe_below_safe_95"] > 0.5


def test_labelled_images_are_safe_then_unsafe():
    x, y = labelled_images(_Split(3, 0))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="no quadruplets"):
        labelled_images(_Split(0, 0))


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"epochs": 2.5}, {"batch_size": True}, {"lr": 0.0}, {"lr": float("nan")}]
)
def test_ceiling_settings_are_checked_by_name(bad):
    with pytest.raises(ValueError, match=f"CeilingConfig.{next(iter(bad))}"):
        CeilingConfig(**bad)


def test_the_demo_measures_the_ceiling_only_where_the_images_overlap():
    overlap = {"V": {"up_95": 0.4}, "G": {"low_05": 0.35}}
    apart = {"V": {"up_95": 0.3}, "G": {"low_05": 0.35}}
    assert needs_image_ceiling("auto", overlap) and not needs_image_ceiling("auto", apart)
    assert needs_image_ceiling("always", apart) and not needs_image_ceiling("never", overlap)
    assert not needs_image_ceiling("auto", {})  # a model without distances (not HySAC)
    with pytest.raises(ValueError, match="image_ceiling must be 'auto', 'always' or 'never'"):
        DemoConfig(image_ceiling="sometimes")


def test_the_demo_trains_the_ceiling_for_its_ceiling_epochs(tmp_path, monkeypatch):
    """``DemoConfig.ceiling_epochs`` (``--ceiling-epochs``; --quick: 3) reaches the ceiling's training."""
    import types

    import hysafe.demo.ceiling as stage

    seen = {}

    def ceiling(tower, splits, config, progress):
        seen["epochs"] = config.epochs
        return {"unsafe_below_safe_95": 0.2}

    tower = types.SimpleNamespace(backbone=types.SimpleNamespace(model=types.SimpleNamespace(visual=None)))
    monkeypatch.setattr(stage, "create_model", lambda *a, **k: tower)
    monkeypatch.setattr(stage, "image_tower_ceiling", ceiling)
    monkeypatch.setattr(stage, "image_overlap", lambda model, split: 0.3)
    for cfg, epochs in (
        (DemoConfig(image_ceiling="always"), 50),
        (DemoConfig.quick(image_ceiling="always"), 3),
    ):
        shares = stage.image_ceiling_stage(cfg, "base", None, (None, None, None), {}, tmp_path)
        assert shares == (0.3, 0.2) and seen["epochs"] == epochs == cfg.ceiling_epochs
