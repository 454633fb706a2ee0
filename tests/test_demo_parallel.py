"""The demo's fine-tunes in parallel processes give what they give one after another."""

from dataclasses import replace

import pytest
import torch

from hysafe.data import WorldConfig
from hysafe.demo.pipeline import (
    FINE_TUNES,
    DemoConfig,
    _fine_tune_all,
    demo_datasets,
    fine_tune_workers,
    run_demo,
)
from hysafe.models.safety_model import create_model


def _weights(model):
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def test_parallel_fine_tunes_equal_sequential(tmp_path, tiny_base):
    cfg = DemoConfig.quick(
        out_dir=str(tmp_path),
        finetune_epochs=2,
        progress=False,
        batch_size=16,
        world=WorldConfig(n_train=96, n_val=32, n_test=16, seed=2),
    )
    probe = create_model("clip", cfg.model, None, lora=None)
    train_set, val_set, _ = demo_datasets(cfg, probe, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' share on any machine below: the same arithmetic both ways
    try:
        sequential = _fine_tune_all(
            replace(cfg, workers=1), tiny_base, train_set, val_set, tmp_path / "seq", {}
        )
        timings = {}
        parallel = _fine_tune_all(
            replace(cfg, workers=3), tiny_base, train_set, val_set, tmp_path / "par", timings
        )
    finally:
        torch.set_num_threads(threads)
    assert set(parallel) == set(sequential) == set(FINE_TUNES)
    assert set(timings) == {f"fine-tune {name}" for name in FINE_TUNES} | {"fine-tunes (wall, in parallel)"}
    for name, seq in sequential.items():
        par = parallel[name]
        assert (tmp_path / "par" / "checkpoints" / f"{FINE_TUNES[name]}.safetensors").is_file()
        assert par.best_score == pytest.approx(seq.best_score, rel=1e-5) and par.steps == seq.steps
        ref = _weights(seq.model)
        for n, w in _weights(par.model).items():
            assert torch.allclose(w, ref[n], atol=1e-6), (name, n)
        for key, stats in seq.bounds.items():
            assert par.bounds[key] == pytest.approx(stats, rel=1e-5), (name, key)


def test_fine_tune_workers_rule(tmp_path):
    assert fine_tune_workers(DemoConfig(), threads=2) == len(FINE_TUNES)
    assert fine_tune_workers(DemoConfig(), threads=1) == 1
    assert fine_tune_workers(DemoConfig(device="cuda"), threads=16) == 1
    assert fine_tune_workers(DemoConfig(workers=2), threads=1) == 2
    assert fine_tune_workers(DemoConfig(workers=8), threads=2) == len(FINE_TUNES)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        fine_tune_workers(DemoConfig(workers=-1))
    with pytest.raises(ValueError, match="workers must be >= 0"):  # before any work: no world generated
        run_demo(DemoConfig(workers=-1, out_dir=str(tmp_path / "demo")))
    assert not (tmp_path / "demo").exists()
