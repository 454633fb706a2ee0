"""hysafe.train: exact resume, 2-process DDP equivalence, SafeR targets, feature heads."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hysafe.data import QuadrupletDataset, WorldConfig, generate_world, load_manifest
from hysafe.models.backbone import TINY_MODEL, LoraConfig
from hysafe.models.checkpoint import load_model
from hysafe.models.embed import embed_dataset
from hysafe.models.features import FeatureDataset, cache_features
from hysafe.models.safety_model import create_feature_model, create_model
from hysafe.training import ResumableBatchSampler, TrainConfig, nearest_safe_targets, train
from hysafe.training.recipes import get_recipe
from hysafe.training.validation import image_overlap

LORA = LoraConfig(r=4, alpha=8.0, dropout=0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(
        tmp_path_factory.mktemp("world"), WorldConfig(n_train=64, n_val=16, n_test=16, seed=1)
    )


def trainable(model):
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("reference.")
    }


def fresh(kind, tiny_base, lora=LORA):
    torch.manual_seed(0)  # LoRA initialisation draws from the global RNG
    return create_model(kind, TINY_MODEL, tiny_base, lora=lora)


def test_sampler_splits_global_batches_across_ranks():
    single = list(ResumableBatchSampler(20, 8, seed=3))
    ranks = [list(ResumableBatchSampler(20, 4, seed=3, rank=r, world=2)) for r in range(2)]
    assert len(single) == 2 and all(len(r) == 2 for r in ranks)
    for b in range(2):
        assert single[b] == ranks[0][b] + ranks[1][b]
    s = ResumableBatchSampler(20, 8, seed=3)
    s.set_epoch(0, start_batch=1)
    assert list(s) == single[1:]
    with pytest.raises(ValueError, match="smaller than one global batch"):
        ResumableBatchSampler(5, 8, seed=0)


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(world, tiny_base, tmp_path):
    cfg = dict(
        epochs=2, batch_size=8, lr=3e-3, checkpoint_every=3, validate=False, progress=False, warmup_steps=2
    )
    full = train(
        fresh("hysac", tiny_base), world, "hysac", TrainConfig(**cfg, output_dir=str(tmp_path / "a"))
    )
    assert full.steps == 16

    class Kill(Exception):
        pass

    def kill_at_step_5(record):
        if record["step"] == 5:  # after the checkpoint at step 3, mid-epoch
            raise Kill

    with pytest.raises(Kill):
        train(
            fresh("hysac", tiny_base),
            world,
            "hysac",
            TrainConfig(**cfg, output_dir=str(tmp_path / "b")),
            callbacks=[kill_at_step_5],
        )
    assert (tmp_path / "b" / "last.safetensors").is_file()
    resumed = train(
        fresh("hysac", tiny_base), world, "hysac", TrainConfig(**cfg, output_dir=str(tmp_path / "b"))
    )
    a, b = trainable(full.model), trainable(resumed.model)
    assert a.keys() == b.keys() and resumed.steps == 16
    # Model, optimiser, scheduler, RNG and sampler position are restored exactly; MKL's GEMM
    # sums in an alignment-dependent order, so a fresh process may differ in the last bits.
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-5), n
    assert not any(torch.allclose(a[n], trainable(fresh("hysac", tiny_base))[n]) for n in a if "lora_B" in n)


def _ddp_worker(rank, world_size, port, tiny_base, manifest, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    losses = []
    model = fresh("hysac", tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0))
    res = train(
        model,
        manifest,
        "hysac",
        TrainConfig(epochs=1, batch_size=8 // world_size, lr=3e-3, validate=False, progress=False),
        callbacks=[lambda r: losses.append(r["total"])],
    )
    out[rank] = (losses[:3], {n: p for n, p in trainable(res.model).items()})
    dist.destroy_process_group()


def test_two_process_gloo_matches_single_process_global_batch(world, tiny_base):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, tiny_base, str(world), out), nprocs=2, join=True)
    losses = []
    single = train(
        fresh("hysac", tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0)),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=8, lr=3e-3, validate=False, progress=False),
        callbacks=[lambda r: losses.append(r["total"])],
    )
    (l0, w0), (l1, w1) = out[0], out[1]
    # each rank's loss covers its own queries against the global batch: their mean is the global loss
    for step in range(3):
        assert (l0[step] + l1[step]) / 2 == pytest.approx(losses[step], abs=1e-4)
    ref = trainable(single.model)
    for n in ref:
        assert torch.allclose(w0[n], w1[n])  # ranks stay in sync
        assert torch.allclose(w0[n], ref[n], atol=1e-5), n


def test_safer_clip_targets_and_training(world, tiny_base):
    model = fresh("safeclip", tiny_base)
    rows = load_manifest(world, split="train")
    ds = QuadrupletDataset(rows, preprocess=model.preprocess, tokenizer=model.tokenizer)
    targets = nearest_safe_targets(model, ds)
    with torch.no_grad():
        safe = torch.nn.functional.normalize(model.encode_text_ref(ds.safe_tokens), dim=-1)
        unsafe = torch.nn.functional.normalize(model.encode_text_ref(ds.unsafe_tokens), dim=-1)
    sims = unsafe @ safe.T
    assert targets == sims.argmax(1).tolist()
    # the default recipe is the poster's rule: the nearest safe caption, never the pair by preference
    default_q = get_recipe("safer-clip").objective.pair_quantile
    assert nearest_safe_targets(model, ds, pair_quantile=default_q) == targets
    # pair_quantile: the own pair when fewer than q * N safe captions are nearer (a brute-force count per row)
    nearer = [(sims[i] > sims[i, i]).sum().item() for i in range(len(sims))]
    for q in (0.05, 0.25):
        expected = [i if nearer[i] < q * len(sims) else t for i, t in enumerate(targets)]
        assert nearest_safe_targets(model, ds, pair_quantile=q, batch_size=7) == expected
    assert sum(t == i for i, t in enumerate(nearest_safe_targets(model, ds, pair_quantile=0.25))) > sum(
        t == i for i, t in enumerate(targets)
    )
    assert nearest_safe_targets(model, ds, pair_quantile=1.0) == list(range(len(ds)))
    with pytest.raises(ValueError, match="pair_quantile must be in \\[0, 1\\]"):
        get_recipe("safer-clip", pair_quantile=1.5)
    res = train(
        model,
        world,
        "safer-clip",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, optimizer="adam", progress=False),
    )
    assert res.steps == 4 and set(res.bounds) == {"S", "U", "V", "G"}
    with pytest.raises(ValueError, match="needs a hyperbolic space \\(a HySAC model\\)"):
        train(model, world, "hysac", TrainConfig(epochs=1, progress=False))


def test_feature_head_strategy(world, tiny_base, tmp_path):
    clip = create_model("clip", TINY_MODEL, tiny_base)
    rows = load_manifest(world, split="train")
    ds = QuadrupletDataset(rows, preprocess=clip.preprocess, tokenizer=clip.tokenizer)
    path = cache_features(clip, ds, tmp_path / "feats.safetensors")
    feats = FeatureDataset.load(path)
    assert len(feats) == 64 and feats.dims == (64, 64)
    with torch.no_grad():
        assert torch.allclose(feats[3]["text"], clip.encode_text(ds[3]["text"][None])[0], atol=1e-5)
    for kind in ("hysac", "safeclip"):
        head = create_feature_model(kind, *feats.dims)
        res = train(
            head,
            feats,
            None if kind == "hysac" else "safeclip",
            TrainConfig(epochs=3, batch_size=16, lr=1e-2, progress=False, output_dir=str(tmp_path / kind)),
            val_data=feats.subset(range(32)),
        )
        assert res.best_checkpoint is not None
        loaded = load_model(res.best_checkpoint)
        x = feats.features["image"][:5]
        with torch.no_grad():
            assert torch.allclose(loaded.encode_image(x), res.model.encode_image(x), atol=1e-6)
        assert loaded.bounds == res.bounds
    with pytest.raises(ValueError, match="missing"):
        FeatureDataset(image=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN/Inf"):
        FeatureDataset(
            image=torch.full((2, 3), float("nan")),
            unsafe_image=torch.zeros(2, 3),
            text=torch.zeros(2, 3),
            unsafe_text=torch.zeros(2, 3),
        )


def test_bf16_accumulation_and_workers(world, tiny_base, tmp_path):
    logged = []
    res = train(
        fresh("hysac", tiny_base),
        world,
        "hysac",
        TrainConfig(
            epochs=2,
            batch_size=8,
            grad_accum=2,
            num_workers=1,
            precision="bf16",
            lr=1e-2,
            progress=False,
            output_dir=str(tmp_path),
            log_every=1,
        ),
        callbacks=[lambda r: logged.append(r)],
    )
    assert all(torch.isfinite(torch.tensor(r["total"])) for r in logged)
    assert logged[0]["step"] == 1 and len({r["epoch"] for r in logged}) == len(res.history) == 2
    assert len(logged) == 4 * len(res.history)  # 8 batches per epoch / accumulation of 2
    # HySAC selects on recall x root-distance ordering
    assert all(h["score"] == pytest.approx(h["recall_sum"] * h["ordering"]) for h in res.history)
    assert all(
        h["ordering"] == pytest.approx((2 * h["root AUC text"] - 1 + 2 * h["root AUC image"] - 1) / 2)
        for h in res.history
    )
    assert res.best_score == max(h["score"] for h in res.history)
    # each population's mean root distance per epoch: a drift toward the root shows in the history
    val = QuadrupletDataset(
        load_manifest(world, split="validation"),
        preprocess=res.model.preprocess,
        tokenizer=res.model.tokenizer,
    )
    kept = res.model.space.dist_to_root(embed_dataset(res.model, val)["V*"]).double().mean()
    best = max(res.history, key=lambda h: h["score"])
    assert best["root mean G"] == pytest.approx(float(kept), rel=1e-4)
    assert {"root mean S", "root mean V", "root mean U"} <= set(res.history[0])
    emb = embed_dataset(res.model, val)
    safe, unsafe = (res.model.space.dist_to_root(emb[k]).double() for k in ("V", "V*"))
    brute = sum(float(u) < float(torch.quantile(safe, 0.95)) for u in unsafe) / len(unsafe)
    assert image_overlap(res.model, val) == pytest.approx(brute)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(logged) + len(res.history)
    with pytest.raises(ValueError, match="invalid TrainConfig"):
        TrainConfig(precision="fp8")


# validation scores injected per epoch -> (patience, epochs that run, best epoch): the rule, not
# an outcome of one CPU's rounding. A tie is no improvement; the count resets on an improvement.
EARLY_STOPPING_CASES = [
    ([1.0, 2.0, 2.0, 1.5, 3.0, 4.0], 2, 4, 2),  # two epochs without improvement (a tie, a drop): stop after 4
    ([1.0, 2.0, 1.0, 3.0, 2.0, 2.5], 2, 6, 4),  # never two in a row before the last epoch: all 6 run
    ([1.0, 2.0, 1.0, 3.0, 2.0, 2.5], None, 6, 4),  # no patience: all 6 run
    ([3.0, 2.0, 5.0, 6.0, 7.0, 8.0], 1, 2, 1),  # patience 1: the first epoch without improvement stops
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1, 6, 6),  # always improving: never stops
]


@pytest.mark.parametrize("scores, patience, ran, best_epoch", EARLY_STOPPING_CASES)
def test_early_stopping_counts_epochs_without_improvement(
    world, tiny_base, tmp_path, monkeypatch, scores, patience, ran, best_epoch
):
    import hysafe.training.loop as loop

    script, snapshots = iter(scores), []

    def scripted_validation(model, *args, **kwargs):
        snapshots.append(trainable(model))
        score = next(script)
        return {"recall_sum": score, "score": score}

    monkeypatch.setattr(loop, "validation_recalls", scripted_validation)
    res = train(
        fresh("safeclip", tiny_base),
        world,
        "safeclip",
        TrainConfig(
            epochs=len(scores),
            batch_size=32,
            progress=False,
            output_dir=str(tmp_path),
            early_stopping_patience=patience,
        ),
    )
    assert [h["score"] for h in res.history] == scores[:ran] and len(snapshots) == ran
    assert res.best_score == scores[best_epoch - 1]
    kept = trainable(res.model)  # the best epoch's weights are the ones kept
    assert all(torch.equal(kept[n], w) for n, w in snapshots[best_epoch - 1].items())
    assert not all(torch.equal(kept[n], w) for n, w in snapshots[ran - 1].items()) or best_epoch == ran


def test_ordering_auc_is_the_roc_auc_of_root_distance():
    """Against the definition (pairs, ties half) in float64; then at a size whose pair matrix
    (200k x 200k) would not fit in memory."""
    from hysafe.training.validation import ordering_auc

    g = torch.Generator().manual_seed(0)
    safe, unsafe = torch.randn(50, generator=g), torch.randn(60, generator=g) + 0.5
    unsafe[:5] = safe[:5]  # ties count half
    diff = unsafe.double()[:, None] - safe.double()[None, :]
    expected = float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())
    assert ordering_auc(safe, unsafe) == pytest.approx(expected, abs=1e-12)
    assert (
        ordering_auc(torch.zeros(3), torch.ones(4)) == 1.0
        and ordering_auc(torch.ones(3), torch.zeros(4)) == 0.0
    )
    big = torch.arange(200_000, dtype=torch.float64)
    assert ordering_auc(big, big + 100_000) == pytest.approx(1 - 0.5 * (100_000 / 200_000) ** 2, abs=1e-9)


def test_safety_selection_of_a_euclidean_model_is_refused_before_training(tiny_base, tmp_path):
    """select='safety' on Safe-CLIP raised KeyError 'ordering' after the first epoch."""
    model = create_model("safeclip", TINY_MODEL, tiny_base, lora=None)
    rows = [{"safe_text": "a", "unsafe_text": "b"}]
    with pytest.raises(ValueError, match="select='safety' .* not this safeclip"):
        train(model, rows, "safeclip", TrainConfig(epochs=1, select="safety", output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def _step_losses(model, world, **options):
    logged, checkpointing = [], []
    tower = model.backbone.model.transformer
    train(
        model,
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=3e-3, validate=False, progress=False, **options),
        callbacks=[lambda r: (logged.append(r["total"]), checkpointing.append(tower.grad_checkpointing))],
    )
    return logged, checkpointing


def test_gradient_checkpointing_gives_the_same_losses_and_weights(world, tiny_base):
    plain_model, ckpt_model = fresh("hysac", tiny_base), fresh("hysac", tiny_base)
    plain, off = _step_losses(plain_model, world)
    ckpt, on = _step_losses(ckpt_model, world, grad_checkpointing=True)
    # it was on while training (LoRA dropout replayed exactly) ...
    assert len(plain) == 4 and not any(off) and all(on)
    assert ckpt_model.backbone.model.transformer.grad_checkpointing is False  # ... and off afterwards
    assert max(abs(a - b) for a, b in zip(plain, ckpt, strict=True)) < 1e-5
    a, b = trainable(plain_model), trainable(ckpt_model)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    features = create_feature_model("hysac", 8, 8)
    with pytest.raises(ValueError, match="a feature backbone has none"):
        rows = {k: torch.randn(32, 8) for k in ("image", "unsafe_image", "text", "unsafe_text")}
        train(
            features,
            FeatureDataset(**rows),
            "hysac",
            TrainConfig(epochs=1, batch_size=16, validate=False, progress=False, grad_checkpointing=True),
        )


INDUCTOR = pytest.mark.skipif(
    not os.environ.get("HYSAFE_TEST_INDUCTOR"),
    reason="generates and compiles C++ kernels (~2 min on 2 cores): "
    "HYSAFE_TEST_INDUCTOR=1 runs it; aot_eager covers the capture in the default suite",
)


@pytest.mark.parametrize(
    "backend", ["aot_eager", pytest.param("inductor", marks=[pytest.mark.slow, INDUCTOR])]
)
def test_compiled_step_gives_the_same_losses(world, tiny_base, backend):
    """torch.compile captures forward + loss (+ backward through AOTAutograd); the LoRA dropout (the
    reference's 0.1) runs eagerly inside the compiled step with the same draws
    (hysafe.models.lora_dropout)."""
    dropout = LoraConfig(r=4, alpha=8.0, dropout=0.1)
    plain, _ = _step_losses(fresh("hysac", tiny_base, dropout), world)
    torch._dynamo.reset()
    compiled, _ = _step_losses(fresh("hysac", tiny_base, dropout), world, compile=backend)
    assert len(compiled) == 4 and max(abs(a - b) for a, b in zip(plain, compiled, strict=True)) < 1e-5
    with pytest.raises(ValueError, match="invalid TrainConfig"):
        TrainConfig(compile="tvm")


def test_training_reads_loss_values_only_when_it_logs(world, tiny_base, monkeypatch):
    """Per-term values stay on the device until read, then come over in one transfer: an unlogged
    step without callbacks causes no host-device synchronisation."""
    from hysafe.losses.objectives import TermValues

    reads = []
    original = TermValues._values
    monkeypatch.setattr(
        TermValues, "_values", lambda self: (reads.append(self._floats is None), original(self))[1]
    )
    train(
        fresh("hysac", tiny_base),
        world,
        "hysac",
        TrainConfig(epochs=2, batch_size=16, validate=False, progress=False, log_every=100),
    )
    assert sum(reads) == 2  # one transfer per epoch: the epoch's last loss for its summary line
    values = TermValues({"a": torch.tensor(1.5), "total": torch.tensor([2.0])})
    assert list(values) == ["a", "total"] and values._floats is None
    assert dict(values) == {"a": 1.5, "total": 2.0} and values._floats == {"a": 1.5, "total": 2.0}


def test_fused_optimizer_equals_the_reference_update(world, tiny_base, monkeypatch):
    """Training uses torch's fused AdamW kernel where it applies; the weights after a few steps
    equal those of the reference (per-tensor) implementation to float rounding."""
    import hysafe.training.loop as loop
    import hysafe.training.optim as optim

    config = TrainConfig(epochs=1, batch_size=8, lr=3e-3, validate=False, progress=False)
    lora = LoraConfig(r=4, alpha=8.0, dropout=0.0)
    built = []
    monkeypatch.setattr(
        loop,
        "build_optimization",
        lambda *a, **k: built.append(optim.build_optimization(*a, **k)) or built[-1],
    )
    fused = trainable(train(fresh("hysac", tiny_base, lora=lora), world, "hysac", config).model)
    monkeypatch.setattr(optim, "fused_supported", lambda params: False)
    reference = trainable(train(fresh("hysac", tiny_base, lora=lora), world, "hysac", config).model)
    assert [o.optimizer.defaults["fused"] for o in built] == [True, False]
    start = trainable(fresh("hysac", tiny_base, lora=lora))
    # the steps moved the weights
    assert any(not torch.allclose(reference[n], start[n], atol=1e-4) for n in reference)
    for n in reference:
        assert torch.allclose(fused[n], reference[n], atol=1e-5), n
    assert not optim.fused_supported([torch.zeros(2, dtype=torch.long)]) and not optim.fused_supported([])


def test_train_builds_a_kind_with_the_open_clip_architecture_named_by_model(world, tiny_base):
    """``train("hysac", data, ..., model=NAME, pretrained=FILE)``: ``model=`` names the architecture of the
    model ``train`` builds, not ``train``'s own first argument."""
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, validate=False)
    res = train("hysac", world, "hysac", cfg, model=TINY_MODEL, pretrained=tiny_base, lora=LORA)
    assert res.model.kind == "hysac" and res.steps == 4
    reference = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    trunk = "backbone.model.visual.conv1.weight"
    assert torch.equal(dict(res.model.named_parameters())[trunk], dict(reference.named_parameters())[trunk])
    with pytest.raises(ValueError, match=r"got \['model'\] for building a model, but the model is already"):
        train(reference, world, "hysac", cfg, model=TINY_MODEL)
