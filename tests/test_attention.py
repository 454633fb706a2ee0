"""The CPU attention-kernel rule: when it picks the math kernel, and that both kernels give the same
towers."""

import torch
from torch.profiler import ProfilerActivity, profile

from hysafe.models.attention import MATH_MAX_TOKENS, compute_dtype, image_tokens, training_attention
from hysafe.models.backbone import TINY_MODEL, BackboneConfig, LoraConfig, create_backbone

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"


def flash_enabled_inside(context) -> bool:
    with context:
        return torch.backends.cuda.flash_sdp_enabled()  # the global SDPA switches, CPU kernels included


def test_rule_picks_math_only_for_short_bf16_cpu_training_forwards():
    bf16 = torch.bfloat16
    assert not flash_enabled_inside(training_attention(50, "cpu", bf16))
    assert not flash_enabled_inside(training_attention(MATH_MAX_TOKENS, "cpu", bf16))
    assert flash_enabled_inside(training_attention(MATH_MAX_TOKENS + 1, "cpu", bf16))
    assert flash_enabled_inside(training_attention(50, "cpu", torch.float32))  # fp32: no gain, torch's choice
    assert flash_enabled_inside(training_attention(50, "cpu", bf16, max_tokens=0))  # rule off
    assert flash_enabled_inside(training_attention(None, "cpu", bf16))  # unknown length
    assert flash_enabled_inside(training_attention(50, "cuda", bf16))
    with torch.no_grad():  # forward-only: flash's forward is the faster one
        assert flash_enabled_inside(training_attention(50, "cpu", bf16))
    assert torch.backends.cuda.flash_sdp_enabled()  # restored


def test_compute_dtype_is_autocasts_or_the_weights():
    tower = torch.nn.Linear(2, 2)
    assert compute_dtype(tower, "cpu") == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(tower, "cpu") == torch.bfloat16
    assert compute_dtype(tower.to(torch.bfloat16), "cpu") == torch.bfloat16


def test_image_tokens_of_open_clip_towers():
    vit = create_backbone(BackboneConfig(model=TINY_MODEL))
    grid = vit.model.visual.grid_size
    assert image_tokens(vit.model.visual) == grid[0] * grid[1] + 1
    rn = create_backbone(BackboneConfig(model="hysafe-tiny-rn"))
    # the attention pool over the 1x1 final map + mean
    assert image_tokens(rn.model.visual) == (32 // 32) ** 2 + 1
    assert image_tokens(torch.nn.Linear(2, 2)) is None


def ops_of(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def tower_gradients(backbone, images, tokens, precision: str, rule: int):
    """Both towers' LoRA gradients of a sum-of-squares loss, and whether the step ran the flash kernel."""
    backbone.math_attention_max_tokens = rule
    backbone.zero_grad(set_to_none=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = (
                backbone.image_features(images).float().square().sum()
                + backbone.text_features(tokens).float().square().sum()
            )
        loss.backward()

    ops = ops_of(step)
    grads = torch.cat([p.grad.flatten() for p in backbone.parameters() if p.grad is not None])
    return grads, FLASH in ops


def test_math_and_flash_give_the_same_gradients():
    """bf16: both kernels off the fp32 gradients by bf16 rounding, math no further than flash; fp32 keeps
    flash."""
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(model=TINY_MODEL))
    backbone.add_lora(LoraConfig(r=2, alpha=4.0, dropout=0.0))
    with torch.no_grad():
        for name, module in backbone.model.named_modules():  # LoRA B starts at 0: give A's gradients a value
            if name.endswith("lora_B.default"):
                module.weight.normal_(0, 0.1)
    backbone.train()
    images = torch.randn(4, 3, 32, 32)
    tokens = backbone.tokenizer(["a red circle", "a blue square at the top left", "a", "blood"])
    runs = {
        (precision, rule): tower_gradients(backbone, images, tokens, precision, rule)
        for precision in ("fp32", "bf16")
        for rule in (MATH_MAX_TOKENS, 0)
    }
    used_flash = {key: flash for key, (_, flash) in runs.items()}
    assert used_flash == {
        ("fp32", MATH_MAX_TOKENS): True,
        ("fp32", 0): True,
        ("bf16", MATH_MAX_TOKENS): False,
        ("bf16", 0): True,
    }
    reference = runs[("fp32", 0)][0]
    assert torch.equal(runs[("fp32", MATH_MAX_TOKENS)][0], reference)  # fp32: the rule changes nothing

    def error(key):
        return float((runs[key][0] - reference).norm() / reference.norm())

    assert error(("bf16", MATH_MAX_TOKENS)) < 0.05 and error(("bf16", 0)) < 0.05
    assert error(("bf16", MATH_MAX_TOKENS)) <= 1.5 * error(("bf16", 0))


def test_forward_only_and_checkpointed_calls_keep_flash():
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(model=TINY_MODEL))
    images = torch.randn(2, 3, 32, 32)
    amp = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731

    def train_step():
        with amp():
            out = backbone.image_features(images).float().sum()
        out.backward()

    with torch.no_grad(), amp():
        assert FLASH in ops_of(lambda: backbone.image_features(images))
    assert FLASH not in ops_of(train_step)
    backbone.set_grad_checkpointing(True)  # its blocks are recomputed in the backward pass, outside the call
    assert FLASH in ops_of(train_step)
