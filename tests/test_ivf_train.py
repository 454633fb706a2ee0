"""IVF centroid training: balanced two-level k-means, routing in the space's geometry."""

import numpy as np
import pytest
import torch

from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.geometry import lorentz as L
from hysafe.index.ivf_train import allocate, geodesic_centroids, probe_cost, route
from hysafe.index.retrieval import RetrievalIndex


def uneven(gen, n=6000, dim=16):
    """Clusters of very different sizes (one holds half the points), lifted to the hyperboloid."""
    centers = torch.randn(24, dim, generator=gen) / dim**0.5 * 1.5
    weights = torch.tensor([12.0] + [0.5] * 23)
    assign = torch.multinomial(weights, n, replacement=True, generator=gen)
    x = centers[assign] + 0.05 * torch.randn(n, dim, generator=gen)
    return L.exp_map0(x, curv=1.0)


@pytest.mark.parametrize("space", [LorentzSpace(curv=1.0), EuclideanSpace()], ids=["lorentz", "euclidean"])
def test_balanced_centroids_bound_the_probe_cost(space, gen):
    x = uneven(gen).numpy()
    plain = geodesic_centroids(space, x, 16, niter=10, seed=1, balanced=False)
    balanced = geodesic_centroids(space, x, 16, niter=10, seed=1)
    before, after = (np.bincount(route(space, x, c), minlength=16) for c in (plain, balanced))
    assert balanced.shape == plain.shape == (16, 16)
    # Euclidean k-means in the ambient coordinates leaves the big cluster's lists oversized
    if space.hyperbolic:
        assert probe_cost(before) > 2.0 and after.max() < 0.6 * before.max()
    assert probe_cost(after) < 1.5
    assert np.array_equal(geodesic_centroids(space, x, 16, niter=10, seed=1), balanced)  # deterministic


def test_allocate_is_proportional_and_exact():
    assert allocate(np.array([100, 10, 10, 0]), 12).tolist() == [10, 1, 1, 0]
    assert allocate(np.array([5, 5, 5]), 4).tolist() in ([2, 1, 1], [1, 2, 1], [1, 1, 2])
    assert allocate(np.array([1, 1, 50]), 10).tolist() == [1, 1, 8]  # at least one each, at most the size
    assert allocate(np.array([2, 3]), 5).tolist() == [2, 3]
    got = allocate(np.array([7, 3000, 1, 80, 412]), 100)
    assert got.sum() == 100 and np.all(got >= 1) and np.all(got <= [7, 3000, 1, 80, 412])
    assert probe_cost(np.array([5, 5, 5, 5])) == 1.0 and probe_cost(np.array([20, 0, 0, 0])) == 4.0


def test_route_is_the_index_routing(gen):
    """Training counts lists the way the index will assign items: by its own quantizer."""
    space = LorentzSpace(curv=1.0)
    x = uneven(gen)
    index = RetrievalIndex(space, 16, kind="ivf", nlist=16, nprobe=1)
    index.add(x)
    centroids = index._quantizer.reconstruct_n(0, 16)[:, :16]
    assert np.array_equal(route(space, x.numpy(), centroids), index._route(x, 1)[1][:, 0])
    sizes = np.array([index.index.invlists.list_size(i) for i in range(16)])
    assert probe_cost(sizes) < 1.5
