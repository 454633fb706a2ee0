"""The benchmark scripts still run end to end (tiny model, one step): what the GPU sessions rely on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_train_bench_in_process_rows_flops_speedups_and_report(tmp_path):
    out = tmp_path / "train.json"
    subprocess.run([sys.executable, "bench/train_throughput.py", "--model", "hysafe-tiny", "--kinds", "hysac", "--batch-sizes", "4", "2",
                    "--precisions", "fp32", "--naive-precisions", "fp32", "--grad-checkpointing", "--in-process", "--steps", "1",
                    "--warmup", "0", "--profile", str(tmp_path / "profile.txt"), "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    d = json.loads(out.read_text())
    rows = {(r["batch"], r["impl"], r["variant"]): r for r in d["rows"]}
    assert set(rows) == {(b, i, v) for b in (4, 2) for i, v in (("naive", "plain"), ("hysafe", "plain"), ("hysafe", "checkpointing"))}
    for (b, impl, variant), r in rows.items():
        # FLOPs are counted once per step kind (at batch 4) and scale with the batch; same work with checkpointing
        assert r["flops_per_step"] == pytest.approx(rows[(4, impl, "plain")]["flops_per_step"] * b / 4)
        if impl == "hysafe":
            assert r["speedup_vs_naive"] == pytest.approx(r["quadruplets_per_s"] / rows[(b, "naive", "plain")]["quadruplets_per_s"])
    assert "aten::" in (tmp_path / "profile.txt").read_text()
    report = subprocess.run([sys.executable, "bench/report.py", str(out)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert report.count("| hysac |") == 6
