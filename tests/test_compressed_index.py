"""The compressed (IVF-PQ + refine + exact re-rank) index, its vector file, and sharded builds."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.geometry import lorentz as L
from hysafe.index.compressed import (
    EXACT_FACTOR,
    PQ_DIMS,
    REFINE_DIMS,
    RefineCodes,
    pq_layout,
    refine_candidates,
)
from hysafe.index.retrieval import RetrievalIndex
from hysafe.index.shards import build_shard, build_sharded, merge_shards, train_index
from hysafe.index.vector_file import VectorFile

SPACES = [LorentzSpace(curv=0.8), EuclideanSpace()]


def clustered(gen, n, dim=16, clusters=32, subspace=4):
    """Lorentz points in clusters whose members vary in a low-dimensional subspace of their own."""
    centers = torch.randn(clusters, dim, generator=gen) / dim**0.5 * 1.5
    bases = torch.linalg.qr(torch.randn(clusters, dim, subspace, generator=gen)).Q
    assign = torch.randint(0, clusters, (n,), generator=gen)
    z = 0.35 / subspace**0.5 * torch.randn(n, subspace, generator=gen)
    x = (
        centers[assign]
        + torch.einsum("ndk,nk->nd", bases[assign], z)
        + 0.01 * torch.randn(n, dim, generator=gen)
    )
    return L.exp_map0(x, curv=0.8)


def recall(a, b):
    return float(
        np.mean([len(set(x.tolist()) & set(y.tolist())) / a.shape[1] for x, y in zip(a, b, strict=True)])
    )


# ------------------------------------------------------------------------------ vector file


def test_vector_file_appends_reads_and_ignores_a_crashed_tail(tmp_path, gen):
    rows = torch.randn(10, 6, generator=gen).numpy()
    vf = VectorFile(tmp_path / "v.f32", 6)
    vf.append(rows[:4])
    vf.append(rows[4:])
    ids = np.array([[9, -1, 0], [3, 3, 5]])
    got = vf.take(ids)
    assert got.shape == (2, 3, 6)
    assert np.array_equal(got[0, 0], rows[9]) and not got[0, 1].any() and np.array_equal(got[1, 1], rows[3])
    # a crash after appending 3 more rows but before the index was saved: the index says 10 rows
    VectorFile(tmp_path / "v.f32", 6, rows=10).append(rows[:3])
    again = VectorFile(tmp_path / "v.f32", 6, rows=10)
    assert np.array_equal(again.mapped(), rows)
    again.append(rows[:1])  # overwrites the stale tail
    assert np.array_equal(again.take(np.array([10])), rows[:1])
    with pytest.raises(ValueError, match=r"v.f32: holds 13 vectors of dim 6, but its index needs 50"):
        VectorFile(tmp_path / "v.f32", 6, rows=50)
    with pytest.raises(ValueError, match="asked for row 11"):
        again.take(np.array([11]))
    again.relocate(tmp_path / "moved.f32", move=True)
    assert not (tmp_path / "v.f32").exists() and (tmp_path / "moved.f32").stat().st_size == 11 * 6 * 4


def test_vector_file_threaded_reads_equal_one_gather(tmp_path, gen, monkeypatch):
    import hysafe.index.vector_file as vfmod

    rows = torch.randn(500, 8, generator=gen).numpy()
    vf = VectorFile(tmp_path / "v.f32", 8)
    vf.append(rows)
    ids = torch.randint(-1, 500, (37, 11), generator=gen).numpy()
    want = np.where((ids >= 0)[..., None], rows[np.maximum(ids, 0)], 0)
    for chunk in (vfmod.READ_CHUNK, 7, 1):  # one gather; many tasks over the thread pool
        monkeypatch.setattr(vfmod, "READ_CHUNK", chunk)
        assert np.array_equal(vf.take(ids), want)
    assert vf.take(np.full((2, 3), -1)).shape == (2, 3, 8) and not vf.take(np.full((2, 3), -1)).any()


# ------------------------------------------------------------------------------ the compressed index


@pytest.mark.parametrize("space", SPACES, ids=["lorentz", "euclidean"])
def test_compressed_index_equals_exact_search_where_its_pool_covers_the_gallery(space, gen, tmp_path):
    """Every item reaches the exact re-rank (gallery <= EXACT_FACTOR x k, all lists probed): the
    top-k must be the exact one, distances to float32."""
    k = 30
    gallery, queries = clustered(gen, EXACT_FACTOR * k), clustered(gen, 30)
    exact = RetrievalIndex(space, 16)
    exact.add(gallery)
    index = RetrievalIndex(space, 16, kind="ivfpq", nlist=4, nprobe=4, rerank=EXACT_FACTOR)
    index.add(gallery)
    d, i = index.search(queries, k)
    ref = torch.topk(space.distance(queries.double(), gallery.double()), k, dim=1, largest=False)
    assert torch.equal(i, ref.indices) and torch.allclose(d.double(), ref.values, atol=1e-6)
    assert torch.equal(exact.search(queries, k)[1], i)
    path = index.save(tmp_path / "c.faiss")
    assert not index._scratch and (tmp_path / "c.faiss.vectors").stat().st_size == len(gallery) * 16 * 4
    again = RetrievalIndex.load(path)
    assert again.kind == "ivfpq" and torch.equal(again.search(queries, k)[1], i)


@pytest.mark.parametrize("rerank", [1, 2])
def test_compressed_index_few_candidates_are_ranked_by_exact_distance(rerank, gen):
    """``rerank < FLOAT64_POOL``: stage 1's ``rerank x k`` candidates all reach the float64 ranking
    (no float32 pre-selection). The results must be the exact top-k of those candidates."""
    from hysafe.index._faiss import search_preassigned

    space, k = LorentzSpace(1.0), 10
    gallery, queries = clustered(gen, 3000), clustered(gen, 25)
    index = RetrievalIndex(space, 16, kind="ivfpq", nlist=8, nprobe=2, rerank=rerank)
    index.train(gallery)
    index.add(gallery)
    d, i = index.search(queries, k)
    vectors = index._vectors(queries, "query")
    coarse_ip, lists = index._route_queries(vectors)
    cand = torch.from_numpy(search_preassigned(index.index, vectors, k * rerank, lists, coarse_ip)[1])
    dist = space.distance(queries.double(), gallery.double()).gather(1, cand.clamp(min=0))
    dist = dist.masked_fill(cand < 0, float("inf"))
    ref = torch.topk(dist, k, dim=1, largest=False)
    assert torch.equal(i, cand.gather(1, ref.indices))
    assert torch.allclose(d.double(), ref.values, atol=1e-6)


def test_refine_stage_ranks_like_the_decoded_reconstruction(gen):
    """Lookup-table scores (fast path) = inner products with centroid + both decoded codes (reference)."""
    space = LorentzSpace(curv=0.8)
    index = RetrievalIndex(space, 16, kind="ivfpq", nlist=8, nprobe=8, rerank=50)
    gallery, queries = clustered(gen, 3000), clustered(gen, 20)
    index.add(gallery)
    qv = index._vectors(queries, "query")
    coarse, lists = index._route(queries, 8)
    from faiss.contrib.ivf_tools import search_preassigned

    ip, cand = search_preassigned(index.index, qv, 200, lists, coarse)
    # reference: reconstruct every gallery vector from its list, first code and refine code
    gv = index._vectors(gallery, "gallery")
    own = index._route(gallery, 1)[1][:, 0]
    centroid = index._quantizer.reconstruct_n(0, index.nlist)[own]
    first = centroid + index.index.pq.decode(index.index.pq.compute_codes(gv - centroid))
    assert np.allclose(ip, np.einsum("qcd,qd->qc", first[cand], qv), atol=1e-4)  # what faiss scored
    recon = first.copy()
    recon[:, : index.refine.dim] += index.refine.decode(np.arange(len(gallery)))
    reference = np.einsum("qcd,qd->qc", recon[cand], qv)
    keep = refine_candidates(index.refine, qv, cand, ip, 20)
    want = np.take_along_axis(cand, np.argsort(-reference, axis=1)[:, :20], axis=1)
    assert all(set(a) == set(b) for a, b in zip(keep, want, strict=True))


def test_compressed_index_recall_and_memory(gen):
    space = LorentzSpace(curv=0.8)
    gallery = clustered(gen, 20_000, dim=64, clusters=32, subspace=8)
    queries = gallery[:200] + 0.02 * torch.randn(200, 64, generator=gen)
    exact = RetrievalIndex(space, 64)
    exact.add(gallery)
    index = RetrievalIndex(space, 64, kind="ivfpq", nlist=32, nprobe=4, rerank=50)
    index.add(gallery)
    r = recall(exact.search(queries, 10)[1], index.search(queries, 10)[1])
    assert r >= 0.95, r
    codes, padded = pq_layout(65, 4)
    assert (
        (codes, padded) == (17, 68)
        and index.index.code_size == 17
        and index.refine.codes.shape == (20_000, 9)
    )
    # in RAM per 768-d Lorentz vector: 193 + 97 code bytes + 8 id bytes, under 1/8 of 769 x 4 bytes flat
    first, padded = pq_layout(769, PQ_DIMS)
    refine, _ = pq_layout(padded, REFINE_DIMS)
    assert (first, refine) == (193, 97) and (first + refine + 8) * 8 <= 769 * 4


def test_compressed_index_files_that_are_missing_or_cut(gen, tmp_path):
    index = RetrievalIndex(LorentzSpace(1.0), 8, kind="ivfpq", nlist=2, nprobe=2)
    index.add(clustered(gen, 300, dim=8, clusters=2))
    path = index.save(tmp_path / "c.faiss")
    good = Path(f"{path}.vectors").read_bytes()
    with open(f"{path}.vectors", "r+b") as f:
        f.truncate(100 * 8 * 4)
    with pytest.raises(
        ValueError, match=r"c.faiss.vectors: holds 100 vectors of dim 8, but its index needs 300"
    ):
        RetrievalIndex.load(path)
    Path(f"{path}.vectors").write_bytes(good)
    assert len(RetrievalIndex.load(path)) == 300
    (tmp_path / "c.faiss.refine.npz").unlink()
    with pytest.raises(FileNotFoundError, match="refine codes are missing"):
        RetrievalIndex.load(path)
    with pytest.raises(ValueError, match="ivfpq needs at least 256 training vectors"):
        RetrievalIndex(LorentzSpace(1.0), 8, kind="ivfpq", nlist=2).add(torch.zeros(100, 8))
    with pytest.raises(ValueError, match="rerank must be a positive integer"):
        RetrievalIndex(LorentzSpace(1.0), 8, kind="ivfpq", rerank=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        RetrievalIndex(LorentzSpace(1.0), 8, kind="hnsw")
    with pytest.raises(ValueError, match="space must be a hysafe.geometry Space .* got NoneType"):
        RetrievalIndex(None, 8)


def test_compressed_index_refuses_a_missing_or_foreign_vector_file(gen, tmp_path):
    """A vector file that is gone is named as missing; another index's file with as many rows (which
    would re-rank by the wrong vectors) is refused by the fingerprint the index saved."""
    space = LorentzSpace(1.0)
    paths = []
    for name in ("a", "b"):
        index = RetrievalIndex(space, 8, kind="ivfpq", nlist=2, nprobe=2)
        index.add(clustered(gen, 300, dim=8, clusters=2))
        paths.append(index.save(tmp_path / f"{name}.faiss"))
    a, b = paths
    with pytest.raises(ValueError, match=r"b.faiss.vectors: not this index's vector file"):
        RetrievalIndex.load(a, vectors=f"{b}.vectors")
    Path(f"{a}.vectors").rename(tmp_path / "moved.vectors")
    with pytest.raises(
        FileNotFoundError, match=r"a.faiss.vectors: the compressed index's vector file is missing"
    ):
        RetrievalIndex.load(a)
    moved = RetrievalIndex.load(a, vectors=tmp_path / "moved.vectors")
    assert len(moved) == 300 and moved.search(clustered(gen, 3, dim=8, clusters=2), 5)[1].min() >= 0


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_non_finite_inputs_are_named_by_their_role(kind, gen):
    index = RetrievalIndex(LorentzSpace(1.0), 8, kind=kind, nlist=2, nprobe=2)
    gallery = clustered(gen, 300, dim=8, clusters=2)
    bad = gallery.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match="gallery contains 1 NaN"):
        index.add(bad)
    index.add(gallery)
    with pytest.raises(ValueError, match="queries contains 1 NaN"):
        index.search(bad[:10], 3)


# ------------------------------------------------------------------------------ shards


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_merged_shards_equal_the_single_build(kind, gen, tmp_path):
    space = LorentzSpace(curv=0.8)
    gallery, queries = clustered(gen, 3000), clustered(gen, 40)
    options = {} if kind == "flat" else {"nlist": 16, "nprobe": 4}
    trained = train_index(space, gallery[:2000], tmp_path / "trained.faiss", kind=kind, **options)
    single = RetrievalIndex.load(trained, vectors=tmp_path / "single.vectors")
    single.add(gallery)
    shards = []
    for j, (a, b) in enumerate([(0, 1000), (1000, 1700), (1700, 3000)]):
        np.save(tmp_path / f"s{j}.npy", gallery[a:b].numpy())
        shards.append(build_shard(trained, tmp_path / f"s{j}.npy", tmp_path / f"s{j}.faiss"))
    merged = merge_shards(trained, shards, tmp_path / "merged.faiss", remove=True)
    assert len(merged) == 3000 and not (tmp_path / "s1.faiss").exists()
    d1, i1 = single.search(queries, 10)
    d2, i2 = merged.search(queries, 10)
    assert torch.equal(i1, i2) and torch.equal(d1, d2)
    again = RetrievalIndex.load(tmp_path / "merged.faiss")
    assert torch.equal(again.search(queries, 10)[1], i1)
    if kind == "ivfpq":
        assert np.array_equal(again.vectors.mapped(), gallery.numpy())
        assert np.array_equal(again.refine.codes, single.refine.codes)
    if kind != "flat":  # shards of another training do not merge
        other = RetrievalIndex(space, 16, kind=kind, **options)
        other.add(gallery[1000:2500])
        with pytest.raises(ValueError, match="trained separately"):
            merged.merge_from(other)


def test_build_sharded_in_processes(gen, tmp_path):
    space = LorentzSpace(curv=0.8)
    gallery, queries = clustered(gen, 4000), clustered(gen, 30)
    for j in range(2):
        np.save(tmp_path / f"part{j}.npy", gallery[2000 * j : 2000 * (j + 1)].numpy())
    merged = build_sharded(
        space,
        [tmp_path / "part0.npy", tmp_path / "part1.npy"],
        tmp_path / "all.faiss",
        kind="ivfpq",
        nlist=16,
        nprobe=16,
        rerank=100,
        processes=2,
    )
    assert len(merged) == 4000 and sorted(p.name for p in tmp_path.iterdir()) == [
        "all.faiss",
        "all.faiss.json",
        "all.faiss.refine.npz",
        "all.faiss.vectors",
        "part0.npy",
        "part1.npy",
    ]
    exact = RetrievalIndex(space, 16)
    exact.add(gallery)
    assert recall(exact.search(queries, 10)[1], merged.search(queries, 10)[1]) >= 0.95
    np.save(tmp_path / "bad.npy", np.zeros((5, 3), np.float64))
    with pytest.raises(ValueError, match=r"bad.npy: shard embeddings must be float32"):
        build_sharded(space, [tmp_path / "bad.npy"], tmp_path / "x.faiss")


def test_refine_codes_grow_geometrically_and_read_back_in_order():
    rng = np.random.default_rng(0)
    refine = RefineCodes(64)
    parts = [
        rng.integers(0, 256, (int(n), refine.codes_per_vector), dtype=np.uint8)
        for n in rng.integers(0, 300, 60)
    ]
    reallocations = 0
    for i in range(0, len(parts), 3):  # an add of several chunks, then the next
        before = refine._buffer
        refine.append(parts[i : i + 3])
        reallocations += refine._buffer is not before
    assert np.array_equal(refine.codes, np.concatenate(parts)) and len(refine) == sum(map(len, parts))
    assert reallocations <= 12 < 20  # O(log N) times, not once per append
    assert refine.nbytes <= 1.5 * refine.codes.nbytes + refine.codes_per_vector * 300 * 3


# ------------------------------------------------------------------------------ faiss's OpenBLAS kernels


def test_openblas_core_type_follows_the_cpu_flags():
    from hysafe.index._faiss import openblas_coretype

    skx = {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "sse3"}
    assert openblas_coretype(skx) == "SkylakeX"
    # partial AVX-512 (e.g. Knights Landing): the AVX2 kernels
    assert openblas_coretype(skx - {"avx512bw"}) == "Haswell"
    assert openblas_coretype({"avx2", "fma", "sse3"}) == "Haswell"
    assert openblas_coretype({"avx", "sse3"}) is None  # older CPUs: OpenBLAS's own detection


def test_openblas_core_type_is_set_only_when_the_user_has_not(tmp_path, monkeypatch):
    import sys

    from hysafe.index._faiss import choose_openblas_coretype

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse3 avx avx2 fma\n")
    monkeypatch.delitem(sys.modules, "faiss")  # as before faiss loads (restored after the test)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    env = {}
    assert choose_openblas_coretype(env, str(cpuinfo)) == "Haswell" and env == {
        "OPENBLAS_CORETYPE": "Haswell"
    }
    env = {"OPENBLAS_CORETYPE": ""}
    assert choose_openblas_coretype(env, str(cpuinfo)) is None and env == {"OPENBLAS_CORETYPE": ""}
    assert choose_openblas_coretype({}, str(tmp_path / "missing")) is None


def test_faiss_openblas_loads_the_kernels_hysafe_chose():
    """OpenBLAS's own report (OPENBLAS_VERBOSE=2 prints the core it loaded) agrees with the choice."""
    import os
    import subprocess
    import sys

    from hysafe.index._faiss import cpu_flags, openblas_coretype

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"} | {"OPENBLAS_VERBOSE": "2"}
    code = "import os, hysafe.index.retrieval; print('chosen', os.environ.get('OPENBLAS_CORETYPE'))"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    out = run.stdout + run.stderr  # OpenBLAS reports on stderr
    expected = openblas_coretype(cpu_flags()) if sys.platform == "linux" else None
    assert f"chosen {expected}" in out
    if expected is not None and "Core:" in out:  # builds of OpenBLAS without the verbose report print nothing
        assert out.count("Core: Prescott") == 0 and f"Core: {expected}" in out


# ------------------------------------------------------------------------------ stages: fast paths against
# references


@pytest.mark.parametrize("space", SPACES, ids=["lorentz", "euclidean"])
def test_exact_rerank_float32_preselection_equals_float64_throughout(space, gen, tmp_path, monkeypatch):
    """Stage 3 ranks a float32-chosen pool in float64: the top-k (ids and distances) must equal
    ranking every candidate in float64, with missing candidates (-1), repeated ids, exact ties at
    the pool's edge (duplicate rows: the fallback path) and a pool as large as the candidates."""
    import hysafe.index.compressed as compressed

    rows = clustered(gen, 2000)
    rows[1000:1100] = rows[900:1000]  # exact duplicates: ties in any precision
    vf = VectorFile(tmp_path / "v.f32", 16)
    vf.append(rows.numpy())
    queries = clustered(gen, 40)
    cand = torch.randint(0, 2000, (40, 120), generator=gen).numpy()
    cand[::5, -7:] = -1
    cand[3, :60] = np.repeat(np.arange(900, 930), 2)  # a query whose candidates tie everywhere
    cand[4, :100] = np.r_[np.arange(900, 950), np.arange(1000, 1050)]  # row i and its duplicate i + 100

    def reference(k):
        monkeypatch.setattr(compressed, "FLOAT64_POOL", 10**6)  # no pre-selection: float64 throughout
        out = compressed.exact_rerank(space, queries, cand, vf.take(cand), k)
        monkeypatch.undo()
        return out

    for k in (1, 10, 30):
        want_d, want_i = reference(k)
        got_d, got_i = compressed.exact_rerank(space, queries, cand, vf.take(cand), k)
        assert torch.equal(got_i, want_i) and torch.equal(got_d, want_d)
    # the distances are the float64 ones, rounded once
    q = space.query_vectors(queries.double())
    g = space.gallery_vectors(rows.double())
    ref = space.distance_from_inner(q @ g.T).gather(1, got_i.clamp(min=0))
    assert torch.allclose(got_d.double(), ref, atol=1e-6)


def test_exact_rerank_margin_bounds_float32_rounding(gen):
    """The rounding bound used to decide when float32 may choose the pool covers the float32 error."""
    from hysafe.index.compressed import _float32_inner

    space = LorentzSpace(curv=0.8)
    rows = clustered(gen, 64 * 50, dim=768).reshape(64, 50, 768) * 3
    queries = clustered(gen, 64, dim=768) * 3
    ip, margin = _float32_inner(space, queries, rows)
    exact = torch.einsum(
        "qd,qcd->qc",
        space.query_vectors(queries.double()),
        space.gallery_vectors(rows.reshape(-1, 768).double()).reshape(64, 50, -1),
    )
    err = (ip.double() - exact).abs().amax(1)
    assert torch.all(err <= margin.double()) and torch.all(margin < 1e-2 * exact.abs().amax(1))
