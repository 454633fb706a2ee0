"""LoRA input dropout from geometric gaps: distribution, values, gradients, reproducibility, peft wiring."""

import math

import pytest
import torch
from torch import nn

import hysafe.models.lora_dropout as lora_dropout
from hysafe.models.backbone import TINY_MODEL, BackboneConfig, LoraConfig, create_backbone
from hysafe.models.lora_dropout import SparseDropout, dropped_positions, sparse_dropout, use_sparse_dropout


def drop_mask(numel, p, seed):
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[dropped_positions(numel, p, torch.Generator().manual_seed(seed))] = True
    return mask


def binomial_chi2(mask, block, p):
    """Pearson chi-square of the drops per block of ``block`` elements against Binomial(block, p)."""
    counts = mask[: mask.numel() // block * block].view(-1, block).sum(1)
    observed = torch.bincount(counts, minlength=block + 1).double()
    expected = (
        torch.tensor(
            [math.comb(block, k) * p**k * (1 - p) ** (block - k) for k in range(block + 1)],
            dtype=torch.float64,
        )
        * counts.numel()
    )
    used = expected > 20  # pool nothing: drop the cells too rare for the chi-square approximation
    return float(((observed[used] - expected[used]) ** 2 / expected[used]).sum()), int(used.sum()) - 1


@pytest.mark.parametrize("p", [0.02, 0.1, 0.25, 0.6])
def test_each_element_dropped_independently_with_probability_p(p):
    n = 1_000_000
    mask = drop_mask(n, p, seed=1)
    assert abs(mask.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    pairs = (mask[:-1] & mask[1:]).double().mean().item()  # neighbours: P(both) = p^2
    assert abs(pairs - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)
    chi2, dof = binomial_chi2(mask, 8, p)
    assert chi2 < dof + 6 * math.sqrt(2 * dof)  # ~6 sigma of the chi-square distribution


def test_positions_are_sorted_unique_and_in_range():
    positions = dropped_positions(10_007, 0.2, torch.Generator().manual_seed(4))
    assert positions.dtype == torch.int64
    assert torch.all(positions[1:] > positions[:-1]) and positions.min() >= 0 and positions.max() < 10_007
    assert dropped_positions(0, 0.1).numel() == 0 and dropped_positions(100, 0.0).numel() == 0
    assert dropped_positions(10**6, 1e-30).numel() == 0  # a gap beyond int64 is clamped, not overflowed
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropped_positions(10, 1.0)


def test_short_draws_are_topped_up_without_changing_the_distribution(monkeypatch):
    monkeypatch.setattr(lora_dropout, "CHUNK_SIGMAS", 0.0)
    monkeypatch.setattr(lora_dropout, "CHUNK_EXTRA", 1)  # ~half of the draws need another round
    p, n = 0.1, 400
    rates = torch.stack([drop_mask(n, p, seed).double() for seed in range(2000)])
    assert abs(rates.mean().item() - p) < 5 * math.sqrt(p * (1 - p) / rates.numel())
    tail = rates[:, -40:].mean().item()  # the positions the first round often does not reach
    assert abs(tail - p) < 5 * math.sqrt(p * (1 - p) / (2000 * 40))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_values_and_gradient_are_inverted_dropout(dtype):
    p = 0.2
    x = torch.randn(9, 7, 4, dtype=dtype).transpose(0, 2).requires_grad_()  # non-contiguous input
    y = sparse_dropout(x, p, generator=torch.Generator().manual_seed(3))
    dropped = drop_mask(x.numel(), p, seed=3).view(x.shape)  # row-major positions of x's logical shape
    assert y.dtype == dtype and y.shape == x.shape and dropped.any() and not dropped.all()
    assert torch.equal(y[dropped], torch.zeros_like(y[dropped]))
    assert torch.equal(y[~dropped], (x * (1 / (1 - p)))[~dropped])
    upstream = torch.randn(x.shape, dtype=dtype)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, torch.where(dropped, 0.0, upstream * (1 / (1 - p))))


def test_module_is_reproducible_and_falls_back_to_torch():
    drop = SparseDropout(0.1)
    x = torch.randn(64, 33)
    torch.manual_seed(5)
    a = drop(x)
    torch.manual_seed(5)
    b = drop(x)
    torch.manual_seed(6)
    c = drop(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(SparseDropout(0.0)(x), x)
    big = SparseDropout(0.5)  # above MAX_SPARSE_P: torch's dropout, same stream as nn.Dropout
    torch.manual_seed(7)
    expected = nn.Dropout(0.5)(x)
    torch.manual_seed(7)
    assert torch.equal(big(x), expected)


def test_lora_backbone_uses_sparse_dropout_with_the_configured_p():
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(model=TINY_MODEL))
    backbone.add_lora(LoraConfig(r=2, alpha=4.0, dropout=0.2))
    lora_dropouts = [
        d
        for m in backbone.model.modules()
        if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
        for d in m.lora_dropout.values()
    ]
    assert lora_dropouts and all(type(d) is SparseDropout and d.p == 0.2 for d in lora_dropouts)
    assert use_sparse_dropout(backbone.model) == 0  # already swapped
    assert use_sparse_dropout(backbone.model, enable=False) == len(lora_dropouts)  # the reference's, back
    assert all(
        type(d) is nn.Dropout and d.p == 0.2
        for m in backbone.model.modules()
        if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
        for d in m.lora_dropout.values()
    )
    assert use_sparse_dropout(backbone.model) == len(lora_dropouts)
    backbone.train()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for name, module in backbone.model.named_modules():  # LoRA B starts at 0: give it a value
            if name.endswith("lora_B.default"):
                module.weight.fill_(0.1)
        first, second = backbone.image_features(images), backbone.image_features(images)
        assert not torch.allclose(first, second)  # training mode drops LoRA inputs
        backbone.eval()
        assert torch.equal(backbone.image_features(images), backbone.image_features(images))
