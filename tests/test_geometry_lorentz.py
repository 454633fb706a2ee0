"""Lorentz geometry against geoopt (float64 oracle), closed forms, properties and gradients."""

import math

import geoopt
import geoopt.manifolds.lorentz.math as glm
import pytest
import torch

from hysafe.geometry import lorentz as L

CURVS = [0.1, 1.0, 2.5]
DIMS = [2, 3, 17, 128, 768]
TOL = 1e-10


def points(n, d, gen, scale=1.0, dtype=torch.float64):
    """Random space components with norms of order `scale`."""
    return (
        torch.randn(n, d, generator=gen, dtype=dtype)
        * scale
        / math.sqrt(d)
        * (1 + torch.rand(n, 1, generator=gen, dtype=dtype))
    )


def full(x, curv):
    return L.to_hyperboloid(x, curv=curv)


@pytest.mark.parametrize("curv", CURVS)
@pytest.mark.parametrize("d", DIMS)
def test_against_geoopt(curv, d, gen):
    M = geoopt.Lorentz(k=torch.tensor(1.0 / curv, dtype=torch.float64))  # float64 k: the default is float32
    x, y = points(64, d, gen), points(64, d, gen, scale=2.0)
    X, Y = full(x, curv), full(y, curv)
    assert torch.allclose(M.inner(None, X, Y), L.inner(x, y, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(glm.inner(X[:, None], Y[None]), L.inner_pairwise(x, y, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(M.dist(X, Y), L.dist(x, y, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(M.dist(X[:, None], Y[None]), L.dist_pairwise(x, y, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(M.dist0(X), L.dist_to_root(x, curv=curv), atol=TOL, rtol=0)
    v = points(64, d, gen, scale=1.5)
    V = torch.cat([torch.zeros(64, 1, dtype=v.dtype), v], dim=-1)
    assert torch.allclose(M.expmap0(V)[:, 1:], L.exp_map0(v, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(M.logmap0(X)[:, 1:], L.log_map0(x, curv=curv), atol=TOL, rtol=0)
    assert torch.allclose(M.logmap0(X)[:, 0], torch.zeros(64, dtype=x.dtype), atol=TOL)
    # the point lies on geoopt's hyperboloid: <X, X>_L = -k
    assert torch.allclose(glm.inner(X, X), torch.full((64,), -1.0 / curv, dtype=x.dtype), atol=1e-12)


@pytest.mark.parametrize("curv", CURVS)
def test_half_aperture_matches_poincare_formula(curv, gen):
    K = 0.1
    x = points(200, 8, gen, scale=3.0)
    # geoopt's ball is the unit ball too
    p = glm.lorentz_to_poincare(full(x, curv), k=torch.tensor(1.0 / curv, dtype=x.dtype))
    assert torch.allclose(p, L.to_poincare(x, curv=curv), atol=1e-12)
    pn = p.norm(dim=-1)
    arg = K * (1 - pn**2) / pn
    expected = torch.asin(arg.clamp(max=1 - 1e-8))
    assert torch.allclose(L.half_aperture(x, curv=curv, min_radius=K), expected, atol=1e-7)


def test_half_aperture_closed_form():
    # |x| = 1, c = 1: asin(2 * 0.1) ; inside the min-radius ball the aperture saturates at ~pi/2
    x = torch.tensor([[1.0, 0.0], [0.0, 1e-4]], dtype=torch.float64)
    w = L.half_aperture(x, curv=1.0)
    assert w[0].item() == pytest.approx(math.asin(0.2), abs=1e-7)
    assert w[1].item() == pytest.approx(math.pi / 2, abs=2e-4)


@pytest.mark.parametrize("curv", CURVS)
def test_exterior_angle_law_of_cosines(curv, gen):
    x, y = points(300, 5, gen, scale=2.0), points(300, 5, gen, scale=2.0)
    sc = math.sqrt(curv)
    a = L.dist_to_root(x, curv=curv) * sc  # side root-x
    b = L.dist(x, y, curv=curv) * sc  # side x-y
    e = L.dist_to_root(y, curv=curv) * sc  # side root-y (opposite the angle at x)
    cos_interior = (torch.cosh(a) * torch.cosh(b) - torch.cosh(e)) / (torch.sinh(a) * torch.sinh(b))
    expected = math.pi - torch.acos(cos_interior.clamp(-1, 1))
    assert torch.allclose(L.exterior_angle(x, y, curv=curv), expected, atol=1e-6)


def test_exterior_angle_collinear_and_2d():
    curv = 1.0
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    beyond = torch.tensor([[3.0, 0.0]], dtype=torch.float64)  # further along the same ray
    behind = torch.tensor([[0.5, 0.0]], dtype=torch.float64)  # between root and x
    # within the arccos clamp: acos(1 - 1e-8) = 1.4e-4
    assert L.exterior_angle(x, beyond, curv=curv).item() == pytest.approx(0.0, abs=5e-4)
    assert L.exterior_angle(x, behind, curv=curv).item() == pytest.approx(math.pi, abs=5e-4)
    # 2-D: y perpendicular at the root side -> angle strictly between 0 and pi, symmetric in sign
    y1, y2 = torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    assert L.exterior_angle(x, y1, curv=curv).item() == pytest.approx(
        L.exterior_angle(x, y2, curv=curv).item(), abs=1e-12
    )


@pytest.mark.parametrize("curv", CURVS)
def test_exp_log_round_trip_and_root_distance(curv, gen):
    v = points(500, 32, gen, scale=2.5)  # below the exp-map cap for every curv
    x = L.exp_map0(v, curv=curv)
    assert torch.allclose(L.log_map0(x, curv=curv), v, atol=1e-10)
    assert torch.allclose(L.dist_to_root(x, curv=curv), v.norm(dim=-1), atol=1e-10)
    assert torch.allclose(L.log_map0(x, curv=curv).norm(dim=-1), L.dist_to_root(x, curv=curv), atol=1e-10)
    # dist_to_root equals dist to the zero point
    assert torch.allclose(L.dist(x, torch.zeros_like(x), curv=curv), L.dist_to_root(x, curv=curv), atol=1e-5)


@pytest.mark.parametrize("curv", CURVS)
def test_triangle_inequality(curv, gen):
    a, b, c = (points(1000, 6, gen, scale=3.0) for _ in range(3))
    dab, dbc, dac = L.dist(a, b, curv=curv), L.dist(b, c, curv=curv), L.dist(a, c, curv=curv)
    assert bool((dac <= dab + dbc + 1e-9).all())


def test_index_vector_trick_ranks_like_distance(gen):
    curv = 1.3
    gallery = points(10_000, 16, gen, scale=3.0)
    queries = points(20, 16, gen, scale=3.0)
    ip = L.query_index_vectors(queries, curv=curv) @ L.gallery_index_vectors(gallery, curv=curv).T
    d = L.dist_pairwise(queries, gallery, curv=curv)
    assert torch.equal(torch.argsort(-ip, dim=1), torch.argsort(d, dim=1))
    assert torch.allclose(L.dist_from_index_inner(ip, curv=curv), d, atol=1e-9)


@pytest.mark.parametrize("curv", [0.5, 2.0])
def test_move_to_root_distance_and_path(curv, gen):
    x = points(100, 8, gen, scale=4.0)
    tau = torch.rand(100, generator=gen, dtype=x.dtype) * 2
    moved = L.move_to_root_distance(x, tau, curv=curv)
    assert torch.allclose(L.dist_to_root(moved, curv=curv), tau, atol=1e-10)
    u = torch.nn.functional.normalize(L.log_map0(x, curv=curv), dim=-1)
    assert torch.allclose(torch.nn.functional.normalize(L.log_map0(moved, curv=curv), dim=-1), u, atol=1e-10)
    path = L.geodesic_to_root(x, 5, curv=curv)
    assert path.shape == (5, 100, 8)
    assert torch.allclose(path[0], x, atol=1e-10)
    assert torch.allclose(path[-1], torch.zeros_like(x))
    d = L.dist_to_root(path, curv=curv)
    expected = torch.linspace(1, 0, 5, dtype=x.dtype)[:, None] * L.dist_to_root(x, curv=curv)
    assert torch.allclose(d, expected, atol=1e-10)
    # consecutive points are equally spaced along the geodesic
    steps = L.dist(path[:-1], path[1:], curv=curv)
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-5)


def test_gradcheck_float64(gen):
    x = points(4, 3, gen, scale=2.0).requires_grad_()
    y = points(4, 3, gen, scale=3.0).requires_grad_()
    curv = 1.7
    assert torch.autograd.gradcheck(lambda a, b: L.dist(a, b, curv=curv), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: L.dist_pairwise(a, b, curv=curv), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: L.exterior_angle(a, b, curv=curv), (x, y))
    assert torch.autograd.gradcheck(lambda a: L.half_aperture(a, curv=curv), (x,))
    assert torch.autograd.gradcheck(lambda a: L.exp_map0(a, curv=curv), (x,))
    assert torch.autograd.gradcheck(lambda a: L.log_map0(a, curv=curv), (x,))
    # gradient with respect to a learnable curvature
    c = torch.tensor(curv, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: L.dist(x.detach(), y.detach(), curv=k), (c,))
    assert torch.autograd.gradcheck(lambda k: L.exp_map0(x.detach(), curv=k), (c,))
