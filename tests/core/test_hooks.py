"""BlockFeatureExtractor on tiny diffusers transformers (CogVideoX, Wan), bare and wrapped."""

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig, get_peft_model

from diffusers_tsa import BlockFeatureExtractor, ModelLayoutError
from diffusers_tsa.hooks import unwrap_model
from diffusers_tsa.testing import tiny_cogvideox_components


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def tiny_cogvideox():
    return tiny_cogvideox_components(num_layers=3)["transformer"]


def cogvideox_inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(batch, 3, 4, 12, 18, generator=g),  # (B, F, C, H, W) latents
        "encoder_hidden_states": torch.randn(batch, 16, 32, generator=g),
        "timestep": torch.tensor([10, 500][:batch]),
        "return_dict": False,
    }


def tiny_wan():
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=3,
        rope_max_seq_len=32,
    )


def wan_inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(batch, 4, 3, 8, 8, generator=g),  # (B, C, F, H, W) latents
        "encoder_hidden_states": torch.randn(batch, 8, 16, generator=g),
        "timestep": torch.tensor([10, 500][:batch]),
        "return_dict": False,
    }


def block_input(model, blocks_name, index, inputs):
    """The hidden states entering `blocks[index]`, read with a pre-hook: what the block before returned."""
    seen = {}

    def pre_hook(module, args, kwargs):
        seen["hidden"] = kwargs.get("hidden_states", args[0] if args else None)

    block = getattr(model, blocks_name)[index]
    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return seen["hidden"]


@pytest.mark.parametrize(
    "build, inputs, tokens",
    [(tiny_cogvideox, cogvideox_inputs, 3 * 6 * 9), (tiny_wan, wan_inputs, 3 * 4 * 4)],
    ids=["cogvideox", "wan"],
)
def test_captures_the_block_output(build, inputs, tokens):
    model = build()
    name = "transformer_blocks" if hasattr(model, "transformer_blocks") else "blocks"
    expected = block_input(model, name, 2, inputs())  # what block 2 returned = what block 3 receives
    with BlockFeatureExtractor(model, depth=2) as extractor:
        assert extractor.module_path == f"{name}.1"
        with torch.no_grad(), extractor.capture() as captured:
            model(**inputs())
    assert captured.hidden_states.shape == (2, tokens, expected.shape[-1])
    assert torch.equal(captured.hidden_states, expected)


def test_fires_only_inside_the_context_and_removes_cleanly():
    model = tiny_cogvideox()
    state = copy.deepcopy(model.state_dict())
    extractor = BlockFeatureExtractor(model, depth=1)
    with torch.no_grad():
        with extractor.capture() as first:
            model(**cogvideox_inputs())
        kept = first.hidden_states
        model(**cogvideox_inputs(batch=1))  # outside: nothing recorded
        assert first.hidden_states is kept
        with extractor.capture() as second:
            pass
        assert second.hidden_states is None
    extractor.remove()
    assert not model.transformer_blocks[0]._forward_hooks
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError, match="removed"):
        with extractor.capture():
            pass


def lora_grads(model, inputs, depth, checkpointing):
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    with BlockFeatureExtractor(model, depth=depth) as extractor, extractor.capture() as captured:
        model(**inputs)
    captured.hidden_states.pow(2).mean().backward()  # an alignment-style loss on the features alone
    return {n: p.grad for n, p in model.named_parameters() if "lora_" in n}


def test_trains_lora_weights_through_gradient_checkpointing():
    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=LORA_TARGETS)
    plain = tiny_cogvideox()
    plain.add_adapter(config)
    checkpointed = copy.deepcopy(plain)
    grads = lora_grads(plain, cogvideox_inputs(), depth=2, checkpointing=False)
    grads_ckpt = lora_grads(checkpointed, cogvideox_inputs(), depth=2, checkpointing=True)
    assert checkpointed.is_gradient_checkpointing
    for name, grad in grads.items():
        block = int(name.split(".")[1])
        if block < 2:  # blocks up to the hooked one are trained by the loss...
            assert grad is not None and grad.abs().sum() > 0, name
            assert torch.allclose(grads_ckpt[name], grad, rtol=1e-4, atol=1e-7), name
        else:  # ...the blocks after it are not part of the features' graph
            assert grad is None and grads_ckpt[name] is None, name


def test_sees_through_peft_and_ddp_wrappers(tmp_path):
    model = tiny_cogvideox()
    expected = block_input(model, "transformer_blocks", 1, cogvideox_inputs())
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=LORA_TARGETS))  # zero-init B: same output

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(peft_model)
        with BlockFeatureExtractor(ddp, depth=1) as extractor:
            assert extractor.block is model.transformer_blocks[0]
            with torch.no_grad(), extractor.capture() as captured:
                ddp(**cogvideox_inputs())
    finally:
        torch.distributed.destroy_process_group()
    assert torch.allclose(captured.hidden_states, expected)


def test_module_path_and_tuple_index():
    model = tiny_cogvideox()
    extractor = BlockFeatureExtractor(model, module_path="transformer_blocks.0", hidden_states_index=1)
    with torch.no_grad(), extractor.capture() as captured:
        model(**cogvideox_inputs())
    assert captured.hidden_states.shape == (2, 16, 32)  # index 1 of a CogVideoX block: the text tokens
    extractor.remove()


def test_layout_errors_list_what_was_found():
    model = tiny_cogvideox()
    with pytest.raises(ModelLayoutError, match=r"transformer_blocks has 3 blocks, so depth must be in \[1, 3\]"):
        BlockFeatureExtractor(model, depth=4)
    with pytest.raises(ModelLayoutError, match=r"transformer_blocks \(3 blocks\)"):
        BlockFeatureExtractor(model, module_path="blocks.0")
    with pytest.raises(ModelLayoutError, match="Pass `module_path`"):
        BlockFeatureExtractor(torch.nn.Sequential(torch.nn.Linear(2, 2)), depth=1)
    with pytest.raises(ValueError, match="exactly one"):
        BlockFeatureExtractor(model)


def test_sees_through_torch_compile():
    """A `torch.compile` wrapper (`OptimizedModule._orig_mod`) is unwrapped to its model, and a compiled forward
    (dynamo's eager backend: no compiler needed) still records the block's output."""
    model = tiny_cogvideox()
    expected = block_input(model, "transformer_blocks", 2, cogvideox_inputs())
    compiled = torch.compile(model, backend="eager")
    assert compiled is not model and unwrap_model(compiled) is model
    with pytest.raises(ModelLayoutError, match="CogVideoXTransformer3DModel.transformer_blocks has 3 blocks"):
        BlockFeatureExtractor(compiled, depth=4)  # errors name the model, not its wrapper
    with BlockFeatureExtractor(compiled, depth=2) as extractor:
        assert extractor.block is model.transformer_blocks[1]
        with torch.no_grad(), extractor.capture() as captured:
            compiled(**cogvideox_inputs())
    torch.testing.assert_close(captured.hidden_states, expected)
