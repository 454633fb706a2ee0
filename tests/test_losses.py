"""Loss terms: closed forms, naive references (forward and backward), cone semantics."""

import math

import pytest
import torch
import torch.nn.functional as F

from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.geometry import lorentz as L
from hysafe.losses import (
    ConeConfig,
    cosine_distance_loss,
    entailment_loss,
    euclidean_info_nce,
    get_objective,
    hysac_objective,
    lorentz_info_nce,
    redirection_loss,
    safeclip_objective,
)


def naive_info_nce(a, b, sim, scale):
    """Row-by-row reference: -log softmax of the matching pair, both directions."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        row_ab = torch.stack([scale * sim(a[i], b[j]) for j in range(n)])
        row_ba = torch.stack([scale * sim(b[i], a[j]) for j in range(n)])
        total = total - torch.log_softmax(row_ab, 0)[i] - torch.log_softmax(row_ba, 0)[i]
    return total / (2 * n)


def test_euclidean_info_nce_closed_form():
    a = torch.eye(2, dtype=torch.float64)
    s = 3.0
    assert euclidean_info_nce(a, a, logit_scale=s).item() == pytest.approx(
        math.log(1 + math.exp(-s)), abs=1e-12
    )


def test_lorentz_info_nce_closed_form():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    s, curv = 2.0, 1.0
    d12 = L.dist(x[:1], x[1:], curv=curv).item()
    expected = math.log(1 + math.exp(-s * d12))
    assert lorentz_info_nce(x, x, curv=curv, logit_scale=s).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("geometry", ["euclidean", "lorentz"])
def test_contrastive_matches_naive_reference_forward_and_backward(geometry, gen):
    a = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    curv = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    if geometry == "euclidean":
        fast = euclidean_info_nce(a, b, logit_scale=7.0)
        slow = naive_info_nce(a, b, lambda u, v: F.cosine_similarity(u, v, dim=0), 7.0)
    else:
        fast = lorentz_info_nce(a, b, curv=curv, logit_scale=7.0)
        slow = naive_info_nce(a, b, lambda u, v: -L.dist(u, v, curv=curv), 7.0)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-10)
    inputs = (a, b, curv) if geometry == "lorentz" else (a, b)
    g_fast = torch.autograd.grad(fast, inputs)
    g_slow = torch.autograd.grad(slow, inputs)
    for gf, gs in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(gf, gs, atol=1e-10)


def test_entailment_zero_exactly_inside_cone(gen):
    curv = 1.0
    x = torch.randn(500, 4, generator=gen, dtype=torch.float64) * 0.5  # |x| ~ 1: aperture ~ asin(0.2)
    y = x * (1.5 + torch.rand(500, 1, generator=gen, dtype=torch.float64)) + 0.2 * torch.randn(
        500, 4, generator=gen, dtype=torch.float64
    )
    phi = L.exterior_angle(x, y, curv=curv)
    w = L.half_aperture(x, curv=curv)
    inside = phi <= w
    assert 0 < int(inside.sum()) < 500  # both cases occur
    per_row = torch.stack([entailment_loss(x[i : i + 1], y[i : i + 1], curv=curv) for i in range(500)])
    assert torch.equal(per_row == 0, inside)
    assert entailment_loss(x[inside], y[inside], curv=curv).item() == 0.0
    assert entailment_loss(x, y, curv=curv).item() == pytest.approx(
        (phi - w).clamp(min=0).mean().item(), abs=1e-12
    )


def test_entailment_closed_form_behind_parent():
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.5, 0.0]], dtype=torch.float64)  # between root and x: phi = pi
    w = L.half_aperture(x, curv=1.0).item()
    assert entailment_loss(x, y, curv=1.0).item() == pytest.approx(math.pi - w, abs=5e-4)
    # a wider aperture scale admits more
    assert entailment_loss(x, y, curv=1.0, aperture_scale=2.0).item() < entailment_loss(x, y, curv=1.0).item()


def test_cosine_and_redirection_closed_form():
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert cosine_distance_loss(e1, e2).item() == pytest.approx(1.0)
    assert cosine_distance_loss(e1, 3 * e1).item() == pytest.approx(0.0, abs=1e-7)
    assert redirection_loss(e1, e1, e2).item() == pytest.approx(math.log(1 + math.e), abs=1e-6)
    assert redirection_loss(e1, e2, e1).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert redirection_loss(e1, e1, e2, scale=100.0).item() == pytest.approx(
        100 + math.log(1 + math.exp(-100)), abs=1e-4
    )
    # SafeR-CLIP's redirection terms run at the objective's logit scale unless told otherwise
    from hysafe.geometry import EuclideanSpace
    from hysafe.losses import safer_clip_objective

    emb = {
        "V*": e1,
        "T0*": e1,
        "T0^": e2,
        "T*": e1,
        "V0*": e1,
        "V0^": e2,
        "T": e1,
        "T0": e1,
        "V": e1,
        "V0": e1,
    }
    for scale, expected in ((None, 100 + math.log(1 + math.exp(-100))), (1.0, math.log(1 + math.e))):
        _, logs = safer_clip_objective(redirection_scale=scale)(emb, EuclideanSpace())
        assert logs["redirection(V*,T0*,T0^)"] == pytest.approx(expected, abs=1e-4)


def test_objectives_are_weighted_sums_of_named_terms(gen):
    emb = {
        k: torch.randn(4, 3, generator=gen, dtype=torch.float64) for k in ["T", "V", "T*", "V*", "T0", "V0"]
    }
    obj = hysac_objective(entailment_weight=0.5)
    lorentz = LorentzSpace(curv=1.0)
    total, logs = obj(emb, lorentz, 10.0)
    manual = sum(logs[t.name] * t.weight for t in obj.terms)
    assert total.item() == pytest.approx(manual, abs=1e-9)
    assert len(logs) == 8 and logs["total"] == pytest.approx(total.item())
    sc = safeclip_objective()
    total, logs = sc(emb, EuclideanSpace())  # fixed logit scale: the model's is not needed
    assert total.item() == pytest.approx(sum(logs[t.name] * t.weight for t in sc.terms) / 1.75, abs=1e-9)
    assert sc.needs_reference and not obj.needs_reference
    assert obj.needs_hyperbolic and not sc.needs_hyperbolic
    changed = obj.with_weights(**{"entailment(T,V)": 2.0})
    assert [t.weight for t in changed.terms][4] == 2.0
    with pytest.raises(ValueError, match="no term named"):
        obj.with_weights(nope=1.0)
    with pytest.raises(ValueError, match="needs embeddings"):
        obj({"T": emb["T"]}, lorentz, 10.0)
    with pytest.raises(ValueError, match="needs the model's logit_scale"):
        obj(emb, lorentz)
    with pytest.raises(ValueError, match="unknown objective"):
        get_objective("nope")
    with pytest.raises(ValueError, match="needs a hyperbolic space"):
        hysac_objective()(emb, EuclideanSpace(), 1.0)
    with pytest.raises(ValueError, match="needs a hyperbolic space"):
        obj.check_space(EuclideanSpace())


def test_terms_follow_the_space_and_the_objective_cones(gen):
    """Geometry comes from the space (live curvature tensor included) and cone settings from the
    objective: each term equals the standalone loss function with the same arguments."""
    emb = {k: 0.4 * torch.randn(6, 5, generator=gen, dtype=torch.float64) for k in ["T", "V", "T*", "V*"]}
    curv = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    cones = ConeConfig(aperture_scale=0.8, min_radius=0.3)
    _, logs = hysac_objective(cones=cones)(emb, LorentzSpace(curv=curv), 12.0)
    assert logs["contrastive(T,V)"] == pytest.approx(
        lorentz_info_nce(emb["T"], emb["V"], curv=1.7, logit_scale=12.0).item(), abs=1e-10
    )
    assert logs["entailment(V,T*)"] == pytest.approx(
        entailment_loss(emb["V"], emb["T*"], curv=1.7, aperture_scale=0.8, min_radius=0.3).item(), abs=1e-10
    )
    total, _ = hysac_objective(cones=cones)(emb, LorentzSpace(curv=curv), 12.0)
    total.backward()
    assert curv.grad is not None and curv.grad.abs() > 0  # the live curvature trains
    _, logs = get_objective("clip-pretrain")(emb, EuclideanSpace(), 12.0)
    joined = euclidean_info_nce(
        torch.cat([emb["T"], emb["T*"]]), torch.cat([emb["V"], emb["V*"]]), logit_scale=12.0
    )
    assert logs["contrastive(T|T*,V|V*)"] == pytest.approx(joined.item(), abs=1e-10)
    with pytest.raises(ValueError, match="min_radius"):
        ConeConfig(min_radius=0.0)


def test_root_order_loss_closed_form_and_gradient(gen):
    """``mean(relu(m + log d0(x) - log d0(y)))`` with ``d0 = asinh(sqrt(c)|x|) / sqrt(c)``, in float64;
    invariant to a global rescaling in the Euclidean limit near the root."""
    from hysafe.losses import root_order_loss

    x = 0.5 * torch.randn(7, 4, generator=gen, dtype=torch.float64)
    y = 0.5 * torch.randn(7, 4, generator=gen, dtype=torch.float64)
    c, m = 2.5, 0.2

    def d0(z):
        return torch.log(torch.asinh(math.sqrt(c) * z.norm(dim=-1)) / math.sqrt(c))

    expected = torch.clamp(m + d0(x) - d0(y), min=0).mean()
    assert root_order_loss(x, y, curv=c, margin=m).item() == pytest.approx(expected.item(), abs=1e-14)
    assert 0 < (m + d0(x) - d0(y) > 0).sum() < 7  # both sides of the hinge are exercised
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: root_order_loss(a, b, curv=c, margin=m), (xg, yg))
    far = 3 * x / x.norm(dim=-1, keepdim=True)
    assert root_order_loss(0.01 * x, far, curv=c, margin=m).item() == 0.0  # ordered: no loss
    tiny = root_order_loss(1e-5 * x, 1e-5 * y, curv=c, margin=m)
    assert tiny.item() == pytest.approx(
        root_order_loss(1e-4 * x, 1e-4 * y, curv=c, margin=m).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="pairs rows"):
        root_order_loss(x, y[:3], curv=c, margin=m)
    with pytest.raises(ValueError, match="margin"):
        root_order_loss(x, y, curv=c, margin=-1.0)


def test_root_rank_loss_orders_the_populations_not_only_the_rows(gen):
    """``pairs="batch"``: ``mean_ij relu(m + log d0(x_i) - log d0(y_j))`` (float64 double loop), for
    populations of different sizes; a batch whose every row is ordered but whose populations overlap
    pays the rank hinge and not the row hinge; gradcheck."""
    from hysafe.losses import root_order_loss

    c, m = 1.7, 0.1
    x = 0.4 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = 0.4 * torch.randn(4, 3, generator=gen, dtype=torch.float64)

    def log_d0(z):
        return math.log(math.asinh(math.sqrt(c) * z.norm().item()) / math.sqrt(c))

    loop = [max(0.0, m + log_d0(a) - log_d0(b)) for a in x for b in y]
    rank = root_order_loss(x, y, curv=c, margin=m, pairs="batch")
    assert rank.item() == pytest.approx(sum(loop) / len(loop), abs=1e-13)
    assert 0 < sum(v > 0 for v in loop) < len(loop)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: root_order_loss(a, b, curv=c, margin=m, pairs="batch"), (xg, yg)
    )
    direction = torch.nn.functional.normalize(torch.randn(4, 3, generator=gen, dtype=torch.float64), dim=-1)
    radii = torch.tensor([0.1, 0.2, 1.0, 2.0], dtype=torch.float64)[:, None]
    near, far = radii * direction, 2 * radii * direction  # every row ordered, the populations interleaved
    assert root_order_loss(near, far, curv=c, margin=m).item() == 0.0
    assert root_order_loss(near, far, curv=c, margin=m, pairs="batch").item() > 0.1
    with pytest.raises(ValueError, match="pairs must be one of"):
        root_order_loss(x, y, curv=c, margin=m, pairs="all")
    with pytest.raises(ValueError, match="points on both sides"):  # not a silent nan
        root_order_loss(x[:0], y, curv=c, margin=m, pairs="batch")


def test_hysac_named_options_add_terms_and_are_off_by_default(gen):
    from hysafe.losses import root_order_loss

    emb = {k: 0.3 * torch.randn(5, 4, generator=gen, dtype=torch.float64) for k in ["T", "V", "T*", "V*"]}
    published = hysac_objective()
    assert [t.loss for t in published.terms].count("entailment") == 3
    assert not any(t.loss == "root_order" for t in published.terms)
    extended = hysac_objective(safety_cones=True, order_weight=0.5, order_margin=0.1)
    names = [t.name for t in extended.terms]
    assert names[-5:] == [
        "entailment(T,T*)",
        "entailment(V,V*)",
        "root_order(T,V)",
        "root_order(V,T*)",
        "root_order(T*,V*)",
    ]
    space = LorentzSpace(curv=1.3)
    total, logs = extended(emb, space, 10.0)
    assert logs["root_order(V,T*)"] == pytest.approx(
        root_order_loss(emb["V"], emb["T*"], curv=1.3, margin=0.1).item(), abs=1e-12
    )
    base, base_logs = published(emb, space, 10.0)
    added = sum(logs[n] * t.weight for n, t in zip(names, extended.terms, strict=True) if n not in base_logs)
    assert total.item() == pytest.approx(base.item() + added, abs=1e-10)
    ranked = hysac_objective(rank_weight=2.0)
    rank_terms = [t for t in ranked.terms if t.loss == "root_rank"]
    assert [t.name for t in rank_terms] == ["root_rank(T,V)", "root_rank(V,T*)", "root_rank(T*,V*)"]
    assert {t.weight for t in rank_terms} == {2.0}
    _, rank_logs = ranked(emb, space, 10.0)
    assert rank_logs["root_rank(T*,V*)"] == pytest.approx(
        root_order_loss(emb["T*"], emb["V*"], curv=1.3, margin=0.1, pairs="batch").item(), abs=1e-12
    )
    with pytest.raises(ValueError, match="hyperbolic"):
        ranked.check_space(EuclideanSpace())
    with pytest.raises(ValueError, match="rank_weight must be a finite number >= 0"):
        hysac_objective(rank_weight=float("inf"))
    within = hysac_objective(rank_weight=2.0, safety_rank_weight=3.0)
    added = [t for t in within.terms if t.name not in {r.name for r in rank_terms}][-2:]
    assert [(t.name, t.weight) for t in added] == [("root_rank(T,T*)", 3.0), ("root_rank(V,V*)", 3.0)]
    _, within_logs = within(emb, space, 10.0)
    assert within_logs["root_rank(V,V*)"] == pytest.approx(
        root_order_loss(emb["V"], emb["V*"], curv=1.3, margin=0.1, pairs="batch").item(), abs=1e-12
    )
    with pytest.raises(ValueError, match="safety_rank_weight must be a finite number >= 0"):
        hysac_objective(safety_rank_weight=-1.0)
    with pytest.raises(ValueError, match="order_weight"):
        hysac_objective(order_weight=-1.0)
    with pytest.raises(ValueError, match="hyperbolic"):
        hysac_objective(order_weight=1.0).check_space(EuclideanSpace())
