"""IVF routing in a sketch of the centroids (hysafe.index.ivf_route): exact lists and inner products where
the sketch keeps every direction, exact scores for whatever it probes, a deterministic sketch, the
setting validated and saved, the default untouched."""

import numpy as np
import pytest
import torch

from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.index.ivf_route import ROUTE_SPARE, RoutingSketch
from hysafe.index.retrieval import RetrievalIndex


def clustered(gen, n=6000, dim=12, centres=40):
    c = 2.0 * torch.randn(centres, dim, generator=gen)
    return c[torch.randint(0, centres, (n,), generator=gen)] + 0.3 * torch.randn(n, dim, generator=gen)


@pytest.fixture(params=[LorentzSpace(curv=1.0), EuclideanSpace()], ids=["lorentz", "euclidean"])
def ivf(request, gen):
    index = RetrievalIndex(request.param, 12, kind="ivf", nlist=64, nprobe=3)
    index.add(clustered(gen))
    return index


def centroids(index):
    return index._quantizer.reconstruct_n(0, index.nlist)


def test_a_full_sketch_is_exact_routing(ivf, gen):
    queries = ivf._vectors(clustered(gen, n=300), "query")
    for nprobe in (1, 5, 64, 100):
        exact_ip, exact_lists = ivf._route(None, min(nprobe, 64), queries)
        ip, lists = RoutingSketch(centroids(ivf), 1000).route(queries, nprobe)  # every direction
        assert np.array_equal(lists, exact_lists)
        np.testing.assert_allclose(ip, exact_ip, rtol=1e-5, atol=1e-5)


def test_a_small_sketch_scores_what_it_probes_exactly(ivf, gen):
    queries = ivf._vectors(clustered(gen, n=300), "query")
    exact_ip, _ = ivf._route(None, 4, queries)
    sketch = RoutingSketch(centroids(ivf), 2)
    assert sketch.dims == 2 and sketch.basis.shape == (ivf.index.d, 2)
    ip, lists = sketch.route(queries, 4)
    assert lists.shape == (300, 4) and all(len(set(row)) == 4 for row in lists.tolist())
    np.testing.assert_allclose(
        ip, np.take_along_axis(queries @ centroids(ivf).T, lists, 1), rtol=1e-5, atol=1e-5
    )
    assert (np.diff(ip, axis=1) <= 0).all()  # best first
    assert (ip <= exact_ip + 1e-5).all()  # never better than the exact routing's
    # the candidates are the best estimates: the estimate is the inner product in the 2 directions
    est = sketch.estimate(torch.from_numpy(queries))
    best = est.topk(4 + ROUTE_SPARE, dim=1).indices
    assert all(set(a) <= set(b) for a, b in zip(lists.tolist(), best.tolist(), strict=True))
    # float64 oracle: the query's inner product with the mean, plus its projection's with the centred
    # centroids' projections onto their two leading right singular vectors
    c = centroids(ivf).astype(np.float64)
    mean = c.mean(0)
    top = np.linalg.svd(c - mean, full_matrices=False)[2][:2]
    oracle = queries @ mean[:, None] + (queries @ top.T) @ (top @ (c - mean).T)
    np.testing.assert_allclose(est.numpy(), oracle, rtol=1e-4, atol=1e-4)


def test_the_sketch_comes_out_the_same_every_time(ivf):
    a, b = RoutingSketch(centroids(ivf), 4), RoutingSketch(centroids(ivf), 4)
    assert torch.equal(a.basis, b.basis) and torch.equal(a.projected, b.projected)


def test_route_dims_on_the_index(ivf, gen, tmp_path):
    """Off by default; the full width gives the exact search; a sketch keeps recall on clustered data;
    the setting is validated, saved and re-sketches when changed."""
    queries = clustered(gen, n=200)
    assert ivf.route_dims == 0
    exact = ivf.search(queries, 10)
    ivf.route_dims = ivf.index.d
    full = ivf.search(queries, 10)
    assert torch.equal(full[1], exact[1])
    torch.testing.assert_close(full[0], exact[0])
    ivf.route_dims = 10  # of 12-13: random clusters have no low-rank structure to lean on
    _, ids = ivf.search(queries, 10)
    assert ivf._sketch.dims == 10
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), exact[1].tolist(), strict=True)]
    )
    assert recall >= 0.9
    loaded = RetrievalIndex.load(ivf.save(tmp_path / "ivf.index"))
    assert loaded.route_dims == 10
    assert torch.equal(loaded.search(queries, 10)[1], ids)
    for bad in (-1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="route_dims must be a non-negative integer"):
            ivf.route_dims = bad
    ivf.route_dims = np.int64(0)
    assert ivf.route_dims == 0 and torch.equal(ivf.search(queries, 10)[1], exact[1])


def test_compressed_index_routes_by_the_sketch_too(gen, tmp_path):
    space = LorentzSpace(curv=1.0)
    index = RetrievalIndex(space, 12, kind="ivfpq", nlist=32, nprobe=4, vectors=tmp_path / "v")
    index.add(clustered(gen, n=4000))
    queries = clustered(gen, n=100)
    exact = index.search(queries, 5)
    index.route_dims = index.index.d  # the padded width
    routed = index.search(queries, 5)
    assert torch.equal(routed[1], exact[1])
    torch.testing.assert_close(routed[0], exact[0])
