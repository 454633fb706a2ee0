"""The relative cone radius carries its true gradient (issue 28, audit item 2).

The relative rule sets ``2K = ratio * sqrt(c) * mean |x|``. Every test here is float64 and compares
autograd with finite differences of the loss's *value*, so a detached statistic (whose gradient
autograd drops while the value still moves) fails them.
"""

from __future__ import annotations

import math

import pytest
import torch

from hysafe.geometry import lorentz as L
from hysafe.losses import ConeConfig, cone_aperture, entailment_loss

CURV = 1.3
RADII = [1e-3, 0.1, 0.5, 1.0, 2.0]
RELATIVE = ConeConfig(radius="relative", radius_ratio=0.3)


def _pairs(median_radius: float, n: int = 64, dim: int = 6, seed: int = 0):
    """``x`` whose median ``sqrt(c)|x|`` is ``median_radius``; ``y`` farther out, near ``x``'s ray."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = x * (median_radius / (CURV**0.5 * x.norm(dim=-1).median()))
    y = 1.6 * x + 0.5 * x.norm(dim=-1, keepdim=True) * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x, y


def _loss(x, y, curv=CURV):
    return entailment_loss(x, y, curv=curv, **RELATIVE.loss_options())


def _rescaling_derivatives(x, y, h=1e-4):
    """d/ds loss(s x, s y) at s = 1: by autograd and by central differences."""
    s = torch.ones((), dtype=torch.float64, requires_grad=True)
    (autograd,) = torch.autograd.grad(_loss(s * x, s * y), s)
    with torch.no_grad():
        fd = (_loss((1 + h) * x, (1 + h) * y) - _loss((1 - h) * x, (1 - h) * y)) / (2 * h)
    return float(autograd), float(fd)


@pytest.mark.parametrize("radius", RADII)
def test_derivative_along_a_global_rescaling_matches_finite_differences(radius):
    x, y = _pairs(radius)
    assert float(_loss(x, y)) > 0.05  # some pairs lie outside their cones: the derivative is informative
    autograd, fd = _rescaling_derivatives(x, y)
    assert autograd == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_the_relative_aperture_is_scale_free_and_independent_of_the_curvature():
    x, _ = _pairs(0.5)
    x.requires_grad_(True)
    curv = torch.tensor(CURV, dtype=torch.float64, requires_grad=True)
    w = cone_aperture(x, curv=curv, min_radius=None, radius_ratio=0.3)
    (grad,) = torch.autograd.grad(w.sum(), curv, allow_unused=True)
    assert grad is None or float(grad) == 0.0
    x, w = x.detach(), w.detach()
    for s in (1e-3, 7.0):
        torch.testing.assert_close(cone_aperture(s * x, curv=curv, min_radius=None, radius_ratio=0.3), w)
    # a cone at the mean norm has half-aperture asin(ratio)
    at_mean = x[:1] / x[:1].norm() * x.norm(dim=-1).mean()
    both = torch.cat([x, at_mean])
    w_both = L.relative_half_aperture(both, ratio=0.3, scale=torch.linalg.vector_norm(x, dim=-1).mean())
    assert float(w_both[-1]) == pytest.approx(math.asin(0.3), abs=1e-12)


@pytest.mark.parametrize("radius", [0.1, 1.0])
def test_the_curvature_gradient_matches_finite_differences(radius):
    x, y = _pairs(radius)
    curv = torch.tensor(CURV, dtype=torch.float64, requires_grad=True)
    (autograd,) = torch.autograd.grad(_loss(x, y, curv=curv), curv)
    h = 1e-6
    with torch.no_grad():
        fd = (_loss(x, y, curv=CURV + h) - _loss(x, y, curv=CURV - h)) / (2 * h)
    assert float(autograd) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_gradcheck_of_the_relative_entailment_loss():
    x, y = _pairs(0.5, n=8, dim=3, seed=1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: _loss(a, b), (x, y))
    scale = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: L.relative_half_aperture(a, ratio=0.3, scale=s), (x, scale))


def test_the_rule_is_absolute_or_relative_never_both():
    x, y = _pairs(0.5, n=4)
    with pytest.raises(ValueError, match="not both"):
        entailment_loss(x, y, curv=1.0, min_radius=0.1, radius_ratio=0.2)
    with pytest.raises(ValueError, match="needs min_radius"):
        entailment_loss(x, y, curv=1.0, min_radius=None)
    with pytest.raises(ValueError, match="'absolute' or 'relative'"):
        ConeConfig(radius="median")
    assert ConeConfig().loss_options() == {  # the default: the papers' absolute K
        "aperture_scale": 1.0,
        "min_radius": 0.1,
        "radius_ratio": None,
    }
