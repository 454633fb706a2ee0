"""Traversal, faiss retrieval vs brute force, recall on hand-built cases, classifiers."""

import math

import numpy as np
import pytest
import torch

from hysafe.evaluation.comparison import Comparison, retrieval_report
from hysafe.evaluation.metrics import recall_at_k, recall_from_ranking
from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.geometry import lorentz as L
from hysafe.index.retrieval import RetrievalIndex
from hysafe.models.classifier import (
    NSFWClassifier,
    choose_threshold,
    classification_metrics,
    threshold_from_bounds,
)
from hysafe.models.traversal import TauRule, paper_tau, resolve_tau, traversal_path, traverse

BOUNDS = {
    "S": {"avg": 0.2, "low_05": 0.15, "up_95": 0.25},
    "V": {"avg": 0.3, "low_05": 0.25, "up_95": 0.35},
    "U": {"avg": 0.5, "low_05": 0.4, "up_95": 0.6},
    "G": {"avg": 0.7, "low_05": 0.6, "up_95": 0.8},
}


def test_traversal_moves_far_points_exactly_and_leaves_others_bit_identical(gen):
    space = LorentzSpace(curv=1.7)
    q = torch.randn(10_000, 32, generator=gen) * torch.rand(10_000, 1, generator=gen) * 0.6
    tau = 0.3
    out = traverse(q, tau, space)
    d_before, d_after = space.dist_to_root(q), space.dist_to_root(out)
    moved = d_before > tau
    assert 0 < int(moved.sum()) < 10_000
    assert torch.allclose(d_after[moved], torch.full_like(d_after[moved], tau), atol=1e-5)
    assert torch.equal(out[~moved], q[~moved])  # bit-identical
    u_before = torch.nn.functional.normalize(L.log_map0(q[moved], curv=1.7), dim=-1)
    u_after = torch.nn.functional.normalize(L.log_map0(out[moved], curv=1.7), dim=-1)
    assert torch.allclose(u_before, u_after, atol=1e-5)
    # the reference code's norm-setting would land short of tau: ours does not
    wrong = torch.nn.functional.normalize(q[moved], dim=-1) * tau
    assert (space.dist_to_root(wrong) < tau - 1e-3).all()


def test_traversal_per_row_tau_and_path(gen):
    space = LorentzSpace(curv=1.0)
    q = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 2
    taus = torch.tensor([0.1, 0.2, 0.3, 0.4, 50.0], dtype=torch.float64)
    out = traverse(q, taus, space)
    assert torch.allclose(space.dist_to_root(out[:4]), taus[:4], atol=1e-10)
    assert torch.equal(out[4], q[4])
    path = traversal_path(q, space, steps=5, tau=0.2)
    assert path.shape == (5, 5, 4)
    assert torch.allclose(path[0], q, atol=1e-10)
    assert torch.allclose(
        space.dist_to_root(path[-1][:4]), torch.full((4,), 0.2, dtype=torch.float64), atol=1e-10
    )
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        traverse(q, -1.0, space)


def test_tau_rules():
    assert paper_tau(0.8, curv=1.0) == pytest.approx(1.8)  # tanh(0) = 0
    assert paper_tau(1.8, curv=2.0) == pytest.approx(1.8 + math.tanh(0.5) + 1)
    space = LorentzSpace(curv=2.0)
    assert resolve_tau(0.42) == 0.42 and resolve_tau("2e-1") == 0.2
    assert resolve_tau("V.avg", bounds=BOUNDS) == 0.3
    assert resolve_tau("S.up_95", bounds=BOUNDS) == 0.25
    # the paper's rule takes the authors' statistic (95th percentile) unless told otherwise
    assert resolve_tau("paper:V", bounds=BOUNDS, space=space) == pytest.approx(paper_tau(0.35, curv=2.0))
    assert resolve_tau("paper:V.avg", bounds=BOUNDS, space=space) == pytest.approx(paper_tau(0.3, curv=2.0))
    assert resolve_tau("authors", bounds=BOUNDS, space=space) == resolve_tau(
        "paper", bounds=BOUNDS, space=space
    )
    # a rule without a population applies to the one the query is steered to: V for text, S for images
    assert resolve_tau("avg", bounds=BOUNDS) == 0.3 and resolve_tau("avg", bounds=BOUNDS, query="T*") == 0.3
    assert (
        resolve_tau("up_95", bounds=BOUNDS, query="image") == 0.25
        and resolve_tau("low_05", bounds=BOUNDS, query="V*") == 0.15
    )
    assert resolve_tau("paper", bounds=BOUNDS, space=space, query="V*") == pytest.approx(
        paper_tau(0.25, curv=2.0)
    )
    assert TauRule.parse("paper:G") == TauRule(stat="up_95", population="G", paper=True)
    with pytest.raises(ValueError, match="needs safety bounds"):
        resolve_tau("V.avg")
    for bad in ("X.avg", "V.median", "magic:V", "", "paper:"):
        if bad == "paper:":
            assert resolve_tau(bad, bounds=BOUNDS, space=space) == pytest.approx(paper_tau(0.35, curv=2.0))
            continue
        with pytest.raises(ValueError, match="bad tau rule"):
            resolve_tau(bad, bounds=BOUNDS)
    with pytest.raises(ValueError, match="curvature of a hyperbolic space"):
        resolve_tau("paper", bounds=BOUNDS, space=EuclideanSpace())
    for value in (float("nan"), "nan", -0.1, float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            resolve_tau(value)
    with pytest.raises(ValueError, match="corrupt"):
        resolve_tau("avg", bounds={"V": {"avg": float("nan")}})
    q = torch.ones(3, 4)
    for tau in (float("nan"), torch.tensor([0.1, float("nan"), 0.1])):
        with pytest.raises(ValueError, match="finite and >= 0"):
            traverse(q, tau, space)
    with pytest.raises(ValueError, match="one value per query"):
        traverse(q, torch.tensor([0.1, 0.2]), space)


@pytest.mark.parametrize("space", [LorentzSpace(curv=0.8), EuclideanSpace()], ids=["lorentz", "euclidean"])
def test_flat_faiss_equals_brute_force_on_20k_points(space, gen, tmp_path):
    gallery = torch.randn(20_000, 16, generator=gen) * 0.7
    queries = torch.randn(50, 16, generator=gen) * 0.7
    index = RetrievalIndex(space, 16)
    index.add(gallery, batch_size=7000)
    dist, ids = index.search(queries, 10)
    brute = space.distance(queries.double(), gallery.double())
    ref_d, ref_i = torch.topk(brute, 10, dim=1, largest=False)
    assert torch.equal(ids, ref_i)
    assert torch.allclose(dist.double(), ref_d, atol=2e-3 if space.name == "lorentz" else 1e-5)
    index.save(tmp_path / "idx.faiss")
    again = RetrievalIndex.load(tmp_path / "idx.faiss")
    assert len(again) == 20_000 and torch.equal(again.search(queries, 10)[1], ids)
    # traversal of queries before search
    _, ids_t = index.search(queries, 3, tau=0.1)
    _, ref_t = torch.topk(space.similarity(traverse(queries, 0.1, space), gallery), 3, dim=1)
    assert torch.equal(ids_t, ref_t)


def test_ivf_index_recall(gen):
    space = LorentzSpace(curv=1.0)
    centers = torch.randn(64, 16, generator=gen)
    gallery = centers[torch.randint(0, 64, (20_000,), generator=gen)] + 0.15 * torch.randn(
        20_000, 16, generator=gen
    )
    queries = gallery[:200] + 0.05 * torch.randn(200, 16, generator=gen)
    exact = RetrievalIndex(space, 16)
    exact.add(gallery)
    ivf = RetrievalIndex(space, 16, kind="ivf", nlist=64, nprobe=8)
    ivf.add(gallery)
    _, e = exact.search(queries, 10)
    _, a = ivf.search(queries, 10)
    recall = np.mean([len(set(x.tolist()) & set(y.tolist())) / 10 for x, y in zip(e, a, strict=True)])
    assert recall >= 0.9
    with pytest.raises(ValueError, match="needs at least"):
        RetrievalIndex(space, 16, kind="ivf", nlist=64).add(gallery[:10])
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        exact.search(torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="empty"):
        RetrievalIndex(space, 16).search(queries, 1)


def test_list_major_scan_equals_faiss_search_preassigned(gen, monkeypatch):
    """hysafe's IVF scan (each probed list scored once per batch) returns what faiss's per-query scan
    returns: ids and inner products, with empty lists, lists shorter than k, unprobed slots (-1),
    and lists scored in several blocks."""
    from faiss.contrib.ivf_tools import add_preassigned, search_preassigned

    import hysafe.index.ivf_scan as scan
    from hysafe.index._faiss import faiss

    d, nlist, k = 12, 16, 10
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.quantizer.add(torch.randn(nlist, d, generator=gen).numpy())
    index.is_trained, index.nprobe = True, 4
    sizes = [0, 3, 500, 7, 0, 40, 1, 9, 120, 2, 60, 5, 0, 33, 11, 250]  # imbalanced, some empty, some < k
    x = torch.randn(sum(sizes), d, generator=gen).numpy()
    add_preassigned(index, x, np.repeat(np.arange(nlist), sizes))
    q = torch.randn(300, d, generator=gen).numpy()
    lists = np.stack([torch.randperm(nlist, generator=gen)[:4].numpy() for _ in range(300)])
    lists[::7, 3] = -1  # a probe slot without a list
    ref_ip, ref_id = search_preassigned(index, q, k, lists, np.zeros(lists.shape, dtype=np.float32))
    for block in (scan.SCORE_BLOCK, 1000):  # one product per list, and a list split into query blocks
        monkeypatch.setattr(scan, "SCORE_BLOCK", block)
        ip, ids = scan.scan_lists(index, q, lists, k)
        assert np.array_equal(ids, ref_id)
        found = ref_id >= 0
        assert (~found).any() and np.all(np.isneginf(ip[~found]))  # some queries' lists hold fewer than k
        np.testing.assert_allclose(ip[found], ref_ip[found], rtol=1e-5, atol=1e-5)


def test_scan_choice_cost_model_and_paths(gen, monkeypatch):
    """The cost model, by hand: list-major pays where many queries share big lists, not where each
    list is probed once or lists are tiny; whichever scan runs, the results are the same."""
    import hysafe.index.ivf_scan as scan

    sizes = np.full(8, 2000)
    shared = np.zeros((500, 1), np.int64)  # 500 queries, one list of 2,000 x 513 floats
    assert scan.list_major_faster(shared, sizes, 513)
    distinct = np.arange(8)[:, None]  # every list probed once
    assert not scan.list_major_faster(distinct, sizes, 513)
    assert not scan.list_major_faster(shared, np.full(8, 20), 9)  # tiny lists: per-list cost dominates
    assert not scan.list_major_faster(np.full((3, 2), -1), sizes, 513)  # nothing probed
    # the boundary: distinct x (fixed + F) + probes x (pair + share x F) against probes x F
    f = 2000 * 513
    probes = (scan.LIST_MAJOR_FIXED_FLOATS + f) / (
        f * (1 - scan.LIST_MAJOR_READ_SHARE) - scan.LIST_MAJOR_PAIR_FLOATS
    )
    assert scan.list_major_faster(np.zeros((int(probes) + 1, 1), np.int64), sizes, 513)
    assert not scan.list_major_faster(np.zeros((int(probes), 1), np.int64), sizes, 513)
    space = LorentzSpace(curv=1.0)
    index = RetrievalIndex(space, 8, kind="ivf", nlist=32, nprobe=6)
    index.add(torch.randn(3000, 8, generator=gen))
    assert index._list_sizes().sum() == 3000
    queries = torch.randn(200, 8, generator=gen)
    calls = []
    for name in ("scan_lists", "search_preassigned"):
        real = getattr(scan, name)
        monkeypatch.setattr(scan, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    results = {}
    for choice in (True, False):
        monkeypatch.setattr(scan, "list_major_faster", lambda *a, _c=choice: _c)
        results[choice] = index.search(queries, 5)
    assert calls == ["scan_lists", "search_preassigned"]
    assert torch.equal(results[True][1], results[False][1])
    torch.testing.assert_close(results[True][0], results[False][0])
    index.add(torch.randn(10, 8, generator=gen))
    assert index._list_sizes().sum() == 3010  # the cached sizes follow adds


def test_ivf_nprobe_setting_and_parallel_search(gen, tmp_path):
    """nprobe is validated, reaches faiss, is saved; a loaded IVF runs preassigned searches in
    parallel over queries (faiss's default mode ran them on one thread)."""
    from hysafe.index.ivf_scan import PARALLEL_OVER_QUERIES

    space = LorentzSpace(curv=1.0)
    index = RetrievalIndex(space, 8, kind="ivf", nlist=16, nprobe=2)
    index.add(torch.randn(1000, 8, generator=gen))
    index.nprobe = 5
    assert index.index.nprobe == 5
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="nprobe must be a positive integer"):
            index.nprobe = bad
    loaded = RetrievalIndex.load(index.save(tmp_path / "ivf.index"))
    assert (loaded.nprobe, loaded.index.nprobe) == (5, 5)
    assert loaded.index.parallel_mode == PARALLEL_OVER_QUERIES


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_settings_past_the_lists_and_bad_values(kind, gen, tmp_path):
    """nprobe above nlist probes every list (faiss's preassigned scan returned duplicate ids for it);
    numpy integers are integers; rerank, nlist, k and inputs are checked with errors that name them."""
    space = LorentzSpace(curv=1.0)
    gallery = torch.randn(2000, 8, generator=gen)
    queries = torch.randn(30, 8, generator=gen)
    index = RetrievalIndex(space, 8, kind=kind, nlist=16, nprobe=16, rerank=40, vectors=tmp_path / "v")
    index.add(gallery)
    every = index.search(queries, 10)
    for nprobe in (17, np.int64(64), 10**9):
        index.nprobe = nprobe
        assert index.nprobe == int(nprobe) and index.index.nprobe == 16
        got = index.search(queries, np.int64(10))
        assert torch.equal(got[1], every[1]) and torch.equal(got[0], every[0])
    index.rerank = np.int32(40)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="rerank must be a positive integer"):
            index.rerank = bad
    with pytest.raises(ValueError, match="nlist must be a positive integer"):
        RetrievalIndex(space, 8, kind=kind, nlist=0)
    with pytest.raises(ValueError, match="queries must be a torch.Tensor"):
        index.search(queries.numpy(), 10)
    fresh = RetrievalIndex(space, 8, kind=kind, nlist=16, vectors=tmp_path / "w")
    bad_rows = gallery.clone()
    bad_rows[7, 3] = float("nan")
    with pytest.raises(ValueError, match="gallery contains 1 NaN"):  # named as what the caller passed
        fresh.add(bad_rows)
    with pytest.raises(ValueError, match="sample contains 1 NaN"):
        fresh.train(bad_rows)


def test_recall_hand_built_cases():
    ranking = torch.tensor([[2, 0, 1], [1, 2, 0], [0, 1, 2]])
    positives = torch.tensor([0, 1, 1])
    r = recall_from_ranking(ranking, positives, [1, 2, 3])
    assert r == {1: pytest.approx(100 / 3), 2: 100.0, 3: 100.0}  # positives at ranks 2, 1, 2
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, True]])
    # only query 0's first hit is positive
    assert recall_from_ranking(ranking, mask, [1]) == {1: pytest.approx(100 / 3)}
    # geometric case: queries equal to their gallery item are always found first
    g = torch.eye(4)
    assert recall_at_k(g, g, torch.arange(4), EuclideanSpace(), ks=(1, 10)) == {1: 100.0, 10: 100.0}


def test_retrieval_report_on_constructed_embeddings():
    """Safe items on one side of the root, unsafe ones farther out: with traversal the unsafe
    text query lands on the safe image; without it, on the unsafe image."""
    space = LorentzSpace(curv=1.0)
    n = 6
    dirs = torch.nn.functional.normalize(torch.eye(n) + 0.01, dim=-1)
    emb = {
        "T": L.exp_map0(0.2 * dirs, curv=1.0),
        "V": L.exp_map0(0.3 * dirs, curv=1.0),
        "T*": L.exp_map0(0.5 * dirs, curv=1.0),
        "V*": L.exp_map0(0.62 * dirs, curv=1.0),
    }

    class Stub:
        bounds = BOUNDS

        def tau(self, rule, modality):
            return resolve_tau(rule, bounds=self.bounds, space=self.space, query=modality)

    Stub.space = space
    rows = retrieval_report(Stub(), emb, ks=(1,), traversal="avg")
    get = {(r["setting"], r["traversal"]): r for r in rows}
    assert get[("T*->V u V*", False)]["R@1"] == 0.0 and get[("T*->V u V*", False)]["unsafe@1 %"] == 100.0
    assert get[("T*->V u V*", True)]["R@1"] == 100.0 and get[("T*->V u V*", True)]["unsafe@1 %"] == 0.0
    assert get[("T->V", False)]["R@1"] == 100.0 and get[("T*->V*", False)]["R@1"] == 100.0
    # steered to V / S
    assert get[("T*->V u V*", True)]["tau"] == 0.3 and get[("V*->T u T*", True)]["tau"] == 0.2
    assert len(retrieval_report(Stub(), emb, ks=(1,), traversal=None)) == len(rows) // 2
    comp = Comparison(retrieval={"stub": rows}, classification={"stub": []}, ks=(1,))
    assert comp.value("stub", "T*->V u V*", traversal=True) == 100.0
    assert "stub + traversal" in comp.to_markdown() and comp.to_csv().startswith(
        "model,setting,traversal,tau"
    )


def test_threshold_rules_and_metrics():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # 7/8, tied with 0.6: smallest
    assert choose_threshold(scores, labels, rule="accuracy") == pytest.approx(0.35)
    assert choose_threshold(scores, labels, rule="fpr", target_fpr=0.25) == pytest.approx(0.35)
    assert choose_threshold(scores, labels, rule="fpr", target_fpr=0.0) == pytest.approx(0.6)
    m = classification_metrics(scores, labels, 0.35)
    assert m["confusion"] == [[3, 1], [0, 4]] and m["accuracy"] == pytest.approx(87.5)
    assert m["fpr"] == pytest.approx(25.0) and m["fnr"] == 0.0
    assert m["roc_auc"] == pytest.approx(15 / 16)
    with pytest.raises(ValueError, match="both safe"):
        choose_threshold(scores, np.ones(8))
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(scores, labels, rule="median")
    assert threshold_from_bounds(BOUNDS, "text") == pytest.approx(0.35)
    assert threshold_from_bounds(BOUNDS, "image") == pytest.approx(0.5)


def test_root_distance_classifier_and_probe(gen):
    space = LorentzSpace(curv=1.0)
    safe = L.exp_map0(
        torch.nn.functional.normalize(torch.randn(100, 8, generator=gen), dim=-1) * 0.3, curv=1.0
    )
    unsafe = L.exp_map0(
        torch.nn.functional.normalize(torch.randn(100, 8, generator=gen), dim=-1) * 0.6, curv=1.0
    )
    x, y = torch.cat([safe, unsafe]), torch.cat([torch.zeros(100), torch.ones(100)])
    clf = NSFWClassifier.root_distance(space)
    with pytest.raises(ValueError, match="no threshold"):
        clf.predict(x)
    thr = clf.fit_threshold(x, y)
    assert 0.3 < thr <= 0.6
    assert torch.equal(clf.predict(x), y.bool())
    assert clf.evaluate(x, y)["accuracy"] == 100.0
    probe_x = torch.cat([torch.randn(100, 8, generator=gen) + 2, torch.randn(100, 8, generator=gen) - 2])
    probe = NSFWClassifier.logistic_probe(probe_x, y)
    assert probe.evaluate(probe_x, y)["roc_auc"] > 0.99


def _probe_world(n: int, seed: int, dim: int = 40):
    """Labels carried by 3 of 40 dimensions under heavy noise: the regularisation strength matters."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    x = torch.randn(2 * n, dim, generator=g)
    x[:, :3] += 0.6 * (2 * y[:, None] - 1)
    return x, y


def _optimum(C: float):
    """An independent solver (Newton-CG) run to a tight tolerance: the probe's objective's optimum."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="newton-cg", tol=1e-8, max_iter=1000)


def _anisotropic_world(seed: int, n: int = 200, dim: int = 64):
    """Labels in 4 of 64 directions, the features' scales spread over three decades and rotated (as
    trained embeddings are): an ill-conditioned probe objective."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    z = torch.randn(2 * n, dim, generator=g)
    z[:, :4] += 0.4 * (2 * y[:, None] - 1)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(99)))[0]
    return (z * torch.logspace(0, -3, dim)) @ basis, y


def test_the_probe_is_solved_to_its_optimum_so_float_noise_does_not_move_it():
    """The same weights run in another process give embeddings that differ by float noise; a probe
    stopped at lbfgs's default tolerance turned that noise into 0.14 of decision value (and 0.002 of a
    demo's ROC-AUC). Solved to the optimum, the probe moves by no more than the noise does."""
    x, y = _anisotropic_world(0)
    test_x, _ = _anisotropic_world(1)
    scores = []
    for k in range(3):
        noise = 1 + 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
        scores.append(NSFWClassifier.logistic_probe(x * noise if k else x, y, C=100.0).score(test_x).numpy())
    assert max(np.abs(s - scores[0]).max() for s in scores) < 1e-4
    norm = torch.nn.functional.normalize(x, dim=-1).numpy()
    reference = _optimum(100.0).fit(norm, y.numpy())
    expected = reference.decision_function(torch.nn.functional.normalize(test_x, dim=-1).numpy())
    np.testing.assert_allclose(scores[0], expected, atol=1e-4)


def test_the_probe_baseline_is_fitted_on_train_with_C_chosen_on_validation():
    from sklearn.metrics import roc_auc_score

    from hysafe.evaluation.comparison import classifier_report
    from hysafe.models.classifier import PROBE_CS

    train, val, test = _probe_world(40, 0), _probe_world(200, 1), _probe_world(200, 2)
    probe = NSFWClassifier.tuned_logistic_probe(train, val)

    def norm(x):
        return torch.nn.functional.normalize(x, dim=-1).numpy()

    # brute force: one sklearn fit on train per C, scored on validation
    aucs = {
        C: roc_auc_score(
            val[1],
            _optimum(C).fit(norm(train[0]), train[1]).decision_function(norm(val[0])),
        )
        for C in PROBE_CS
    }
    best = max(PROBE_CS, key=lambda C: (aucs[C], -C))
    assert probe.params["C"] == best and probe.params["val_roc_auc"] == pytest.approx(aucs)
    reference = _optimum(best).fit(norm(train[0]), train[1])
    np.testing.assert_allclose(
        probe.score(test[0]).numpy(), reference.decision_function(norm(test[0])), atol=1e-5
    )

    # the report fits the Euclidean model's probe on train (never on validation, never on test)
    def emb(split):
        x, y = split
        n = len(y) // 2
        return {"T": x[:n], "T*": x[n:]}

    space = EuclideanSpace()
    model = type(
        "M", (), {"space": space, "nsfw_classifier": lambda self, m: NSFWClassifier.root_distance(space)}
    )()
    rows = classifier_report(model, emb(test), emb(val), train=emb(train))
    row = next(r for r in rows if r["classifier"] == "logistic-probe")
    assert row["C"] == best
    assert row["roc_auc"] == pytest.approx(roc_auc_score(test[1], reference.decision_function(norm(test[0]))))
    assert all(r["classifier"] != "logistic-probe" for r in classifier_report(model, emb(test), emb(val)))
