"""float32 numerics, autocast policy, and input validation of the geometry functions."""

import math

import pytest
import torch

from hysafe.geometry import EuclideanSpace, LorentzSpace, euclidean, space_from_dict, validation
from hysafe.geometry import lorentz as L


@pytest.mark.parametrize("curv", [0.1, 1.0, 2.5])
def test_float32_norm_range_round_trip(curv):
    direction = torch.nn.functional.normalize(torch.ones(1, 64), dim=-1)
    cap = L.EXP_MAP_MAX_ARG / math.sqrt(curv)
    norms = torch.logspace(-6, math.log10(cap * 0.999), 200).unsqueeze(-1)
    v = norms * direction
    x = L.exp_map0(v, curv=curv)
    assert torch.isfinite(x).all()
    back = L.log_map0(x, curv=curv)
    rel = (back - v).norm(dim=-1) / v.norm(dim=-1)
    assert rel.max().item() < 1e-4
    d0 = L.dist_to_root(x, curv=curv)
    assert torch.allclose(d0, norms.squeeze(-1), rtol=1e-4)


def test_zero_huge_and_root_points_are_finite_with_finite_grads():
    curv = 1.0
    v = torch.tensor([[0.0, 0.0, 0.0], [1e30, -1e30, 0.0], [1e-20, 0.0, 0.0]], requires_grad=True)
    x = L.exp_map0(v, curv=curv)
    assert torch.isfinite(x).all()
    assert torch.equal(x[0].detach(), torch.zeros(3))
    # huge inputs are capped at the documented distance from the root
    assert L.dist_to_root(x[1:2].detach(), curv=curv).item() == pytest.approx(L.EXP_MAP_MAX_ARG, rel=1e-4)
    out = (
        L.dist_to_root(x, curv=curv).sum()
        + L.dist(x, x, curv=curv).sum()
        + L.half_aperture(x, curv=curv).sum()
        + L.exterior_angle(x, x.flip(0), curv=curv).sum()
        + L.log_map0(x, curv=curv).sum()
    )
    out.backward()
    assert torch.isfinite(v.grad).all()


def test_identical_points_distance_is_small_and_grad_finite():
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    d = L.dist(x, x, curv=1.0)
    assert d.max().item() < 2e-3
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_autocast_runs_hyperbolic_math_in_float32():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = L.dist_pairwise(x, x, curv=1.0)
        e = L.exp_map0(x, curv=1.0)
    assert d.dtype == torch.float32 and e.dtype == torch.float32
    ref = L.dist_pairwise(x.float(), x.float(), curv=1.0)
    assert torch.allclose(d, ref)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: L.exp_map0(torch.tensor([[float("nan"), 1.0]]), curv=1.0), "v contains 1 NaN/Inf"),
        (lambda: L.dist(torch.zeros(2, 3), torch.zeros(2, 4), curv=1.0), "feature dimension"),
        (lambda: L.dist_pairwise(torch.zeros(3), torch.zeros(2, 3), curv=1.0), "at least 2 dimension"),
        (lambda: L.dist_to_root(torch.zeros(2, 3), curv=-1.0), "curv must be > 0"),
        (lambda: L.dist_to_root(torch.zeros(2, 3, dtype=torch.long), curv=1.0), "floating-point"),
        (lambda: L.inner(torch.tensor([[float("inf")]]), torch.zeros(1, 1), curv=1.0), "x contains"),
        (lambda: L.geodesic_to_root(torch.zeros(2, 3), 1, curv=1.0), "steps must be"),
        (lambda: L.move_to_root_distance(torch.ones(2, 3), -1.0, curv=1.0), "distance must be"),
        (lambda: LorentzSpace(curv=0.0), "curv must be > 0"),
        (lambda: space_from_dict({"name": "sphere"}), "unknown space"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_validation_can_be_disabled_for_hot_loops():
    bad = torch.tensor([[float("nan"), 1.0]])
    with validation(False):
        out = L.exp_map0(bad, curv=1.0)
    assert torch.isnan(out).any()
    with pytest.raises(ValueError):
        L.exp_map0(bad, curv=1.0)


def test_switching_validation_off_applies_to_the_calling_thread_only():
    """A service's request threads run trusted tensors unchecked while another thread's call on
    a user's input is still checked."""
    import threading

    bad, seen = torch.tensor([[float("nan"), 1.0]]), {}

    def other_thread():
        try:
            L.exp_map0(bad, curv=1.0)
            seen["raised"] = False
        except ValueError:
            seen["raised"] = True

    with validation(False):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert torch.isnan(L.exp_map0(bad, curv=1.0)).any()  # this thread: off
    assert seen == {"raised": True}


@pytest.mark.parametrize(
    "values, bad",
    [
        ([1.0, 2.0], 0),
        ([3e38, 3e38, -1.0], 0),  # finite, but the sum overflows: the exact count finds nothing
        ([float("inf"), float("-inf")], 2),  # the sum is NaN
        ([float("nan"), 1.0], 1),
        ([1.0, float("inf")], 1),
    ],
)
def test_require_finite_counts_exactly_whatever_the_sum_does(values, bad):
    from hysafe.geometry._checks import require_finite

    x = torch.tensor(values, dtype=torch.float32).reshape(1, -1)
    with validation(False):  # require_finite checks regardless
        if bad:
            with pytest.raises(ValueError, match=f"contains {bad} NaN/Inf"):
                require_finite(x, "x")
        else:
            require_finite(x, "x")


def test_euclidean_space_interface(gen):
    s = EuclideanSpace()
    x, y = torch.randn(6, 5, generator=gen), torch.randn(7, 5, generator=gen)
    sim = s.similarity(x, y)
    ref = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T
    assert torch.allclose(sim, ref, atol=1e-6)
    assert torch.allclose(s.distance(x, y), 1 - ref, atol=1e-6)
    assert torch.allclose(s.dist_to_root(x), x.norm(dim=-1))
    moved = s.move_to_root_distance(x, 0.5)
    assert torch.allclose(moved.norm(dim=-1), torch.full((6,), 0.5))
    assert torch.allclose(s.similarity(moved, y), sim, atol=1e-6)  # rescaling never changes cosine ranking
    ip = s.query_vectors(x) @ s.gallery_vectors(y).T
    assert torch.allclose(s.distance_from_inner(ip), s.distance(x, y), atol=1e-6)
    assert torch.equal(euclidean.normalize(torch.zeros(1, 3)), torch.zeros(1, 3))
    assert s.path_to_root(x, 3).shape == (3, 6, 5)
    assert space_from_dict(s.to_dict()) == s


def test_lorentz_space_interface(gen):
    s = LorentzSpace(curv=0.7)
    x, y = (
        torch.randn(6, 5, generator=gen, dtype=torch.float64),
        torch.randn(7, 5, generator=gen, dtype=torch.float64),
    )
    assert torch.allclose(s.similarity(x, y), -L.dist_pairwise(x, y, curv=0.7))
    ip = s.query_vectors(x) @ s.gallery_vectors(y).T
    assert torch.allclose(s.distance_from_inner(ip), s.distance(x, y), atol=1e-9)
    assert space_from_dict(s.to_dict()) == s


@pytest.mark.parametrize("space", [LorentzSpace(curv=0.7), EuclideanSpace()], ids=["lorentz", "cosine"])
def test_index_inner_rows_fast_path_equals_reference(space, gen):
    """Each space's inner products with per-query rows (no gallery-vector copy) equal the reference
    that builds the gallery vectors, in float64 and float32, zero rows included."""
    from hysafe.geometry import Space

    rows = torch.randn(6, 9, 32, generator=gen, dtype=torch.float64) * 0.8
    rows[2, 3] = 0.0
    q = space.query_vectors(torch.randn(6, 32, generator=gen, dtype=torch.float64))
    fast_ip, fast_norm = space.index_inner_rows(q, rows)
    ref_ip, ref_norm = Space.index_inner_rows(space, q, rows)
    assert fast_ip.shape == fast_norm.shape == (6, 9) and fast_ip.dtype == torch.float64
    assert torch.allclose(fast_ip, ref_ip, rtol=0, atol=1e-12)
    assert torch.allclose(fast_norm, ref_norm, rtol=0, atol=1e-12)
    ip32, norm32 = space.index_inner_rows(q.float(), rows.float())
    assert torch.allclose(ip32.double(), ref_ip, atol=1e-5) and torch.allclose(
        norm32.double(), ref_norm, atol=1e-5
    )
