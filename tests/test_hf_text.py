"""Hugging Face text towers (issue 32's plumbing): a tiny random BERT, built here, as the text tower of
the tiny CLIP through open_clip's own HFTextEncoder; LoRA targets by the tower's type, the trimmed text
forward, checkpoints, and the errors for folders that are not text models."""

import json
import logging
import math
import shutil
from dataclasses import replace

import open_clip
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hysafe.data.dataset import pad_id, truncated_count
from hysafe.models.checkpoint import inference_copy, load_model, save_model
from hysafe.models.hf_text import HF_LORA_LAYOUTS, hf_lora_target, registered_name, split_hf_text_name
from hysafe.models.safety_model import create_model
from hysafe.models.text_radius import projection_inputs

WORDS = (
    "a an the of in on at with red blue green yellow circle square triangle star top bottom left right "
    "background large small covered blood gun knife beaten bruised photo street dusk"
).split()
LAYERS = 2


def _save_tiny_bert(folder, model_type="bert", pad=0):
    from transformers import AutoConfig, AutoModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    if pad:  # RoBERTa-like: padding is id 1
        vocab[0], vocab[1] = vocab[1], vocab[0]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(vocab) + 2,
        hidden_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        pad_token_id=pad,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def hf_base(tiny_bert, tmp_path_factory):
    """The tiny CLIP with the BERT text tower as plain open_clip weights (the 'pretrained' file an
    adapter checkpoint is rebuilt from)."""
    clip = create_model("clip", f"hysafe-tiny+hf:{tiny_bert}", None, lora=None)
    path = tmp_path_factory.mktemp("hf-base") / "tiny-bert-clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.backbone.model.state_dict().items()}, str(path))
    return str(path)


def _texts():
    return [
        "a red circle at the top left covered in blood",
        "the gun",
        "a small blue star on a street at dusk",
    ]


def test_a_vision_plus_hf_name_builds_open_clips_custom_text_clip(tiny_bert):
    model = create_model("clip", f"hysafe-tiny+hf:{tiny_bert}", None, lora=None)
    clip = model.backbone.model
    assert type(clip).__name__ == "CustomTextCLIP" and type(clip.text).__name__ == "HFTextEncoder"
    text_cfg = model.backbone.config.model_cfg["text_cfg"]
    assert text_cfg["hf_model_name"] == str(tiny_bert.resolve()) and text_cfg["context_length"] == 40
    assert clip.visual.output_dim == 64 and model.encode_text(model.tokenize(_texts())).shape == (3, 64)
    tokens = model.tokenize(_texts())
    assert tokens.shape == (3, 40) and tokens[1, :4].tolist() == [
        2,
        WORDS.index("the") + 5,
        WORDS.index("gun") + 5,
        3,
    ]
    assert split_hf_text_name("ViT-B-32") is None
    with pytest.raises(ValueError, match="VISION\\+hf:SOURCE"):
        split_hf_text_name("+hf:/models/x")


def test_the_trimmed_hf_text_forward_equals_open_clips_in_values_and_gradients(tiny_bert):
    model = create_model("clip", f"hysafe-tiny+hf:{tiny_bert}", None, lora=None).double()
    clip = model.backbone.model.eval()
    tokens = model.tokenize(_texts())
    assert (tokens[:, 16:] == 0).all()  # every row pads the last 24 columns: the trimmed forward skips them
    trimmed = model.backbone.text_features(tokens)
    full = clip.encode_text(tokens, normalize=False)
    assert torch.allclose(trimmed, full, atol=1e-12, rtol=0)
    w = clip.text.transformer.encoder.layer[0].attention.self.query.weight.requires_grad_(True)
    trimmed = model.backbone.text_features(tokens)
    (g_trim,) = torch.autograd.grad(trimmed.square().sum(), w)
    (g_full,) = torch.autograd.grad(clip.encode_text(tokens, normalize=False).square().sum(), w)
    assert torch.allclose(g_trim, g_full, atol=1e-12, rtol=0)


def test_lora_targets_an_hf_tower_by_its_type_and_starts_as_the_unadapted_tower(tiny_bert, hf_base):
    reference = create_model("clip", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora=None).eval()
    model = create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base).eval()
    names = [
        n for n, _ in model.backbone.model.named_modules() if n.startswith("text.") and n.endswith("lora_A")
    ]
    per_layer = [m for ms in HF_LORA_LAYOUTS["bert"].values() for m in ms]
    assert len(names) == LAYERS * len(per_layer) == LAYERS * 6
    assert any(".attention.self.value." in n for n in names) and any(
        ".intermediate.dense." in n for n in names
    )
    tokens = model.tokenize(_texts())
    with torch.no_grad():  # peft starts B at zero: the adapted tower is the original one
        ours, theirs = model.backbone.text_features(tokens), reference.backbone.text_features(tokens)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    attn_only = create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora={"modules": ["attn"]})
    assert (
        sum(
            n.endswith("lora_A") for n, _ in attn_only.backbone.model.named_modules() if n.startswith("text.")
        )
        == 8
    )
    with pytest.raises(ValueError, match="'mt5' Hugging Face text tower: its modules are not mapped"):
        hf_lora_target("mt5", ("attn",))


def test_adapter_and_merged_checkpoints_round_trip_and_open_clip_loads_the_merged_file(
    tiny_bert, hf_base, tmp_path, randomize_lora
):
    model = randomize_lora(create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base)).eval()
    tokens = model.tokenize(_texts())
    adapter = load_model(save_model(model, tmp_path / "adapter.safetensors"))
    merged = load_model(save_model(model, tmp_path / "merged.safetensors", merged=True))
    with torch.no_grad():
        want = model.encode_text(tokens)
        assert torch.equal(adapter.encode_text(tokens), want)
        assert torch.allclose(merged.encode_text(tokens), want, atol=1e-5, rtol=0)
        features = merged.backbone.text_features(tokens)
    # open_clip's own model of the same config reads the merged file
    name = merged.backbone.config.model
    cfg = merged.backbone.config.model_cfg
    from hysafe.models.hf_text import registered_name

    theirs = open_clip.create_model(
        registered_name(name, cfg), pretrained=str(tmp_path / "merged.safetensors")
    )
    with torch.no_grad():
        assert torch.allclose(theirs.eval().encode_text(tokens), features, atol=1e-6, rtol=0)


def test_a_checkpoint_whose_text_model_folder_moved_is_named_and_loads_from_the_new_folder(
    hf_base, tmp_path, randomize_lora
):
    folder = _save_tiny_bert(tmp_path / "bert-here")
    model = randomize_lora(create_model("hysac", f"hysafe-tiny+hf:{folder}", hf_base)).eval()
    tokens = model.tokenize(_texts())
    with torch.no_grad():
        want = model.encode_text(tokens)
    paths = [save_model(model, tmp_path / f"{form}.safetensors", merged=form == "merged") for form in "ab"]
    moved = folder.rename(tmp_path / "bert-moved")
    for path in paths:
        with pytest.raises(
            FileNotFoundError, match=f"{path}: its Hugging Face text model folder {folder} is"
        ):
            load_model(path)
        loaded = load_model(path, text_tower=str(moved))
        assert loaded.backbone.config.model == f"hysafe-tiny+hf:{moved}"
        with torch.no_grad():
            assert torch.allclose(loaded.encode_text(tokens), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="has no Hugging Face text tower"):
        load_model(
            save_model(create_model("clip", "hysafe-tiny", None), tmp_path / "c.safetensors", merged=True),
            text_tower=str(moved),
        )
    with pytest.raises(FileNotFoundError, match="text model folder not found: .*nowhere"):
        load_model(paths[0], text_tower=str(tmp_path / "nowhere"))
    for bad in ("", " ", 123):
        with pytest.raises(ValueError, match="text_tower must be a text model folder or hub id"):
            load_model(paths[0], text_tower=bad)


def test_a_hub_id_offline_fails_at_once_naming_the_host(monkeypatch):
    """Offline, a hub id that is not in the cache is refused without transformers' half-minute of
    retries; with the host reachable (here: pretended) transformers is asked as before."""
    import socket

    import transformers
    from huggingface_hub import constants

    def unreachable(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def asked(*args, **kwargs):
        raise OSError("transformers was asked")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests run with HF_HUB_OFFLINE=1
    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", asked)
    with pytest.raises(
        ValueError, match="'someone/no-such-model': huggingface.co does not resolve \\(offline\\?\\)"
    ):
        create_model("clip", "hysafe-tiny+hf:someone/no-such-model", None, lora=None)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])
    with pytest.raises(ValueError, match="offline\\? give a local folder"):  # transformers' own error
        create_model("clip", "hysafe-tiny+hf:someone/no-such-model", None, lora=None)


def test_folders_that_are_not_text_models_are_named_errors(tmp_path, tiny_bert):
    with pytest.raises(FileNotFoundError, match="Hugging Face text model folder not found: .*nowhere"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'nowhere'}", None, lora=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a Hugging Face model folder \\(no config.json\\)"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'empty'}", None, lora=None)
    from transformers import ViTConfig

    ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="a 'vit' model, not a text encoder"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'vit'}", None, lora=None)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken/config.json: not a readable Hugging Face config"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'broken'}", None, lora=None)
    with pytest.raises(ValueError, match="config.json: a file, not a Hugging Face model folder"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'broken' / 'config.json'}", None, lora=None)
    (tmp_path / "weightless").mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(tiny_bert / name, tmp_path / "weightless")
    with pytest.raises(ValueError, match="weightless: a Hugging Face text model folder without weights"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'weightless'}", None, lora=None)
    (tmp_path / "weightless" / "tokenizer.json").rename(tmp_path / "tokenizerless")
    shutil.copy(tiny_bert / "model.safetensors", tmp_path / "weightless")
    with pytest.raises(ValueError, match="weightless: a Hugging Face text model folder without tokenizer"):
        create_model("clip", f"hysafe-tiny+hf:{tmp_path / 'weightless'}", None, lora=None)
    odd = tmp_path / "odd-width"  # a config transformers refuses to build (width not a multiple of heads)
    shutil.copytree(tiny_bert, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "hidden_size": 30, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match="odd-width: its config.json does not build a text model"):
        create_model("clip", f"hysafe-tiny+hf:{odd}", None, lora=None)
    with pytest.raises(ValueError, match="unknown open_clip model 'no-such-vit'"):
        create_model("clip", "no-such-vit+hf:/models/x", None, lora=None)


def test_a_roberta_like_pad_id_is_not_counted_as_truncation(tmp_path):
    folder = _save_tiny_bert(tmp_path / "roberta", model_type="roberta", pad=1)
    model = create_model("clip", f"hysafe-tiny+hf:{folder}", None, lora=None)
    tokens = model.tokenize(_texts())
    assert pad_id(model.tokenizer) == 1 and (tokens[:, -1] == 1).all()
    assert truncated_count(tokens, pad_id(model.tokenizer)) == 0 and truncated_count(tokens) == 3
    long = model.tokenize([" ".join(WORDS * 2)])
    assert truncated_count(long, 1) == 1
    assert json.loads(json.dumps(model.backbone.config.model_cfg))["text_cfg"]["context_length"] == 40


def test_export_to_a_transformers_clip_refuses_an_hf_text_tower_by_name(tiny_bert, hf_base, tmp_path):
    from hysafe.interop.convert import export_transformers

    model = create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base)
    with pytest.raises(ValueError, match="this model's is the Hugging Face model .*tiny-bert"):
        export_transformers(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _count_forwards(module):
    calls = []
    return calls, module.register_forward_hook(lambda *args: calls.append(1))


def test_a_frozen_hf_trunk_runs_once_per_caption_and_only_its_projection_trains(tiny_bert, hf_base):
    import copy

    from hysafe.models.hf_text_cache import cached_hf_text_features, clear_text_cache

    clear_text_cache()
    model = create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora={"text_modules": ["proj"]})
    clip = model.backbone.model
    adapted = [n for n, _ in clip.named_modules() if n.startswith("text.") and n.endswith("lora_A")]
    assert adapted == ["text.proj.lora_A"] and any(n.startswith("visual.") for n, _ in clip.named_modules())
    assert not any(p.requires_grad for p in clip.text.transformer.parameters())
    tokens = model.tokenize(_texts())
    with torch.no_grad():  # open_clip's own forward
        want = clip.eval().encode_text(tokens, normalize=False)
    calls, hook = _count_forwards(clip.text.transformer)
    model.train()  # the frozen trunk runs without dropout all the same
    first = model.backbone.text_features(tokens)
    again = model.backbone.text_features(tokens[[2, 0, 0], :20])  # other padding, a repeated caption
    assert len(calls) == 1 and torch.allclose(again, first[[2, 0, 0]], atol=1e-6, rtol=0)
    assert torch.allclose(first, want, atol=1e-6, rtol=0)
    lora_b = clip.text.proj.lora_B["default"].weight
    (grad,) = torch.autograd.grad(model.backbone.text_features(tokens).square().sum(), lora_b)
    assert grad.abs().sum() > 0 and len(calls) == 1
    hook.remove()
    twin = copy.deepcopy(clip)  # same weights (Safe-CLIP's frozen reference): the same cache
    twin_calls, _ = _count_forwards(twin.text.transformer)
    assert torch.allclose(cached_hf_text_features(twin, tokens), first, atol=1e-6) and not twin_calls
    with torch.no_grad():  # other weights (a merge, a reload) never read a stale entry
        twin.text.transformer.embeddings.word_embeddings.weight.mul_(torch.linspace(0.5, 2.0, 32))
    changed = cached_hf_text_features(twin, tokens)
    assert len(twin_calls) == 1 and not torch.allclose(changed, first, atol=1e-3)
    with pytest.raises(ValueError, match=r"no counterpart in a 'bert' text tower \(choose among .*'proj'"):
        hf_lora_target("bert", ("proj", "mlp"))
    with pytest.raises(ValueError, match="text_modules must name at least one module"):
        create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora={"text_modules": []})


def test_the_demo_names_its_text_tower_and_what_lora_adapts_in_it():
    from hysafe.demo import DemoConfig

    cfg = DemoConfig(text_tower="/models/m", text_tower_lora="attn")
    assert cfg.backbone_name == "hysafe-tiny+hf:/models/m" and cfg.fine_tune_lora.text_modules == (
        "attn",
        "proj",
    )
    assert DemoConfig(text_tower="/m").fine_tune_lora.text_modules == ("attn", "proj")
    assert DemoConfig(text_tower="/m", text_tower_lora="proj").fine_tune_lora.text_modules == ("proj",)
    assert DemoConfig(text_tower="/m").fine_tune_epochs == 10 and DemoConfig().fine_tune_epochs == 30
    with pytest.raises(ValueError, match="text_tower_epochs must be >= 1"):
        DemoConfig(text_tower_epochs=0)
    with pytest.raises(ValueError, match="text_tower \\(--text-tower\\) is empty"):
        DemoConfig(text_tower=" ")
    assert DemoConfig().backbone_name == "hysafe-tiny" and DemoConfig().fine_tune_lora.text_modules is None
    with pytest.raises(ValueError, match="text_tower_lora must be one of \\['all', 'attn', 'proj'\\]"):
        DemoConfig(text_tower_lora="everything")


_REPORT = (
    "\x1b[1mBertModel LOAD REPORT\x1b[0m from: /m\nKey                 | Status     |  | \n"
    "--------------------+------------+--+-\npooler.dense.bias   | UNEXPECTED |  | \n"
    "pooler.dense.weight | UNEXPECTED |  | \n\nNotes:\n- UNEXPECTED:\tcan be ignored ..."
)


def test_only_the_unused_pooler_report_counts_as_expected():
    from hysafe.models.hf_text_load import unused_pooler_report

    assert unused_pooler_report(_REPORT)
    missing = _REPORT.replace("\n\nNotes", "\nencoder.layer.0.output.dense.weight | MISSING |  | \n\nNotes")
    assert not unused_pooler_report(missing)
    assert not unused_pooler_report("pooler.dense.bias | UNEXPECTED") and not unused_pooler_report("")


class _Records(logging.Handler):
    """Collects warnings; a record that reaches it through two loggers (transformers' logger propagates
    to the root logger or not, depending on what ran before) is counted once."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        if not any(seen is record for seen in self.records):
            self.records.append(record)

    @property
    def messages(self):
        return [record.getMessage() for record in self.records]


def test_building_an_hf_tower_is_quiet_but_a_real_loading_problem_is_reported(tmp_path, capfd):
    """A checkpoint with BERT's pooler (which mean pooling does not use) builds without a warning or
    transformers' bar; one that lacks a layer's weights still gets transformers' report."""
    from safetensors.torch import load_file

    folder = _save_tiny_bert(tmp_path / "with-pooler")
    weights = load_file(folder / "model.safetensors")
    weights["pooler.dense.weight"], weights["pooler.dense.bias"] = torch.zeros(32, 32), torch.zeros(32)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    records, loggers = _Records(), (logging.getLogger(), logging.getLogger("transformers.modeling_utils"))
    for target in loggers:
        target.addHandler(records)
    try:
        create_model("clip", f"hysafe-tiny+hf:{folder}", None, lora=None)
        assert records.messages == [] and "Loading weights" not in capfd.readouterr().err
        del weights["encoder.layer.0.output.dense.weight"]
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        create_model("clip", f"hysafe-tiny+hf:{folder}", None, lora=None)
    finally:
        for target in loggers:
            target.removeHandler(records)
    assert len(records.messages) == 1 and "MISSING" in records.messages[0], records.messages


def _text_batch(model):
    safe = ["a red circle at the top left", "a small blue star on a street at dusk"]
    unsafe = ["a red circle at the top left covered in blood", "a small blue star with a gun"]
    return {"text": model.tokenize(safe), "unsafe_text": model.tokenize(unsafe)}


def test_the_text_anchor_compares_the_text_model_with_itself_before_lora(tiny_bert, hf_base, randomize_lora):
    """S / S*: the trained text model's sentence embeddings, from the same pass as T / T*; S0 / S0*: the
    same model before LoRA (adapters off), cached and shared with the un-adapted model."""
    from hysafe.models.embed import embed_quadruplets
    from hysafe.models.hf_text_cache import base_sentence_embeddings, clear_text_cache, hf_sentence_embeddings

    clear_text_cache()
    name = f"hysafe-tiny+hf:{tiny_bert}"
    model = create_model("hysac", name, hf_base, lora={"modules": ["attn"]}).eval()
    batch, needed = _text_batch(model), {"T", "T*", "S", "S*", "S0", "S0*"}
    with torch.no_grad():
        start = embed_quadruplets(model, batch, needed)
    assert torch.allclose(start["S"], start["S0"], atol=1e-6) and start["S"].shape[1] == 32
    randomize_lora(model, generator=torch.Generator().manual_seed(0))
    emb = embed_quadruplets(model, batch, needed)
    reference = create_model("clip", name, hf_base, lora=None).eval()
    calls, hook = _count_forwards(reference.backbone.model.text.transformer)
    for key, s, s0 in (("text", "S", "S0"), ("unsafe_text", "S*", "S0*")):
        before = hf_sentence_embeddings(reference.backbone.model, batch[key])  # from the shared cache
        assert torch.allclose(emb[s0], before, atol=1e-6) and not emb[s0].requires_grad
        assert (emb[s] - emb[s0]).abs().max() > 1e-3 and emb[s].requires_grad
    assert not calls
    hook.remove()
    with torch.no_grad():  # S is the adapted model's own pooled output
        clip = model.backbone.model
        mask = (batch["text"] != 0).long()
        pooled = clip.text.pooler(clip.text.transformer(input_ids=batch["text"], attention_mask=mask), mask)
    assert torch.allclose(emb["S"], pooled, atol=1e-5)
    lora_b = next(p for n, p in clip.named_parameters() if n.startswith("text.") and "lora_B" in n)
    (grad,) = torch.autograd.grad((1 - torch.cosine_similarity(emb["S"], emb["S0"])).sum(), lora_b)
    assert grad.abs().sum() > 0
    trunk_calls, hook = _count_forwards(clip.text.transformer)
    again = base_sentence_embeddings(clip, batch["text"], model.backbone.peft)
    assert torch.equal(again, emb["S0"]) and not trunk_calls
    hook.remove()


def test_the_root_gap_is_the_mean_gap_of_the_log_distances_to_the_root():
    from hysafe.geometry import lorentz
    from hysafe.losses import root_gap_loss

    curv = 0.7
    # the exponential map at the root puts a tangent vector of norm r at distance r from the root
    x = lorentz.exp_map0(torch.tensor([[0.5, 0.0], [0.0, 2.0]], dtype=torch.float64), curv=curv)
    y = lorentz.exp_map0(torch.tensor([[0.0, 1.5], [1.0, 0.0]], dtype=torch.float64), curv=curv)
    expected = (math.log(1.5 / 0.5) + math.log(2.0 / 1.0)) / 2
    assert root_gap_loss(x, y, curv=curv).item() == pytest.approx(expected, rel=1e-9)
    assert root_gap_loss(x, x, curv=curv).item() == 0.0
    with pytest.raises(ValueError, match="root gap needs two non-empty rows of the same shape"):
        root_gap_loss(x, y[:1], curv=curv)


def test_the_root_anchor_reads_the_text_model_before_lora_through_the_trained_projection(
    tiny_bert, hf_base, randomize_lora
):
    """F / F*: the lifted text embeddings the text model gives with its adapters off, through the
    projection and alpha as trained; T~ / T*~: the trained ones from a pass without dropout. In training
    mode at the start of a fine-tune T~ = F exactly while T (with dropout) is not; T~ = F while only the
    projection is adapted, apart once the transformer is; gradients reach the adapters and alpha, and
    through F the projection's adapter only."""
    from hysafe.models.embed import embed_quadruplets

    lora = {"modules": ["attn", "proj"]}  # the demo's --text-tower-lora attn
    model = create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora=lora).train()
    batch, needed = _text_batch(model), {"T", "T*", "F", "F*", "T~", "T*~"}
    emb = embed_quadruplets(model, batch, needed)
    for t, steady, f in (("T", "T~", "F"), ("T*", "T*~", "F*")):
        assert torch.allclose(emb[steady], emb[f], atol=1e-6)  # the gap starts at zero ...
        assert (emb[t] - emb[f]).abs().max() > 1e-4  # ... where the dropout pass would not
    clip = model.backbone.model
    dropouts = [m for m in clip.text.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)  # the pass without dropout restores them
    proj_b = [p for n, p in clip.named_parameters() if n.startswith("text.proj") and "lora_B" in n]
    assert proj_b  # the projection carries an adapter of its own
    model.eval()
    with torch.no_grad():
        for p in proj_b:
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    emb = embed_quadruplets(model, batch, needed)
    for t, f in (("T", "F"), ("T*", "F*")):
        assert torch.allclose(emb[t], emb[f], atol=1e-6)
    randomize_lora(model, std=0.5, generator=torch.Generator().manual_seed(0))
    model.train()
    emb = embed_quadruplets(model, batch, needed)
    assert (emb["T~"] - emb["F"]).abs().max() > 1e-3
    trunk_b = next(
        p for n, p in clip.named_parameters() if n.startswith("text.transformer") and "lora_B" in n
    )
    curv = model.live_space.curv
    gap = root_gap_loss_of(emb["T~"], emb["F"], curv)
    grads = torch.autograd.grad(gap, [proj_b[0], trunk_b, model.log_alpha_text], retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    only_f = root_gap_loss_of(emb["T~"].detach(), emb["F"], curv)
    f_grads = torch.autograd.grad(only_f, [proj_b[0], trunk_b], allow_unused=True)
    assert f_grads[0].abs().sum() > 0 and (f_grads[1] is None or f_grads[1].abs().sum() == 0)
    with pytest.raises(ValueError, match="a HySAC model's, got a 'safeclip' model"):
        safe = create_model("safeclip", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora=lora)
        embed_quadruplets(safe, batch, {"F"})


def root_gap_loss_of(x, y, curv):
    from hysafe.losses import root_gap_loss

    return root_gap_loss(x, y, curv=curv)


@pytest.mark.parametrize(
    "option, loss_kind, names, bad",
    [
        ("text_anchor", "cosine", ("cosine(S,S0)", "cosine(S*,S0*)"), -1.0),
        ("root_anchor", "root_gap", ("root_gap(T~,F)", "root_gap(T*~,F*)"), float("inf")),
    ],
)
def test_each_anchor_is_a_named_hysac_option(
    option, loss_kind, names, bad, tiny_bert, hf_base, randomize_lora, tiny_base
):
    """The text anchor (S to S0) and the root anchor (T to F): off by default, refused where no HF text
    tower is, and added to HySAC's objective with their weight."""
    from hysafe.demo import DemoConfig
    from hysafe.training.loop import compute_loss
    from hysafe.training.recipes import get_recipe

    recipe = get_recipe("hysac", **{option: 2.0})
    anchors = [(t.name, t.weight) for t in recipe.objective.terms if t.loss == loss_kind]
    assert anchors == [(names[0], 2.0), (names[1], 2.0)] and not recipe.objective.needs_reference
    assert all(t.loss != loss_kind for t in get_recipe("hysac").objective.terms)  # off by default
    with pytest.raises(ValueError, match=f"{option} must be a finite number >= 0"):
        get_recipe("hysac", **{option: bad})
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"{option}, {flag}.*Hugging Face text tower"):
        recipe.check_model(create_model("hysac", "hysafe-tiny", tiny_base))
    with pytest.raises(ValueError, match=f"{option} .* needs --text-tower"):
        DemoConfig(**{option: 1.0})
    model = randomize_lora(
        create_model("hysac", f"hysafe-tiny+hf:{tiny_bert}", hf_base, lora={"modules": ["attn", "proj"]})
    )
    recipe.check_model(model)
    model.eval()  # no dropout: the two losses below see the same embeddings
    batch = _text_batch(model)
    images = torch.zeros(2, 3, 32, 32)
    batch |= {"image": images, "unsafe_image": images + 0.5}
    loss, terms = compute_loss(model, recipe.objective, batch)
    assert terms[names[0]] > 0 and terms[names[1]] > 0
    without = compute_loss(model, get_recipe("hysac").objective, batch)[0]
    expected = without + 2.0 * (terms[names[0]] + terms[names[1]])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- HySAC's linear text radius (round 6)
# text_radius="linear": the distance to the root a linear read of the text model's sentence embedding on
# the log scale, the direction the projection's (docs/language.md, round 6)

RADIUS_SAFE = ["a red circle at the top left", "a small blue star on a street at dusk", "the green square"]
RADIUS_UNSAFE = ["a red circle covered in blood", "a small blue star with a gun", "the beaten bruised square"]


@pytest.fixture(scope="module")
def bert_clip(tiny_bert, hf_base):
    """(model name, a plain open_clip weights file) of the tiny CLIP with a random BERT text tower."""
    return f"hysafe-tiny+hf:{tiny_bert}", hf_base


def _linear(bert_clip, **kw):
    return create_model("hysac", *bert_clip, **{"text_radius": "linear", **kw})


#: the linear text radii: the sentence embedding of the same (adapted) pass, the one before LoRA, and the
#: adapted one's direction (the probe radius)
LINEAR_RADII = pytest.mark.parametrize("radius", ["linear", "linear-frozen", "probe"])


def _batch(model):
    return {"text": model.tokenize(RADIUS_SAFE), "unsafe_text": model.tokenize(RADIUS_UNSAFE)}


def _randomize_head(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.text_radius.linear.weight.copy_(
            0.1 * torch.randn(model.text_radius.linear.weight.shape, generator=g)
        )
        model.text_radius.linear.bias.fill_(-0.3)
    return model


def test_the_distance_is_the_linear_read_and_the_direction_the_projections(bert_clip, randomize_lora):
    model = _randomize_head(randomize_lora(_linear(bert_clip))).eval()
    tokens = model.tokenize(RADIUS_SAFE + RADIUS_UNSAFE)
    with torch.no_grad():
        x = model.encode_text(tokens)
        features = model.backbone.text_features(tokens).double()
        pooled = model.backbone.model.text.transformer(input_ids=tokens, attention_mask=(tokens != 0).long())
        sentences = model.backbone.model.text.pooler(pooled, (tokens != 0).long()).double()
    head = model.text_radius.linear
    want = torch.exp(sentences @ head.weight.double().T + head.bias.double()).squeeze(-1)
    assert torch.allclose(model.space.dist_to_root(x).double(), want, rtol=1e-5, atol=0)
    cosine = torch.nn.functional.cosine_similarity(x.double(), features, dim=-1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-6)
    # the published model on the same weights: same directions, the norm's distances
    published = create_model("hysac", *bert_clip)
    published.backbone.model.load_state_dict(model.backbone.model.state_dict())
    with torch.no_grad():
        y = published.eval().encode_text(tokens)
    assert torch.allclose(torch.nn.functional.cosine_similarity(x, y, dim=-1), torch.ones(6), atol=1e-6)
    norm_distance = features.norm(dim=-1) * published.log_alpha_text.exp().double()
    assert torch.allclose(published.space.dist_to_root(y).double(), norm_distance, rtol=1e-5, atol=0)


@LINEAR_RADII
def test_calibration_starts_every_caption_at_the_published_median_distance(bert_clip, radius):
    torch.manual_seed(0)
    model = _linear(bert_clip, text_radius=radius)
    published = create_model("hysac", *bert_clip)
    batch = _batch(model)
    published.calibrate(batch)
    changed = model.calibrate(batch)
    model.eval(), published.eval()
    with torch.no_grad():
        ours = torch.cat([model.space.dist_to_root(model.encode_text(t)) for t in batch.values()])
        theirs = torch.cat([published.space.dist_to_root(published.encode_text(t)) for t in batch.values()])
    assert changed["text_radius_start"] == pytest.approx(float(theirs.median()), rel=1e-5)
    assert torch.allclose(ours, torch.full_like(ours, float(theirs.median())), rtol=1e-5, atol=0)
    assert model.calibrate(batch) == {}  # a head that is no longer the initial one is kept


@LINEAR_RADII
def test_the_gradient_reaches_the_head_lora_and_projection_and_a_step_orders_the_captions(bert_clip, radius):
    from hysafe.models.embed import embed_quadruplets
    from hysafe.training.recipes import get_recipe

    torch.manual_seed(0)
    model = _linear(bert_clip, text_radius=radius)
    batch = _batch(model) | {"image": torch.rand(3, 3, 32, 32)}
    batch["unsafe_image"] = batch["image"].flip(-1)
    model.calibrate(batch)
    objective = get_recipe("hysac", rank_weight=10.0).objective
    emb = embed_quadruplets(model.train(), batch, objective.inputs)
    loss, _ = objective(emb, model.live_space, model.logit_scale)
    loss.backward()
    named = dict(model.named_parameters())
    assert named["text_radius.linear.weight"].grad.abs().sum() > 0
    assert named["text_radius.linear.bias"].grad.abs() > 0
    lora_b = [p for n, p in named.items() if n.startswith("backbone.") and ".text." in n and "lora_B" in n]
    assert lora_b and all(p.grad is not None for p in lora_b) and any(p.grad.abs().sum() > 0 for p in lora_b)
    assert named["log_alpha_text"].grad is None or named["log_alpha_text"].grad == 0  # not read

    def gap() -> float:
        with torch.no_grad():
            safe, unsafe = (
                model.space.dist_to_root(model.encode_text(batch[k])) for k in ("text", "unsafe_text")
            )
        return float(unsafe.log().mean() - safe.log().mean())

    assert gap() == pytest.approx(0.0, abs=1e-6)  # every caption starts at one distance
    head = model.text_radius.parameters()
    torch.optim.SGD(head, lr=1e-2).step()
    assert gap() > 0  # the hinges push the unsafe captions further out


@LINEAR_RADII
def test_the_linear_radius_round_trips_through_adapter_and_merged_checkpoints(
    bert_clip, tmp_path, randomize_lora, radius
):
    model = _randomize_head(randomize_lora(_linear(bert_clip, text_radius=radius))).eval()
    tokens = model.tokenize(RADIUS_SAFE + RADIUS_UNSAFE)
    adapter = load_model(save_model(model, tmp_path / "adapter.safetensors"))
    merged_path = save_model(model, tmp_path / "merged.safetensors", merged=True)
    merged = load_model(merged_path)
    with torch.no_grad():
        want = model.encode_text(tokens)
        assert torch.equal(adapter.encode_text(tokens), want)
        assert torch.allclose(merged.encode_text(tokens), want, atol=1e-5, rtol=0)
        assert torch.allclose(inference_copy(model).encode_text(tokens), want, atol=1e-5, rtol=0)
    assert torch.equal(merged.text_radius.linear.weight, model.text_radius.linear.weight)  # JSON exact
    assert "text_radius.linear.weight" in load_file(str(tmp_path / "adapter.safetensors"))
    cfg = merged.backbone.config
    theirs = open_clip.create_model(registered_name(cfg.model, cfg.model_cfg), pretrained=str(merged_path))
    with torch.no_grad():
        assert torch.allclose(
            theirs.eval().encode_text(tokens), merged.backbone.text_features(tokens), atol=1e-6, rtol=0
        )


def test_a_merged_file_with_a_damaged_or_missing_head_is_named(bert_clip, tmp_path):
    path = save_model(_linear(bert_clip), tmp_path / "merged.safetensors", merged=True)
    with safe_open(str(path), framework="pt") as f:
        tensors, raw = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = next(iter(raw))
    meta = json.loads(raw[key])
    published = {**meta["config"], "text_radius": "norm"}
    for edit, said in (
        ({"text_radius": {"weight": [0.0] * 3, "bias": 0.0}}, "32 finite numbers"),
        ({"text_radius": {"weight": [float("nan")] * 32, "bias": 0.0}}, "32 finite numbers"),
        ({"text_radius": None}, "holds no text_radius"),
        ({"config": published}, "holds a linear text radius but its config has text_radius='norm'"),
    ):
        edited = {k: v for k, v in {**meta, **edit}.items() if v is not None}
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={key: json.dumps(edited)})
        with pytest.raises(ValueError, match=said):
            load_model(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- the frozen linear text radius (round 7)
# text_radius="linear-frozen": the same read of the sentence embedding before LoRA, S0 (docs/language.md)


def _sentences_before_lora(hf_base, model_name, tokens):
    """S0 from a fresh open_clip model of the un-tuned weights file: its own trunk and pooler."""
    cfg = create_model("clip", model_name, hf_base).backbone.config
    theirs = open_clip.create_model(registered_name(cfg.model, cfg.model_cfg), pretrained=hf_base).eval()
    mask = (tokens != 0).long()
    with torch.no_grad():
        return theirs.text.pooler(theirs.text.transformer(input_ids=tokens, attention_mask=mask), mask)


def test_the_frozen_radius_reads_the_sentence_embedding_before_lora(bert_clip, randomize_lora):
    model = _linear(bert_clip, text_radius="linear-frozen")
    model = _randomize_head(randomize_lora(model, std=0.5)).eval()
    tokens = model.tokenize(RADIUS_SAFE + RADIUS_UNSAFE)
    with torch.no_grad():
        x = model.encode_text(tokens)
        features = model.backbone.text_features(tokens).double()
        with projection_inputs(model.backbone.model.text) as adapted:
            model.backbone.text_features(tokens)
    head = model.text_radius.linear

    def read(sentences):
        return torch.exp(sentences.double() @ head.weight.double().T + head.bias.double()).squeeze(-1)

    want = read(_sentences_before_lora(bert_clip[1], bert_clip[0], tokens))
    assert torch.allclose(model.space.dist_to_root(x).double(), want, rtol=1e-5, atol=0)
    assert not torch.allclose(read(adapted[0]), want, rtol=1e-3, atol=0)  # LoRA moved S: a real test
    cosine = torch.nn.functional.cosine_similarity(x.double(), features, dim=-1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-6)  # the adapted projection's direction


def test_a_frozen_radius_without_its_text_model_before_lora_is_named(bert_clip, tmp_path, randomize_lora):
    unsaved = create_model("hysac", bert_clip[0], None, text_radius="linear-frozen")
    with pytest.raises(ValueError, match="records none .*save the adapter checkpoint"):
        save_model(unsaved, tmp_path / "merged.safetensors", merged=True)
    assert not (tmp_path / "merged.safetensors").exists()
    unsaved = _randomize_head(randomize_lora(unsaved, std=0.5)).eval()  # its copy takes S0 from the model
    tokens = unsaved.tokenize(RADIUS_SAFE)
    with torch.no_grad():
        want = unsaved.encode_text(tokens)
        assert torch.allclose(inference_copy(unsaved).encode_text(tokens), want, atol=1e-5, rtol=0)
    path = save_model(
        _linear(bert_clip, text_radius="linear-frozen"), tmp_path / "m.safetensors", merged=True
    )
    with safe_open(str(path), framework="pt") as f:
        tensors, raw = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = next(iter(raw))
    meta = json.loads(raw[key])
    meta["config"]["backbone"]["origin"] = str(tmp_path / "moved.safetensors")
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={key: json.dumps(meta)})
    with pytest.raises(
        ValueError, match="merged fine-tune of .*moved.safetensors.*before the fine-tune.*put it"
    ):
        load_model(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- the probe text radius (round 8)
# text_radius="probe": a read of the adapted sentence embedding's direction, refitted as the report's
# logistic probe at the end of training (docs/language.md)

PROBE_VAL_SAFE = ["a yellow square by the river", "the purple circle in a garden", "a small green star"]
PROBE_VAL_UNSAFE = [
    "a yellow square in a knife fight",
    "the purple circle with a pistol",
    "a bloody green star",
]


def _captions(model, safe, unsafe):
    from types import SimpleNamespace

    return SimpleNamespace(safe_tokens=model.tokenize(safe), unsafe_tokens=model.tokenize(unsafe))


def test_the_probe_radius_is_the_probes_read_of_the_direction_at_the_trained_place(bert_clip, randomize_lora):
    from hysafe.models.classifier import NSFWClassifier
    from hysafe.training.radius_probe import fit_probe_radius

    model = _randomize_head(randomize_lora(_linear(bert_clip, text_radius="probe"), std=0.5)).eval()
    train = _captions(model, RADIUS_SAFE, RADIUS_UNSAFE)
    val = _captions(model, PROBE_VAL_SAFE, PROBE_VAL_UNSAFE)
    tokens = torch.cat([train.safe_tokens, train.unsafe_tokens])
    with torch.no_grad():
        sentences = model.radius_inputs(tokens).double()
        before = model.space.dist_to_root(model.encode_text(tokens)).double().log()
    head = model.text_radius.linear
    unit = torch.nn.functional.normalize(sentences, dim=-1)  # the closed form reads the direction
    assert torch.allclose(before, (unit @ head.weight.double().T + head.bias.double()).squeeze(-1), atol=1e-5)
    fitted = fit_probe_radius(model, train, val)
    labels = torch.tensor([0] * 3 + [1] * 3)
    theirs = NSFWClassifier.tuned_logistic_probe(
        (sentences.float(), labels),
        (model.radius_inputs(torch.cat([val.safe_tokens, val.unsafe_tokens])).float(), labels),
    )
    assert fitted["C"] == theirs.params["C"]
    direction = torch.as_tensor(theirs.params["direction"], dtype=torch.float64)
    weight = head.weight.detach().double().squeeze(0)
    assert torch.nn.functional.cosine_similarity(weight, direction, dim=0) == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        after = model.space.dist_to_root(model.encode_text(tokens)).double().log()
    # the probe's order, at the place the losses gave the captions: the same mean and spread of log d0
    assert torch.allclose(after, (unit @ weight) + head.bias.double(), atol=1e-5)
    assert after.mean() == pytest.approx(float(before.mean()), abs=1e-5)
    assert after.std() == pytest.approx(float(before.std()), rel=1e-4)
    assert torch.equal(torch.argsort(after), torch.argsort(theirs.score(sentences.float()).double()))
    again = fit_probe_radius(model, train, val)  # a fitted head is the fit's fixed point
    assert again["C"] == fitted["C"]
    assert torch.allclose(head.weight.detach().double().squeeze(0), weight, rtol=1e-5, atol=1e-7)


def test_training_fits_the_probe_radius_on_the_kept_weights_and_a_rerun_keeps_it(bert_clip, tmp_path):
    from hysafe import train
    from hysafe.data import WorldConfig, generate_world
    from hysafe.models.checkpoint import read_metadata
    from hysafe.models.classifier import PROBE_CS
    from hysafe.training import TrainConfig

    manifest = generate_world(
        tmp_path / "world", WorldConfig(n_train=32, n_val=16, n_test=8, kind="prose"), progress=False
    )
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3, output_dir=str(tmp_path / "run"), progress=False)
    torch.manual_seed(0)
    model = _linear(bert_clip, text_radius="probe")
    res = train(model, manifest, "hysac", cfg)
    fitted = read_metadata(res.best_checkpoint)["extra"]["text_radius_probe"]
    assert fitted["C"] in PROBE_CS and set(fitted["val_roc_auc"]) == {str(c) for c in PROBE_CS}
    weight = model.text_radius.linear.weight.detach().clone()
    assert torch.equal(load_model(res.best_checkpoint).text_radius.linear.weight, weight)  # saved fitted
    rerun = train(_linear(bert_clip, text_radius="probe"), manifest, "hysac", cfg)  # finished: re-read
    assert rerun.reused_epochs == 1 and torch.equal(rerun.model.text_radius.linear.weight, weight)
    with pytest.raises(ValueError, match="C chosen on validation captions, and validation is off"):
        train(_linear(bert_clip, text_radius="probe"), manifest, "hysac", replace(cfg, validate=False))


def test_a_log_radius_past_the_exp_maps_cap_saturates_there_instead_of_overflowing():
    from hysafe.geometry import lorentz
    from hysafe.models.text_radius import radial_lift

    features = torch.randn(3, 8)
    x = radial_lift(features, torch.tensor([0.0, 30.0, 500.0]), curv=4.0)
    assert torch.isfinite(x).all()
    d = lorentz.dist_to_root(x, curv=4.0)
    assert d[0].item() == pytest.approx(1.0, rel=1e-6)
    cap = lorentz.EXP_MAP_MAX_ARG / 2
    assert d[1].item() == pytest.approx(cap, rel=1e-5) and d[2].item() == pytest.approx(cap, rel=1e-5)


def test_the_linear_radius_is_refused_where_it_has_nothing_to_read(bert_clip, tmp_path):
    from hysafe.demo import DemoConfig
    from hysafe.models.embed import embed_quadruplets

    with pytest.raises(ValueError, match="needs a CLIP with a Hugging Face text tower"):
        create_model("hysac", "hysafe-tiny", None, text_radius="linear")
    with pytest.raises(ValueError, match="a 'safeclip' model has no such distance"):
        create_model("safeclip", *bert_clip, text_radius="linear")
    with pytest.raises(ValueError, match="must be one of"):
        create_model("hysac", *bert_clip, text_radius="cubic")
    model = _linear(bert_clip)
    with pytest.raises(ValueError, match="the root anchor holds the distance"):
        embed_quadruplets(model, _batch(model), {"F"})
    from hysafe.training.recipes import get_recipe

    with pytest.raises(ValueError, match="--root-anchor.*--text-radius linear.*leave one of them out"):
        get_recipe("hysac", root_anchor=1.0).check_model(model)  # before any run folder is made
    get_recipe("hysac", root_anchor=1.0).check_model(create_model("hysac", *bert_clip))
    with pytest.raises(ValueError, match="it needs --text-tower"):
        DemoConfig(text_radius="linear")
    with pytest.raises(ValueError, match="does not apply with --text-radius linear"):
        DemoConfig(text_tower=str(tmp_path), text_radius="linear", root_anchor=1.0)
    assert DemoConfig(text_tower=str(tmp_path), root_anchor=0.0).root_anchor == 0.0  # 0: off, as not given
    assert DemoConfig(text_tower=str(tmp_path)).hysac_model_options() == {"text_radius": "probe"}
    assert DemoConfig().hysac_model_options() == {}


def test_a_published_runs_fingerprint_is_the_one_before_the_option_existed(bert_clip):
    from hysafe.training.recipes import get_recipe
    from hysafe.training.state import run_fingerprint

    recipe = get_recipe("hysac")
    published = run_fingerprint(create_model("hysac", *bert_clip), recipe)
    assert "text_radius" not in published["model"]  # a run folder of an earlier hysafe resumes
    linear = run_fingerprint(_linear(bert_clip), recipe)
    assert linear["model"]["text_radius"] == "linear"
    from hysafe.training.state import _differences

    assert _differences(linear, published) == ["text_radius (--text-radius): 'linear' there, 'norm' now"]


def test_a_demo_folder_from_before_the_option_stands_for_the_published_norm(tmp_path):
    from hysafe.demo import DemoConfig
    from hysafe.demo.settings import changed_runs, flat_settings

    def older(cfg):  # demo_config.json as hysafe wrote it before round 6
        return {k: v for k, v in flat_settings(cfg).items() if k != "text_radius"}

    tower = DemoConfig(text_tower=str(tmp_path))
    assert changed_runs(older(tower), flat_settings(tower)) == ["--text-radius: 'norm' there, 'probe' now"]
    published = DemoConfig(text_tower=str(tmp_path), text_radius="norm")
    assert changed_runs(older(published), flat_settings(published)) == []
    assert changed_runs(older(DemoConfig()), flat_settings(DemoConfig())) == []
