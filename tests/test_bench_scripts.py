"""The benchmark scripts still run end to end (tiny model, one step): what the GPU sessions rely on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_train_bench_in_process_rows_flops_speedups_and_report(tmp_path):
    out = tmp_path / "train.json"
    subprocess.run(
        [
            sys.executable,
            "bench/train_throughput.py",
            "--model",
            "hysafe-tiny",
            "--kinds",
            "hysac",
            "--batch-sizes",
            "4",
            "2",
            "--precisions",
            "fp32",
            "--naive-precisions",
            "fp32",
            "--grad-checkpointing",
            "--torch-dropout",
            "--in-process",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--profile",
            str(tmp_path / "profile.txt"),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    d = json.loads(out.read_text())
    rows = {(r["batch"], r["impl"], r["variant"]): r for r in d["rows"]}
    assert set(rows) == {
        (b, i, v)
        for b in (4, 2)
        for i, v in (
            ("naive", "plain"),
            ("hysafe", "plain"),
            ("hysafe", "checkpointing"),
            ("hysafe", "torch-dropout"),
        )
    }
    for (b, impl, _variant), r in rows.items():
        # FLOPs are counted once per step kind (at batch 4) and scale with the batch; same work with
        # checkpointing
        assert r["flops_per_step"] == pytest.approx(rows[(4, impl, "plain")]["flops_per_step"] * b / 4)
        if impl == "hysafe":
            assert r["speedup_vs_naive"] == pytest.approx(
                r["quadruplets_per_s"] / rows[(b, "naive", "plain")]["quadruplets_per_s"]
            )
    assert "aten::" in (tmp_path / "profile.txt").read_text()
    report = subprocess.run(
        [sys.executable, "bench/report.py", str(out)], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert report.count("| hysac |") == 8


def test_attention_kernel_bench_times_both_kernels(tmp_path, monkeypatch):
    """Run in this process (its script is small; a subprocess would pay torch's and hysafe's imports
    again)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import attention_kernels

    out = tmp_path / "attention.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "attention_kernels.py",
            "--lengths",
            "9",
            "33",
            "--heads",
            "2",
            "--dim",
            "8",
            "--tokens",
            "256",
            "--repeats",
            "1",
            "--threads",
            str(torch.get_num_threads()),
            "--out",
            str(out),
        ],
    )
    attention_kernels.main()
    rows = json.loads(out.read_text())["rows"]
    assert [(r["length"], r["precision"], r["batch"]) for r in rows] == [
        (9, "fp32", 28),
        (9, "bf16", 28),
        (33, "fp32", 7),
        (33, "bf16", 7),
    ]
    for r in rows:
        assert all(r[f"{k}_{t}_s"] > 0 for k in ("flash", "math") for t in ("forward", "forward_backward"))
        assert r["math_speedup_forward_backward"] == pytest.approx(
            r["flash_forward_backward_s"] / r["math_forward_backward_s"]
        )


def test_compressed_index_bench_builds_searches_and_times_its_stages(tmp_path):
    """Build-only, then search the saved index (--reuse): recall against exact search and per-stage
    seconds."""
    common = [
        sys.executable,
        "bench/compressed_index.py",
        "--n",
        "6000",
        "--dim",
        "32",
        "--nlist",
        "16",
        "--nprobe",
        "4",
        "--train",
        "6000",
        "--chunk",
        "3000",
        "--queries",
        "40",
        "--repeats",
        "1",
        "--work",
        str(tmp_path / "idx"),
    ]
    subprocess.run(common + ["--build-only"], cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "idx" / "index.faiss").is_file()
    out = tmp_path / "c.json"
    subprocess.run(
        common + ["--reuse", "--rerank", "10", "--exact-factors", "3", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert 0.5 <= row["recall@10"] <= 1.0 and row["exact_factor"] == 3
    assert set(row["stage_s_warm"]) == {"route", "scan", "refine", "read rows", "exact"} and all(
        v >= 0 for v in row["stage_s_warm"].values()
    )


def test_image_ceiling_helpers_fit_and_score():
    """The image-ceiling benchmark's classifier fit picks its best validation epoch and its separation
    statistics are the check's (safe 95th vs unsafe 5th percentile)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from image_ceiling import SmallCNN

    from hysafe.evaluation.ceiling import binary_scores, fit_binary, separation

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32, generator=g) * 0.2
    y = torch.cat([torch.zeros(32), torch.ones(32)])
    x[32:, :, 10:14, 10:14] += 0.8  # the unsafe half carries a bright patch
    torch.manual_seed(0)  # the network's initial weights
    net = fit_binary(SmallCNN(width=8), (x, y), (x, y), epochs=60, lr=1e-2, batch=16)
    sep = separation(binary_scores(net, x), y)
    assert sep["roc_auc"] == 1.0 and sep["separated"] and sep["unsafe_below_safe_95"] == 0.0
    s = torch.cat([torch.arange(100.0), torch.arange(100.0) + 50])
    sep = separation(s, torch.cat([torch.zeros(100), torch.ones(100)]))
    assert (
        not sep["separated"]
        and sep["safe_up_95"] == pytest.approx(94.05)
        and sep["unsafe_low_05"] == pytest.approx(54.95)
    )
    assert sep["unsafe_below_safe_95"] == pytest.approx(0.45)


def test_image_ceiling_scratch_towers_build_and_time():
    """Every from-scratch tower of the image-ceiling benchmark (open_clip ViT, ModifiedResNet, timm)
    builds for 32 px images and scores one value per image; its cost is timed."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from image_ceiling import SETTINGS, TOWERS, cost, scratch_tower

    x = torch.rand(4, 3, 32, 32)
    for name in TOWERS:
        assert name in SETTINGS
        net = scratch_tower(name, embed_dim=16)
        assert net(x).shape == (4,), name
        assert cost(net, x, repeats=1) > 0 and all(p.grad is None for p in net.parameters())


def test_worlds_cache_is_keyed_by_every_setting_and_the_code(tmp_path):
    """bench/worlds.py never reuses a model trained with other settings or by other code: each
    changes the cache file; the same settings and code find the cached model again."""
    sys.path.insert(0, str(ROOT / "bench"))
    from worlds import cache_path, cached_model, code_digest, run_settings

    from hysafe import create_model
    from hysafe.demo import DemoConfig

    code = code_digest()
    settings = run_settings(DemoConfig())
    path = cache_path(tmp_path, "safeclip", settings, code)
    assert path == cache_path(tmp_path, "safeclip", run_settings(DemoConfig(out_dir="elsewhere")), code)
    others = [
        cache_path(tmp_path, "safeclip", run_settings(DemoConfig(lr=1e-3)), code),
        cache_path(tmp_path, "safeclip", run_settings(DemoConfig(seed=1)), code),
        cache_path(tmp_path, "safeclip", {**settings, "options": {"pair_quantile": 0.0}}, code),
        cache_path(tmp_path, "safeclip", settings, "another code version"),
    ]
    assert len({path, *others}) == 5
    # the digest covers the library's source, not the apps'
    tree = tmp_path / "src"
    for rel in ("hysafe/models/a.py", "hysafe/cli/b.py", "geometry/c.py", "losses/d.py"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x = 1\n")
    before = code_digest(tree)
    (tree / "hysafe/cli/b.py").write_text("x = 2\n")
    assert code_digest(tree) == before
    (tree / "losses/d.py").write_text("x = 2\n")
    assert code_digest(tree) != before

    from hysafe.training.pretrain import export_open_clip

    base = export_open_clip(
        create_model("clip", "hysafe-tiny", None, lora=None), tmp_path / "clip.safetensors"
    )
    built = []

    def build():
        built.append(1)
        return create_model("safeclip", "hysafe-tiny", str(base))

    first = cached_model(path, settings, build)
    again = cached_model(path, settings, build)
    assert len(built) == 1 and path.with_suffix(".json").is_file()
    assert all(
        torch_equal(a, b)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_worlds_ceiling_auto_is_measured_once_per_world_and_setting(tmp_path):
    """``--ceilings auto``: a world's ceiling is read from its cache when the settings and code are
    the same (no tower is built: the base checkpoint does not exist), and measured again otherwise."""
    sys.path.insert(0, str(ROOT / "bench"))
    from worlds import cache_path, code_digest, image_ceilings, run_settings, world_ceiling

    from hysafe.demo import DemoConfig

    assert image_ceilings("auto") == "auto" and image_ceilings(None) == {}
    cfg, code = DemoConfig(), code_digest()
    settings = {**run_settings(cfg), "stage": "image-ceiling"}
    path = cache_path(tmp_path, "image-ceiling", settings, code).with_suffix(".json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"unsafe_below_safe_95": 0.125}))
    missing = str(tmp_path / "no-such-clip.safetensors")
    assert world_ceiling(cfg, missing, (), tmp_path, code) == 0.125
    with pytest.raises(Exception, match="no-such-clip"):
        world_ceiling(DemoConfig(ceiling_epochs=7), missing, (), tmp_path, code)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_protocol_rule_chooses_on_validation_and_reports_pass_rates(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from protocol import choose, choose_markdown, report_markdown

    def check(name, ok):
        return {"name": name, "passed": ok, "detail": f"{name} numbers"}

    def record(world, variant, *verdicts):
        names = ("classifier (text)", "classifier (image)", "ordering S < V < U < G")
        checks = [check(n, v) for n, v in zip(names, verdicts, strict=True)]
        return {
            "world": world,
            "variant": variant,
            "checks": checks + [check("SafeR-CLIP vs Safe-CLIP (T->V)", False)],
        }

    records = [
        record("param:100", "default", True, False, True),
        record("param:101", "default", True, True, False),
        record("param:100", "rel-0.3", True, True, True),
        record("param:101", "rel-0.3", True, False, True),
        record("param:100", "abs-K0.1", True, True, True),  # not run on every world: does not compete
    ]
    winner, means = choose(records)
    # SafeR-CLIP's check is not counted
    assert winner == "rel-0.3" and means == pytest.approx({"default": 4 / 6, "rel-0.3": 5 / 6})
    assert (
        choose(
            records[:2]
            + [record("param:100", "x", True, False, True), record("param:101", "x", True, True, False)]
        )[0]
        == "default"
    )  # a tie keeps it
    assert "Chosen: **rel-0.3**" in choose_markdown(
        records
    ) and "(no: classifier (image))" in choose_markdown(records)
    for i, ok in enumerate((True, False)):
        folder = tmp_path / f"param-{1000 + i}"
        folder.mkdir()
        (folder / "checks.json").write_text(
            json.dumps([check("ordering S < V < U < G", ok), check("classifier (text)", True)])
        )
    table = report_markdown(sorted(tmp_path.iterdir()))
    assert (
        "| ordering S < V < U < G | 1/2 | yes | **no** |" in table and "| classifier (text) | 2/2 |" in table
    )


def _peers(tmp_path, section: str, *extra: str) -> dict:
    out = tmp_path / f"{section}.json"
    argv = [sys.executable, "bench/peers.py", "--section", section, "--n", "6000", "--dim", "32"]
    argv += ["--nlist", "16", "--train", "6000", "--queries", "40", "--repeats", "1", "--out", str(out)]
    subprocess.run(argv + list(extra), cwd=ROOT, check=True, capture_output=True)
    return json.loads(out.read_text())


def _recall(result: dict, method: str, setting) -> float:
    (row,) = [r for r in result["rows"] if r["method"] == method and r["setting"] == setting]
    return row["recall@10"]


def test_peer_bench_compares_at_equal_memory_and_scores_against_exact(tmp_path):
    """hysafe's two codes and faiss's IVF-PQ + PQ refine take the same bytes per vector (within the
    padding); probing every list with hysafe's exact re-rank finds the exact neighbours; every faiss
    point gets a verdict. (One section: each method is a process of its own, ~10 s each here.)"""
    methods = ("hysafe-ivfpq", "faiss-ivfpq-refine-pq")
    result = _peers(tmp_path, "compressed", "--nprobe", "1", "16", "--k-factors", "10", "--methods", *methods)
    ram = {k: m["ram_bytes_per_vector"] for k, m in result["methods"].items()}
    assert set(ram) == {"exact", *methods} and abs(ram["hysafe-ivfpq"] - ram["faiss-ivfpq-refine-pq"]) <= 2
    assert _recall(result, "exact", None) == 1.0 and _recall(result, "hysafe-ivfpq", [16, 10]) >= 0.95
    assert _recall(result, "hysafe-ivfpq", [1, 10]) < _recall(result, "hysafe-ivfpq", [16, 10])
    assert [v["peer"]["setting"] for v in result["verdict"]] == [[1, 10], [16, 10]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "-1"], "--repeats: must be >= 0, got -1"),
        (["--route-dims", "-5"], "--route-dims: must be >= 0, got -5"),
        (["--n", "0"], "--n: must be >= 1, got 0"),
        (["--section", "ivf", "--methods", "faiss-ivfpq"], "--section ivf has no method faiss-ivfpq"),
        (["--n", "2000", "--nlist", "4096"], "--nlist 4096 needs at least as many points"),
        (["--section", "compressed", "--dim", "16"], "--dim must be >= 32"),
        (["--out", "/nonexistent/folder/x.json"], "its folder does not exist"),
    ],
)
def test_peer_bench_refuses_bad_arguments_before_building_anything(argv, message, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import peers

    monkeypatch.setattr(sys, "argv", ["peers.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        peers.parse_args()
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_peer_bench_sweeps_hysafe_ivf_routing(tmp_path):
    """hysafe's IVF runs every (nprobe, route_dims) pair; all lists with exact routing is exact search."""
    result = _peers(
        tmp_path, "ivf", "--nprobe", "1", "16", "--route-dims", "0", "8", "--methods", "hysafe-ivf"
    )
    settings = [r["setting"] for r in result["rows"] if r["method"] == "hysafe-ivf"]
    assert settings == [[1, 0], [1, 8], [16, 0], [16, 8]]
    assert _recall(result, "hysafe-ivf", [16, 0]) >= 0.999  # float32 ties aside
    assert _recall(result, "hysafe-ivf", [1, 8]) <= _recall(result, "hysafe-ivf", [16, 8])


def test_text_context_bench_times_the_three_forwards(tmp_path):
    """Run in this process on a small batch; the report renders its table."""
    sys.path.insert(0, str(ROOT / "bench"))
    import text_context

    out = tmp_path / "text_context.json"
    assert text_context.main(["--worlds", "shapes", "--batch", "8", "--repeats", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["seconds"]) == {"context 24", "context 77", "context 77 trimmed"}
    assert (
        row["batch"] == 8
        and 5 < row["longest caption (tokens)"] <= 24
        and row["captions cut at 24 tokens"] == 0
    )
    assert row["vs context 24"]["context 24"] == 1.0
    report = subprocess.run(
        [sys.executable, "bench/report.py", str(out)], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert "| shapes | 8 |" in report


def test_language_rule_chooses_on_validation_text_auc_within_the_recall_tolerance():
    sys.path.insert(0, str(ROOT / "bench"))
    import language

    def row(name, auc, recall):
        return {"variant": name, "val_text_auc": auc, "val_recall_sum": recall}

    current = row("proj-30", 0.80, 200.0)
    assert language.choose([current, row("attn-10", 0.90, 191.0)], "proj-30") == "attn-10"  # 4.5% less
    assert language.choose([current, row("attn-10", 0.95, 189.0)], "proj-30") == "proj-30"  # 5.5% less
    assert language.choose([current, row("proj-60", 0.80, 250.0)], "proj-30") == "proj-30"  # a tie keeps it
    history = [{"epoch": 1, "score": 2.0}, {"epoch": 2, "score": 3.0}, {"epoch": 3, "score": 1.0}]
    assert language.kept_validation(history, 3.0)["epoch"] == 2
    from hysafe.demo import DemoConfig

    current = language.VARIANTS[language.CURRENT]  # the demo's text-tower defaults, as the rule keeps them
    demo = DemoConfig(text_tower="a/text/model").record()  # the demo with a text tower, as it runs
    assert {k: demo[k] for k in current} == current
    assert current == {
        "text_tower_lora": "attn",
        "text_tower_epochs": 10,
        "rank_weight": 10.0,
        "text_radius": "probe",
    }
    assert DemoConfig().record()["text_radius"] == "norm"  # the model's own tower: as published


def test_language_probe_width_chooses_c_on_one_validation_half_and_reports_the_other():
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    from language_probe_width import halves, probe

    a, b = halves(10)
    assert a.sum() == b.sum() == 10 and not (a & b).any() and (a[:10] == a[10:]).all()  # a row's captions
    rng = np.random.default_rng(0)

    def split(n):  # unsafe captions shifted along the first axis
        x = rng.normal(size=(2 * n, 4))
        x[n:, 0] += 3.0
        return torch.from_numpy(x).float(), torch.from_numpy(np.r_[np.zeros(n), np.ones(n)])

    a, b = halves(100)
    r = probe(split(200), split(100), a, b)
    assert r["C"] in (0.01, 0.1, 1.0, 10.0, 100.0) and 0.9 < r["val_half_B_auc"] <= 1.0
