"""The trimmed text forward equals open_clip's full-context one (values and gradients)."""

import open_clip
import pytest
import torch

from hysafe.models.backbone import TINY_MODEL, register_model_configs
from hysafe.models.text_trim import pooled_positions, trimmable, trimmed_text_features


@pytest.fixture(scope="module")
def tiny_clip():
    register_model_configs()
    torch.manual_seed(0)
    return open_clip.create_model(TINY_MODEL).double()


def _captions() -> list[str]:
    return ["a cat", "a red circle at the top left on a blue background, covered in blood", "x " * 200]


def test_trimmed_forward_equals_encode_text(tiny_clip):
    tokens = open_clip.get_tokenizer(TINY_MODEL)(_captions())
    assert tokens.shape[1] == 77 and trimmable(tiny_clip)
    full = tiny_clip.encode_text(tokens)
    assert torch.allclose(trimmed_text_features(tiny_clip, tokens), full, atol=1e-12, rtol=0)
    short = tokens[:2]  # the longest caption ends well before the context
    assert int(pooled_positions(short, "argmax", None).max()) + 1 < 30
    assert torch.allclose(trimmed_text_features(tiny_clip, short), full[:2], atol=1e-12, rtol=0)


def test_trimmed_forward_has_the_same_gradients(tiny_clip):
    tokens = open_clip.get_tokenizer(TINY_MODEL)(_captions()[:2])
    grads = []
    for forward in (lambda: tiny_clip.encode_text(tokens), lambda: trimmed_text_features(tiny_clip, tokens)):
        tiny_clip.zero_grad()
        (forward() ** 2).sum().backward()
        grads.append([p.grad.clone() for p in tiny_clip.transformer.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_eos_pooling_and_untrimmable_towers(tiny_clip):
    tokens = torch.tensor([[49406, 5, 49407, 0, 0], [49406, 5, 6, 7, 49407]])
    assert pooled_positions(tokens, "eos", 49407).tolist() == [2, 4]
    with pytest.raises(ValueError, match="eos token id"):
        pooled_positions(tokens, "eos", None)

    class Custom(torch.nn.Module):  # a tower the rule does not know: open_clip's forward is used
        def encode_text(self, text, normalize=False):
            return text.double().sum(-1, keepdim=True)

    assert not trimmable(Custom())
    assert trimmed_text_features(Custom(), tokens).tolist() == [[98818.0], [98831.0]]


def test_the_lora_backbone_trims_with_adapters(tiny_base):
    from hysafe.models import create_model

    model = create_model("hysac", TINY_MODEL, tiny_base)
    with torch.no_grad():
        tokens = model.tokenize(_captions())
        inner = model.backbone.model
        expected = inner.encode_text(tokens)
        assert torch.allclose(model.backbone.text_features(tokens), expected, atol=1e-6)


def test_malformed_token_batches_are_named_errors(tiny_clip):
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a cat"])
    wide = torch.cat([tokens, torch.zeros(1, 23, dtype=tokens.dtype)], dim=1)
    with pytest.raises(ValueError, match="100 wide, past the text tower's 77-token context"):
        trimmed_text_features(tiny_clip, wide)  # open_clip: a broadcast error, or columns dropped
    for bad in (tokens[0], tokens.double()):
        with pytest.raises(ValueError, match=r"\(batch, length\) integer tensor"):
            trimmed_text_features(tiny_clip, bad)
