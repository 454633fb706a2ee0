"""transformers <-> open_clip converters and the released HySAC / Safe-CLIP formats, checked against
transformers' and peft's own computation on tiny random configs (no downloads)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent
peft = pytest.importorskip("peft")

from hysafe.interop import (  # noqa: E402
    export_transformers,
    hf_to_open_clip,
    load_hysac_release,
    load_transformers_clip,
    merge_lora,
    open_clip_config_from_hf,
    open_clip_name,
    open_clip_to_hf,
    write_clip_tokenizer,
)

AUTHORS_TARGETS = ["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"]
BOUNDS = {
    "S": {"avg": 0.9, "low_05": 0.8, "up_95": 1.0},
    "V": {"avg": 1.1, "low_05": 1.0, "up_95": 1.2},
    "U": {"avg": 1.3, "low_05": 1.2, "up_95": 1.4},
    "G": {"avg": 1.5, "low_05": 1.4, "up_95": 1.6},
}


def tiny_config():
    act = "quick_gelu"
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            hidden_act=act,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=0,
            projection_dim=24,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            hidden_act=act,
            projection_dim=24,
        ),
        projection_dim=24,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    clip = transformers.CLIPModel(tiny_config()).eval()
    folder = tmp_path_factory.mktemp("base")
    clip.save_pretrained(str(folder))
    return folder, clip


def inputs(n=3):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 32, 32, generator=g)
    import open_clip

    tokens = open_clip.tokenize(
        ["a photo of a cat", "a dog, covered in blood on a red background", "x"][:n], context_length=16
    )
    return pixels, tokens


def exp_map0(v, c):  # written out here, independent of hysafe.geometry
    n = v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.sinh(math.sqrt(c) * n) / (math.sqrt(c) * n) * v


def test_config_and_state_dict_round_trip(base):
    _, clip = base
    cfg = open_clip_config_from_hf(clip.config)
    assert (
        cfg["vision_cfg"]["head_width"] == 16
        and cfg["quick_gelu"]
        and cfg["text_cfg"]["context_length"] == 16
    )
    sd = clip.state_dict()
    back = open_clip_to_hf(hf_to_open_clip(sd))
    assert set(back) == {k for k in sd if not k.endswith("position_ids")}
    for k, v in back.items():
        assert torch.allclose(v, sd[k], atol=1e-6), k
    # the named architectures fall out of the derivation
    big = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12
        ),
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=24,
            patch_size=14,
            image_size=224,
        ),
        projection_dim=768,
    )
    assert open_clip_name(open_clip_config_from_hf(big)) == "ViT-L-14-quickgelu"


def test_transformers_clip_loads_with_equal_outputs_and_exports_back(base, tmp_path):
    folder, clip = base
    pixels, tokens = inputs()
    model = load_transformers_clip(str(folder), "safeclip")
    with torch.no_grad():
        ref_img = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        ref_txt = clip.text_projection(clip.text_model(input_ids=tokens).pooler_output)
        assert (model.encode_image(pixels) - ref_img).abs().max() <= 1e-5
        assert (model.encode_text(tokens) - ref_txt).abs().max() <= 1e-5
        assert torch.allclose(model.encode_text_ref(tokens), model.encode_text(tokens), atol=1e-6)
    out = export_transformers(model, tmp_path / "export")
    again = transformers.CLIPModel.from_pretrained(str(out))
    sd, ref = again.state_dict(), clip.state_dict()
    for k in ref:
        assert torch.allclose(sd[k], ref[k], atol=1e-6), k
    text = transformers.CLIPTextModel.from_pretrained(str(out / "text_encoder"))
    with torch.no_grad():
        assert torch.allclose(
            text(input_ids=tokens).last_hidden_state,
            clip.text_model(input_ids=tokens).last_hidden_state,
            atol=1e-5,
        )
    assert transformers.CLIPTokenizer.from_pretrained(str(out / "tokenizer")).eos_token_id == 49407
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.")]  # no temporary left
    with pytest.raises(ValueError, match="not empty"):
        export_transformers(model, out)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile: is a file, not a folder"):
        export_transformers(model, tmp_path / "afile")
    with pytest.raises(ValueError, match=re.escape(f"export: {tmp_path / 'afile'} is a file, not a folder")):
        export_transformers(model, tmp_path / "afile" / "sub" / "export")
    nested = export_transformers(model, tmp_path / "new" / "deeper" / "export")  # parents made
    assert (nested / "config.json").is_file()
    assert not [p for p in nested.parent.iterdir() if p.name.startswith(".export.")]


def authors_release(folder, clip, tmp_path, *, drop=None):
    """hysac_model.pth + hysac_bounds.json exactly as the authors' module saves them."""
    torch.manual_seed(2)
    config = peft.LoraConfig(
        r=16, lora_alpha=1, target_modules=AUTHORS_TARGETS, lora_dropout=0.1, bias="none"
    )
    vision = peft.get_peft_model(
        transformers.CLIPVisionModelWithProjection.from_pretrained(str(folder)), config
    )
    text = peft.get_peft_model(transformers.CLIPTextModelWithProjection.from_pretrained(str(folder)), config)
    with torch.no_grad():
        for m in (vision, text):
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1.0)
    sd = {f"visual.{k}": v for k, v in vision.state_dict().items()} | {
        f"textual.{k}": v for k, v in text.state_dict().items()
    }
    sd |= {
        "curv": torch.tensor(1.3).log(),
        "visual_alpha": torch.tensor(0.2).log(),
        "textual_alpha": torch.tensor(0.25).log(),
        "logit_scale": torch.tensor(20.0).log(),
        "pixel_mean": torch.zeros(3, 1, 1),
        "pixel_std": torch.ones(3, 1, 1),
    }
    if drop:
        sd = {k: v for k, v in sd.items() if drop not in k}
    torch.save(sd, tmp_path / "hysac_model.pth")
    (tmp_path / "hysac_bounds.json").write_text(json.dumps(BOUNDS))
    return vision.eval(), text.eval()


def test_released_hysac_equals_the_authors_computation(base, tmp_path):
    folder, clip = base
    vision, text = authors_release(folder, clip, tmp_path)
    import hysafe

    model = hysafe.load_hysac_release(
        weights=str(tmp_path / "hysac_model.pth"),
        bounds=str(tmp_path / "hysac_bounds.json"),
        base=str(folder),
    )
    assert isinstance(model, hysafe.HySAC)
    pixels, tokens = inputs()
    with torch.no_grad():
        ref_img = exp_map0(vision(pixel_values=pixels).image_embeds * 0.2, 1.3)
        ref_txt = exp_map0(text(input_ids=tokens).text_embeds * 0.25, 1.3)
        img, txt = model.encode_image(pixels), model.encode_text(tokens)
    assert (img - ref_img).abs().max() <= 1e-5 and (txt - ref_txt).abs().max() <= 1e-5
    assert model.curv.item() == pytest.approx(1.3) and model.logit_scale.item() == pytest.approx(20.0)
    root = lambda x: torch.asinh(math.sqrt(1.3) * x.norm(dim=-1)) / math.sqrt(1.3)  # noqa: E731
    assert torch.allclose(model.nsfw_score(txt), root(ref_txt), atol=1e-5)
    up = BOUNDS["V"]["up_95"]
    # their traverse_to_safe_image target
    assert model.tau("authors") == pytest.approx(up + math.tanh((up - 0.8) / 1.3) + 1)
    assert model.tau("authors", "image") == pytest.approx(1.0 + math.tanh((1.0 - 0.8) / 1.3) + 1)
    # merging equals peft's own merge_and_unload
    merged = merge_lora(
        {k[len("base_model.model.") :]: v for k, v in vision.state_dict().items()}, alpha=1.0, source="t"
    )
    peft_merged = vision.merge_and_unload().state_dict()
    for k, v in peft_merged.items():
        assert torch.allclose(merged[k], v, atol=1e-6), k
    # a converted release saves as a normal hysafe checkpoint and loads back
    from hysafe.models.checkpoint import load_model, save_model

    path = save_model(model, tmp_path / "hysac.safetensors", merged=True, bounds=model.bounds)
    with torch.no_grad():
        assert torch.allclose(load_model(path).encode_text(tokens), txt, atol=1e-6)
    # the release keeps the authors' traversal rule as its default, through a save and a load
    # (issue 28 item 5: the default was hysafe's 'avg' for every model)
    loaded = load_model(path)
    assert loaded.traversal_rule == "authors"
    assert loaded.tau() == model.tau("authors") != model.tau("avg")
    loaded.traversal_rule = None  # a hysafe-trained model: 'avg'
    assert loaded.tau() == model.tau("avg")
    with pytest.raises(ValueError, match="model's own rule"):
        hysafe.resolve_tau("model", bounds=model.bounds)
    from hysafe.models.traversal import check_tau_rule

    assert check_tau_rule("0.4", "f") == "0.4" and check_tau_rule("paper:V.avg", "f") == "paper:V.avg"
    with pytest.raises(ValueError, match="ckpt.safetensors: bad traversal rule 'cake'"):
        check_tau_rule("cake", "ckpt.safetensors")


def test_release_bad_inputs_name_file_and_key(base, tmp_path, monkeypatch):
    folder, clip = base
    authors_release(folder, clip, tmp_path, drop="lora_B")
    with pytest.raises(ValueError, match=r"hysac_model.pth: LoRA key '.*lora_B.default.weight' missing"):
        load_hysac_release(
            str(tmp_path / "hysac_model.pth"), str(tmp_path / "hysac_bounds.json"), base=str(folder)
        )
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth: HySAC scalars"):
        load_hysac_release(str(tmp_path / "other.pth"), str(tmp_path / "hysac_bounds.json"), base=str(folder))
    (tmp_path / "b.json").write_text(json.dumps({"U": BOUNDS["U"]}))
    with pytest.raises(ValueError, match=r"b.json: bounds without \['V', 'S'\]"):
        load_hysac_release(str(tmp_path / "other.pth"), str(tmp_path / "b.json"), base=str(folder))

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="never unpickles code"):
        load_hysac_release(str(tmp_path / "evil.pth"), str(tmp_path / "hysac_bounds.json"), base=str(folder))
    authors_release(folder, clip, tmp_path)
    wider = transformers.CLIPConfig(
        text_config={**tiny_config().text_config.to_dict(), "hidden_size": 48},
        vision_config=tiny_config().vision_config.to_dict(),
        projection_dim=24,
    )
    transformers.CLIPModel(wider).save_pretrained(str(tmp_path / "wider"))
    with pytest.raises(ValueError, match=r"do not fit open_clip .*another architecture"):
        load_hysac_release(
            str(tmp_path / "hysac_model.pth"),
            str(tmp_path / "hysac_bounds.json"),
            base=str(tmp_path / "wider"),
        )
    with pytest.raises(
        FileNotFoundError,
        match=r"'missing.pth' is not a local file, and fetching it from the hub repo "
        r"'aimagelab/HySAC' failed",
    ):
        load_hysac_release("missing.pth", str(tmp_path / "hysac_bounds.json"), base=str(folder))


def test_tokenizer_parity_with_open_clip(tmp_path):
    import open_clip

    hf = write_clip_tokenizer(tmp_path / "tok")
    texts = [
        "A photo of a Cat.",
        "a dog,   covered in blood!!",
        "naïve café déjà vu",
        "x " * 200,
        "it's 3:45 — 100% ok",
    ]
    ours = open_clip.get_tokenizer("ViT-B-32")(texts)
    theirs = torch.tensor(hf(texts, padding="max_length", truncation=True, max_length=77)["input_ids"])
    eot = (ours == 49407).int().argmax(1)
    # the long caption: cut, EOT last
    assert torch.equal(eot, (theirs == 49407).int().argmax(1)) and eot[3] == 76
    for row, end in enumerate(eot.tolist()):
        assert torch.equal(ours[row, : end + 1], theirs[row, : end + 1])  # identical ids up to end-of-text
        # the padding differs, as documented
        assert (ours[row, end + 1 :] == 0).all() and (theirs[row, end + 1 :] == 49407).all()


def test_cli_convert_and_export(base, tmp_path, capsys, monkeypatch):
    import sys

    from hysafe.cli.main import main

    folder, clip = base
    authors_release(folder, clip, tmp_path)
    out = tmp_path / "hysac.safetensors"
    assert (
        main(
            [
                "convert",
                "hysac-release",
                "--weights",
                str(tmp_path / "hysac_model.pth"),
                "--bounds",
                str(tmp_path / "hysac_bounds.json"),
                "--base",
                str(folder),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["export", "--format", "transformers", str(out), str(tmp_path / "hf")]) == 0
    side = json.loads((tmp_path / "hf" / "hysafe_hysac.json").read_text())
    assert side["bounds"] == BOUNDS and side["curv"] == pytest.approx(1.3)
    assert (
        main(
            [
                "convert",
                "transformers",
                "--transformers",
                str(folder),
                "--kind",
                "clip",
                "--out",
                str(tmp_path / "c.safetensors"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert (
        main(
            [
                "convert",
                "transformers",
                "--transformers",
                str(folder),
                "--out",
                str(tmp_path / "d.safetensors"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "pip install 'hysafe[hf]'" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def hysac_export(tmp_path_factory):
    """A tiny HySAC (scalars away from their initial values) exported as a transformers folder."""
    import hysafe
    from hysafe.interop import export_transformers

    torch.manual_seed(3)
    model = hysafe.create_model("hysac", "hysafe-tiny", None, lora=None)
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(63.4))
        model.log_alpha_text.fill_(-1.3)
    folder = tmp_path_factory.mktemp("export") / "hysac-hf"
    export_transformers(model.eval(), folder)
    return model, folder


def _photo(width: int, height: int):
    """An image with edges and gradients (resampling differences show on them), not square."""
    from PIL import Image, ImageDraw

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    draw.ellipse((width // 5, height // 4, width // 2, height // 2), fill=(200, 20, 30))
    draw.rectangle((width // 2, height // 2, width - 3, height - 5), fill=(10, 90, 220))
    return im


#: one 8-bit level after normalisation by the smallest std: transformers' resampling rounds
#: differently from PIL-through-torchvision on some pixels (measured: at most one level)
ONE_LEVEL = 1 / 255 / 0.2613 + 1e-6


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (300, 200), (58, 45), (45, 58), (61, 45), (45, 61)])
def test_the_export_loads_as_a_clip_processor_with_hysafes_preprocessing(hysac_export, size):
    """``CLIPProcessor.from_pretrained`` on an export preprocesses as hysafe (open_clip) does: the
    same size, crop and normalisation, equal to 1e-6 where no resampling happens or it is exact,
    and otherwise within one 8-bit level of resampling rounding. One more difference, from
    transformers' centre crop: where the resized image exceeds the crop by an odd count whose half
    rounds up (61x45 -> 43x32: 5.5), torchvision starts the crop at round(5.5) = 6, transformers at
    5, so there the two are one pixel apart (and transformers equals open_clip's pipeline cropped
    at 5)."""
    import torchvision.transforms.functional as F

    model, folder = hysac_export
    processor = transformers.CLIPProcessor.from_pretrained(str(folder))
    image = _photo(*size)
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
    resize, _, *rest = model.preprocess.transforms
    resized = resize(image)
    width, height = resized.size
    tops = (round((height - 32) / 2), (height - 32) // 2)
    lefts = (round((width - 32) / 2), (width - 32) // 2)
    floor_cropped = F.crop(resized, tops[1], lefts[1], 32, 32)
    for t in rest:
        floor_cropped = t(floor_cropped)
    ours = model.preprocess(image)
    assert theirs.shape == ours.shape == (3, 32, 32)
    tolerance = 1e-6 if size == (32, 32) else ONE_LEVEL
    assert (theirs - floor_cropped).abs().max() <= tolerance
    if tops[0] == tops[1] and lefts[0] == lefts[1]:
        assert (theirs - ours).abs().max() <= tolerance
    assert transformers.CLIPImageProcessor.from_pretrained(str(folder)).crop_size["height"] == 32


def test_a_hysac_export_carries_hysacs_logit_scale(hysac_export):
    model, folder = hysac_export
    clip = transformers.CLIPModel.from_pretrained(str(folder))
    assert clip.logit_scale.exp().item() == pytest.approx(model.logit_scale.item(), rel=1e-6)
    assert clip.logit_scale.exp().item() == pytest.approx(63.4, rel=1e-6)


def test_the_readmes_lift_snippet_reproduces_encode_text(hysac_export, monkeypatch):
    """The README's transformers snippet, run as written on an export: the lift of
    ``get_text_features`` equals hysafe's ``encode_text``; lifting the L2-normalised
    ``text_embeds`` (the old wording) would not."""
    model, folder = hysac_export
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("\n", 1)[1].split("```", 1)[0] for b in readme.split("```python")[1:]]
    snippet = next(b for b in blocks if "get_text_features" in b)
    monkeypatch.chdir(folder.parent)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    with torch.no_grad():
        expected = model.encode_text(model.tokenize(["a red circle"]))
    assert torch.allclose(scope["hyperbolic"], expected, atol=1e-5)
    long = "a red circle beside a blue square " * 15  # past the tiny tower's 77-token context
    exec(compile(snippet.replace('"a red circle"', repr(long)), "README.md", "exec"), scope)
    with torch.no_grad():
        assert torch.allclose(scope["hyperbolic"], model.encode_text(model.tokenize([long])), atol=1e-5)
    normalised = torch.nn.functional.normalize(scope["features"], dim=-1)
    assert not torch.allclose(normalised, scope["features"], atol=1e-3)
