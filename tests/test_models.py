"""Models, LoRA, clamping, a few HySAC steps, and checkpoint round trips."""

import math

import open_clip
import pytest
import torch

from hysafe.geometry import EuclideanSpace, LorentzSpace
from hysafe.losses import hysac_objective
from hysafe.models.backbone import TINY_MODEL, BackboneConfig, LoraConfig, create_backbone, lora_target_regex
from hysafe.models.checkpoint import load_model, read_metadata, save_model
from hysafe.models.embed import embed_quadruplets
from hysafe.models.safety_model import create_model

LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def toy_batch(model, gen, n=8):
    words = ["cat", "dog", "car", "tree", "boat", "house", "bird", "chair"]
    imgs = torch.randn(n, 3, 32, 32, generator=gen)
    marker = torch.zeros_like(imgs)
    marker[:, 0, :8, :8] = 3.0
    return {
        "image": imgs,
        "unsafe_image": imgs + marker,
        "text": model.tokenize([f"a photo of a {w}" for w in words[:n]]),
        "unsafe_text": model.tokenize([f"a photo of a {w} covered in blood" for w in words[:n]]),
    }


def test_kinds_spaces_and_frozen_reference(tiny_base):
    clip = create_model("clip", TINY_MODEL, tiny_base)
    assert isinstance(clip.space, EuclideanSpace) and not any(p.requires_grad for p in clip.parameters())
    safe = create_model("safeclip", TINY_MODEL, tiny_base, lora=LORA)
    trainable = {n for n, p in safe.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(p.requires_grad for p in safe.reference.parameters())
    # the reference has no LoRA layers: peft did not touch the deep copy
    assert not any("lora" in n for n, _ in safe.reference.named_modules())
    safe.train()
    assert not safe.reference.training
    hy = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    assert isinstance(hy.space, LorentzSpace) and hy.space.curv == pytest.approx(1.0)
    assert hy.log_alpha_image.item() == pytest.approx(math.log(64**-0.5))


def test_lora_targets_both_towers():
    regex = lora_target_regex(LoraConfig())
    import re

    assert re.fullmatch(regex, "visual.transformer.resblocks.3.attn")
    assert re.fullmatch(regex, "transformer.resblocks.0.mlp.c_fc")
    assert not re.fullmatch(regex, "transformer.resblocks.0.ln_1")
    assert not re.fullmatch(lora_target_regex(LoraConfig(towers=("visual",))), "transformer.resblocks.0.attn")
    with pytest.raises(ValueError, match="towers"):
        LoraConfig(towers=("audio",))
    rn = lora_target_regex(LoraConfig(), resnet_visual=True)
    for name in ("visual.layer1.0.conv1", "visual.layer4.2.conv3", "transformer.resblocks.1.attn"):
        assert re.fullmatch(rn, name), name
    for name in (
        "visual.conv1",
        "visual.attnpool.q_proj",
        "visual.layer1.0.downsample.0",
        "visual.layer1.0.bn1",
        "visual.transformer.resblocks.0.attn",
    ):
        assert not re.fullmatch(rn, name), name
    with pytest.raises(ValueError, match="attention pool"):
        LoraConfig(resnet_modules=("attnpool.q_proj",))


def test_lora_on_a_resnet_image_tower():
    """hysafe-tiny-rn (open_clip's ModifiedResNet image tower): adapters on every bottleneck convolution (not
    the stem, the shortcuts or the attention pool), frozen BatchNorm statistics while training, and a merge
    that equals the adapted forward."""
    from hysafe.models.backbone import BUNDLED_MODELS

    assert {TINY_MODEL, "hysafe-tiny-rn"} <= set(BUNDLED_MODELS)
    torch.manual_seed(0)
    model = create_model("hysac", "hysafe-tiny-rn", None, lora=LORA)
    from peft.tuners.lora import LoraLayer

    adapted = {
        n.removeprefix("base_model.model.")
        for n, m in model.backbone.peft.named_modules()
        if isinstance(m, LoraLayer)
    }
    visual = {n for n in adapted if n.startswith("visual.")}
    assert visual == {f"visual.layer{i}.0.conv{j}" for i in range(1, 5) for j in (1, 2, 3)}
    assert all("lora_" in n for n, p in model.backbone.named_parameters() if p.requires_grad)
    for m in model.backbone.peft.modules():  # give the adapters a non-zero update
        if isinstance(m, LoraLayer):
            torch.nn.init.normal_(m.lora_B["default"].weight, std=0.05)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in bns]
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.train()
    assert bns and not any(m.training for m in bns) and model.backbone.model.visual.layer1.training
    train_features = model.backbone.image_features(x)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns, strict=True))
    model.eval()
    eval_features = model.backbone.image_features(x)
    torch.testing.assert_close(train_features, eval_features)
    merged = open_clip.create_model("hysafe-tiny-rn")
    merged.load_state_dict(model.backbone.merged_state_dict())
    merged.eval()
    torch.testing.assert_close(merged.encode_image(x), eval_features, atol=1e-5, rtol=1e-4)
    assert (
        merged.encode_image(x) - open_clip.create_model("hysafe-tiny-rn").eval().encode_image(x)
    ).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"visual tower \(ModifiedResNet\)"):
        create_model("hysac", "hysafe-tiny-rn", None, lora=LoraConfig(resnet_modules=()))


def test_hysac_clamp_bounds(tiny_base):
    hy = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA, curv_init=2.0)
    with torch.no_grad():
        hy.log_curv.fill_(10.0)
        hy.log_alpha_text.fill_(1.0)
        hy.log_logit_scale.fill_(0.0)
    hy.clamp_parameters_()
    assert hy.curv.item() == pytest.approx(20.0)
    assert hy.log_alpha_text.item() == 0.0
    assert hy.logit_scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        hy.log_curv.fill_(-10.0)
        hy.log_logit_scale.fill_(9.0)
    hy.clamp_parameters_()
    assert hy.curv.item() == pytest.approx(0.2) and hy.logit_scale.item() == pytest.approx(100.0)


def test_few_hysac_steps_reduce_terms_and_order_safety(tiny_base):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    hy = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    batch = toy_batch(hy, gen)
    obj = hysac_objective()
    params = [p for p in hy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)

    def step():
        emb = embed_quadruplets(hy, batch, obj.inputs)
        return obj(emb, hy.live_space, hy.logit_scale), emb

    (_, first), emb0 = step()
    d0 = {k: hy.space.dist_to_root(v).mean().item() for k, v in emb0.items()}
    hy.train()
    for _ in range(150):
        (loss, _), _ = step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hy.clamp_parameters_()
    hy.eval()
    with torch.no_grad():
        (_, last), emb = step()
    for name, value in first.items():
        assert last[name] <= value + 1e-6, (name, value, last[name])
    assert last["total"] < 0.2 * first["total"]
    d = {k: hy.space.dist_to_root(v).mean().item() for k, v in emb.items()}
    # unsafe embeddings moved away from the root relative to their safe counterparts
    assert d["T*"] / d["T"] > d0["T*"] / d0["T"] and d["V*"] / d["V"] > d0["V*"] / d0["V"]
    assert d["T"] < d["V"] < d["V*"] and d["T"] < d["T*"] < d["V*"]


def test_adapter_and_merged_round_trips(tiny_base, randomize_lora, tmp_path):
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    for kind in ("hysac", "safeclip"):
        model = create_model(kind, TINY_MODEL, tiny_base, lora=LORA)
        randomize_lora(model, generator=gen)  # give the adapters non-zero weights
        if kind == "hysac":
            with torch.no_grad():
                model.log_curv.fill_(0.3)
        model.eval()
        batch = toy_batch(model, gen, n=4)
        with torch.no_grad():
            ref_img, ref_txt = model.encode_image(batch["image"]), model.encode_text(batch["text"])
        a = save_model(model, tmp_path / f"{kind}-adapter.safetensors", bounds={"S": {"avg": 1.0}})
        m = save_model(model, tmp_path / f"{kind}-merged.safetensors", merged=True)
        # saving merged must not merge the live model
        assert model.backbone.has_adapters and any("lora_A" in n for n, _ in model.named_parameters())
        for path, tol in ((a, 0.0), (m, 1e-5)):
            loaded = load_model(path)
            assert loaded.kind == kind and type(loaded) is type(model)
            with torch.no_grad():
                img, txt = loaded.encode_image(batch["image"]), loaded.encode_text(batch["text"])
            assert torch.allclose(img, ref_img, atol=tol, rtol=0) and torch.allclose(
                txt, ref_txt, atol=tol, rtol=0
            )
        assert load_model(a).bounds == {"S": {"avg": 1.0}}
        assert read_metadata(m)["form"] == "merged"
    # merged HySAC file is a plain open_clip checkpoint
    plain, _, _ = open_clip.create_model_and_transforms(
        TINY_MODEL, pretrained=str(tmp_path / "hysac-merged.safetensors")
    )
    loaded = load_model(tmp_path / "hysac-merged.safetensors")
    with torch.no_grad():
        x = batch["image"]
        assert torch.allclose(plain.encode_image(x), loaded.backbone.model.encode_image(x), atol=1e-6)


def test_checkpoint_errors(tiny_base, tmp_path):
    model = create_model("hysac", TINY_MODEL, None, lora=LORA)
    with pytest.raises(ValueError, match="re-loadable backbone"):
        save_model(model, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_model(model, tmp_path / "x.pt", merged=True)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(bad)
    with pytest.raises(ValueError, match="without hysafe metadata"):
        load_model(tiny_base)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.safetensors")
    # adapter saved with one LoRA rank, metadata edited to another: mismatch is named
    good = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    path = save_model(good, tmp_path / "good.safetensors")
    import json

    from safetensors.torch import load_file, save_file

    meta = read_metadata(path)
    meta["config"]["lora"]["r"] = 2
    save_file(
        load_file(str(path)), str(tmp_path / "mismatch.safetensors"), metadata={"hysafe": json.dumps(meta)}
    )
    with pytest.raises(ValueError, match="shape"):
        load_model(tmp_path / "mismatch.safetensors")


def test_backbone_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model"):
        create_backbone(BackboneConfig(model="ViT-Nope"))
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone(BackboneConfig(model=TINY_MODEL, pretrained=str(tmp_path / "w.safetensors")))
    with pytest.raises(ValueError, match="unknown model kind"):
        create_model("resnet", TINY_MODEL)


def test_registered_config_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from hysafe.models.backbone import register_model_config

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = {
        "embed_dim": 8,
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 8, "heads": 1, "layers": 1},
    }
    register_model_config("hysafe-test-no-tempdir", cfg)
    # open_clip rescans every path it was given
    register_model_config("hysafe-test-no-tempdir-2", {**cfg, "embed_dim": 4})
    assert open_clip.get_model_config("hysafe-test-no-tempdir") == cfg
    assert open_clip.get_model_config("hysafe-test-no-tempdir-2")["embed_dim"] == 4
    assert list(tmp_path.iterdir()) == []
    register_model_config("hysafe-test-no-tempdir", cfg)  # the same architecture again: accepted
    with pytest.raises(ValueError, match="already registered with another architecture"):
        register_model_config("hysafe-test-no-tempdir", {**cfg, "embed_dim": 16})


def test_hysac_default_alpha_capped_by_the_feature_norms(tiny_base, gen):
    """alpha_init=None keeps the paper's embed_dim ** -0.5 for towers with features of norm ~sqrt(D) and
    caps it at MAX_INIT_NORM / median |f| for a tower with far larger features (a ResNet's attention pool),
    through the trainer's calibration rows; a given alpha_init is never changed."""
    from hysafe.models.safety_model import MAX_INIT_NORM
    from hysafe.training.loop import calibrate

    model = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    batch = toy_batch(model, gen)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["image"]))]
    calibrate(model, rows)
    assert model.log_alpha_image.item() == model.log_alpha_text.item() == pytest.approx(math.log(64**-0.5))
    plain = model.backbone.image_features
    model.backbone.image_features = lambda images: 100 * plain(images)  # a tower with 100x larger features
    calibrate(model, rows)
    with torch.no_grad():
        median = (
            torch.cat([model.backbone.image_features(batch[k]) for k in ("image", "unsafe_image")])
            .norm(dim=-1)
            .median()
        )
    assert model.log_alpha_image.exp().item() == pytest.approx(MAX_INIT_NORM / median.item(), rel=1e-5)
    assert model.log_alpha_text.item() == pytest.approx(math.log(64**-0.5))
    with torch.no_grad():
        lifted = model.encode_image(batch["image"])
    assert model.space.dist_to_root(lifted).median() < 2.5  # not saturated at the distance clamp
    trained = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)
    trained.backbone.image_features = model.backbone.image_features
    with torch.no_grad():
        trained.log_alpha_image.fill_(-1.0)  # learned in an earlier run: kept
    assert trained.calibrate(batch) == {} and trained.log_alpha_image.item() == -1.0
    fixed = create_model("hysac", TINY_MODEL, tiny_base, lora=LORA, alpha_init=0.5)
    fixed.backbone.image_features = model.backbone.image_features
    assert fixed.calibrate(batch) == {} and fixed.log_alpha_image.exp().item() == pytest.approx(0.5)
