"""CogVideoX 1.5's own rules (temporal patches, `patch_size_t = 2`) in the CogVideoX family, on a tiny offline pipeline:
the spec's grid and rules, padding and RoPE against `CogVideoXPipeline`'s own, the objective by hand and where the
hooked tokens come from (LoRA and full training through the script, with stock reloads, are in
`test_family_contract.py`).

The tiny sizes pair as 81 frames at 768x1360 do: 17 frames at 96x144 give latents 5 x 12 x 18, padded to 6, and
tokens 3 x 6 x 9; token frame 0 is pixel frame 0 alone, the other two cover frames 1-8 and 9-16, which the teacher
sees as 16 frames at 32x48, an 8 x 2 x 3 grid (x4 in time, /3 in space after dropping token frame 0).
"""

import json
import re

import pytest
import torch
from diffusers import CogVideoXPipeline

from diffusers_tsa.adapters import load_spec
from diffusers_tsa.adapters.cogvideox import CogVideoXAdapter, CogVideoXSpec
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing import tiny_cogvideox_components


PROMPT = "a white square moves right"
FRAMES, HEIGHT, WIDTH = 17, 96, 144
LATENTS = (5, 4, 12, 18)  # (F, C, H, W) of a FRAMES x HEIGHT x WIDTH clip
GRID = (3, 6, 9)


@pytest.fixture(scope="module")
def tiny15(tmp_path_factory):
    """A tiny CogVideoX 1.5 pipeline and 1.0 pipeline, on disk."""
    root = tmp_path_factory.mktemp("tiny15")
    CogVideoXPipeline(**tiny_cogvideox_components(patch_size_t=2)).save_pretrained(root / "base")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "base10")
    return root


def tiny_adapter() -> tuple[CogVideoXAdapter, CogVideoXPipeline]:
    """A CogVideoX 1.5 adapter and a stock pipeline around the same tiny components."""
    components = tiny_cogvideox_components(patch_size_t=2)
    components["text_encoder"].eval()  # no T5 dropout: one prompt, one embedding
    spec = CogVideoXSpec(
        pretrained_model_name_or_path="",
        num_blocks=2,
        hidden_size=32,
        min_depth=1,
        max_text_seq_length=16,
        patch_size_t=2,
        max_height=HEIGHT,
        max_width=WIDTH,
    )
    return CogVideoXAdapter(spec, **components), CogVideoXPipeline(**components)


# --- The spec ---------------------------------------------------------------------------------------------------------


def test_the_spec_reads_patch_size_t_and_pads_the_token_grid(tiny15):
    spec, spec10 = load_spec(tiny15 / "base"), load_spec(tiny15 / "base10")
    assert (spec.patch_size_t, spec.max_height, spec.max_width, spec.hidden_size) == (2, HEIGHT, WIDTH, 32)
    assert spec.token_grid(FRAMES, HEIGHT, WIDTH) == GRID  # 5 latent frames, padded to 6, in pairs
    assert spec.token_grid(9, HEIGHT, WIDTH) == (2, 6, 9)  # 3 -> 4 -> 2
    assert spec.token_grid(13, HEIGHT, WIDTH) == (2, 6, 9)  # 4 latent frames need no padding
    real = CogVideoXSpec(
        pretrained_model_name_or_path="THUDM/CogVideoX1.5-5B",
        num_blocks=42,
        hidden_size=3072,
        min_depth=1,
        patch_size_t=2,
        max_height=2400,
        max_width=2400,
    )
    assert real.token_grid(81, 768, 1360) == (11, 48, 85) and real.default_depth == 25
    assert (spec.fps, spec10.fps) == (16, 8)
    # CogVideoX 1.0 as before: no temporal patches, one token frame per latent frame.
    assert (spec10.patch_size_t, spec10.max_height, spec10.max_width) == (1, None, None)
    assert spec10.token_grid(FRAMES, HEIGHT, WIDTH) == (5, 6, 9)
    spec2b = CogVideoXSpec(
        pretrained_model_name_or_path="THUDM/CogVideoX-2b", num_blocks=30, hidden_size=1920, min_depth=1
    )
    assert spec2b.token_grid(49, 480, 720) == (13, 30, 45)


def test_check_clip_states_the_15_rules_and_keeps_the_10_ones(tiny15):
    spec, spec10 = load_spec(tiny15 / "base"), load_spec(tiny15 / "base10")
    spec.check_clip(FRAMES, HEIGHT, WIDTH)
    spec.check_clip(9, 48, 64)
    with pytest.raises(GridError) as info:
        spec.check_clip(13, 112, 150)
    message = str(info.value)
    assert message.startswith("CogVideoX 1.5 cannot take this clip size: `num_frames=13` must be 8k+1 (e.g. 9 or 17)")
    assert "latent frame 0 (pixel frame 0 alone) gets its own" in message
    assert "`height=112` must be at most 96" in message and "`width=150` must be a multiple of 16" in message
    assert "`width=150` must be at most 144" in message
    spec10.check_clip(13, 480, 720)  # 4k+1 and any size for 1.0
    with pytest.raises(GridError) as info:
        spec10.check_clip(50, 96, 150)
    assert str(info.value) == (
        "CogVideoX cannot take this clip size: `num_frames=50` must be 4k+1 (e.g. 49 or 53); `width=150` must be a "
        "multiple of 16 (VAE x8, patch 2)."
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ofs_embed_dim": 512}, "image-to-video transformer (`ofs_embed_dim=512`)"),
        ({"use_rotary_positional_embeddings": False}, "needs `use_rotary_positional_embeddings=True`"),
    ],
    ids=["image-to-video", "no-rope"],
)
def test_transformers_the_stock_pipeline_cannot_run_are_refused(tiny15, tmp_path, change, message):
    folder = tmp_path / "base"
    for name in ("model_index.json", "transformer/config.json", "vae/config.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text((tiny15 / "base" / name).read_text())
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(ModelLayoutError, match=f"`pretrained_model_name_or_path=.*{re.escape(message)}"):
        load_spec(folder)


# --- Padding, RoPE and the objective ----------------------------------------------------------------------------------


def run_pipeline(pipe: CogVideoXPipeline, output_type: str) -> torch.Tensor:
    """One denoising step of the stock pipeline for a FRAMES x HEIGHT x WIDTH video."""
    return pipe(
        PROMPT,
        num_frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=1,
        max_sequence_length=16,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
    ).frames


def test_padding_and_rope_are_the_pipelines():
    adapter, pipe = tiny_adapter()
    seen = {}
    pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)

    def decode(latents):  # records what the pipeline decodes, skipping the VAE
        seen["decoded"] = latents
        return torch.zeros(latents.shape[0], 3, FRAMES, HEIGHT, WIDTH)

    pipe.decode_latents = decode
    sampled = run_pipeline(pipe, "latent")
    run_pipeline(pipe, "pt")
    # The pipeline samples 6 latent frames for 5 and decodes the last 5: its padding frame comes first.
    assert sampled.shape[1:] == (6, *LATENTS[1:]) and seen["hidden_states"].shape == sampled.shape
    torch.testing.assert_close(seen["decoded"], sampled[:, 1:], rtol=0, atol=0)
    assert seen.get("ofs") is None  # text-to-video: no ofs

    latents = torch.randn(2, *LATENTS)
    padded = adapter.pad_latent_frames(latents)
    assert padded.shape[1:] == sampled.shape[1:]
    assert torch.equal(padded[:, 1:], latents) and torch.equal(padded[:, 0], latents[:, 0])
    assert adapter.pad_latent_frames(padded) is padded  # already a multiple of patch_size_t

    rope = adapter._rotary_embeddings(6, 12, 18, torch.device("cpu"))
    for ours, stock, used in zip(
        rope, pipe._prepare_rotary_positional_embeddings(HEIGHT, WIDTH, 6, "cpu"), seen["image_rotary_emb"]
    ):
        assert ours.shape == (3 * 6 * 9, 16)
        torch.testing.assert_close(ours, stock, rtol=0, atol=0)
        torch.testing.assert_close(ours, used, rtol=0, atol=0)


def test_the_15_objective_is_the_hand_computed_one():
    """The padded latents (a copy of latent frame 0 first), noised at one t per sample, the v-prediction with the
    pipeline's RoPE mapped to x0, and each sample's MSE over every padded frame weighted by 1 / (1 - a)."""
    adapter, pipe = tiny_adapter()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, *LATENTS, generator=generator)
    conditioning = torch.randn(2, 16, 32, generator=generator)

    torch.manual_seed(7)
    loss = adapter.diffusion_loss(adapter.transformer, latents, conditioning)["diffusion"]

    torch.manual_seed(7)  # the same draws, in the adapter's order: the noise, then one timestep per sample
    x = torch.cat([latents[:, :1], latents], dim=1)
    noise = torch.randn_like(x)
    timesteps = torch.randint(0, 1000, (2,))
    a = pipe.scheduler.alphas_cumprod[timesteps].double().view(-1, 1, 1, 1, 1)
    noisy = (a.sqrt() * x + (1 - a).sqrt() * noise).float()
    with torch.no_grad():
        v = pipe.transformer(
            hidden_states=noisy,
            encoder_hidden_states=conditioning,
            timestep=timesteps,
            return_dict=False,
            image_rotary_emb=pipe._prepare_rotary_positional_embeddings(HEIGHT, WIDTH, 6, "cpu"),
        )[0]
    x0 = a.sqrt() * noisy - (1 - a).sqrt() * v
    expected = (((x0 - x) ** 2).mean(dim=(1, 2, 3, 4)) / (1 - a.flatten())).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
    assert 0 < timesteps.min() and loss > 0


# --- The hooked tokens ------------------------------------------------------------------------------------------------


def changed_tokens(adapter: CogVideoXAdapter, frame: int, row: int, column: int) -> set[tuple[int, int, int]]:
    """The (F, H, W) token positions of the video tokens that change when one latent pixel of the unpadded latents
    changes (the patch embedding's output, before attention mixes positions)."""
    outputs = []
    hook = adapter.transformer.patch_embed.register_forward_hook(lambda module, args, output: outputs.append(output))
    conditioning = torch.zeros(1, 16, 32)
    for value in (0.0, 1.0):
        latents = torch.zeros(1, *LATENTS)
        latents[0, frame, 0, row, column] = value
        torch.manual_seed(0)
        with torch.no_grad():
            adapter.diffusion_loss(adapter.transformer, latents, conditioning)
    hook.remove()
    video = [output[:, 16:].reshape(1, *GRID, -1) for output in outputs]  # text tokens first
    return {tuple(p) for p in (video[0] != video[1]).any(-1)[0].nonzero().tolist()}


def test_the_hooked_blocks_tokens_are_frame_major_with_latent_frame_0_and_its_copy_first():
    adapter, _ = tiny_adapter()
    # Latent frame 3 is padded frame 4, in token frame 2; latent frame 0 and its copy are token frame 0.
    assert changed_tokens(adapter, 3, 4, 6) == {(2, 2, 3)}
    assert changed_tokens(adapter, 0, 11, 0) == {(0, 5, 0)}
    assert changed_tokens(adapter, 1, 0, 17) == {(1, 0, 8)}
