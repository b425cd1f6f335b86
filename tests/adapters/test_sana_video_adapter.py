"""Sana-Video's own rules, on its tiny pipeline: latents as the pipeline normalises them, prompts as its Gemma 2
encoder encodes them after its complex human instruction, the flow-matching loss by hand, and what its spec refuses.
The shared contract (training, reloading, the card, `eval.generate`) is `test_family_contract.py`'s."""

import pytest
import torch
from diffusers import SanaVideoPipeline

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.adapters.sana_video import SanaVideoAdapter, SanaVideoSpec
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing.ltx2 import tiny_ltx2_components
from diffusers_tsa.testing.sana_video import tiny_sana_video_components, tiny_sana_video_transformer


PROMPTS = ["a red ball falls", "A cat jumps into the glass of water"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny pipeline, saved; its adapter (text length 16) and the stock pipeline read back."""
    path = tmp_path_factory.mktemp("sana_video") / "base"
    SanaVideoPipeline(**tiny_sana_video_components()).save_pretrained(path)
    spec = load_spec(path)  # `auto`: the pipeline class of its model_index.json
    model = ADAPTERS[spec.family].from_pretrained(spec, options=TrainingOptions(max_sequence_length=16))
    return model, SanaVideoPipeline.from_pretrained(path)


def test_the_latents_are_the_vae_sample_normalised_as_the_pipeline_decodes_them(tiny):
    model, pipe = tiny
    clips = torch.rand(2, 9, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    latents = model.encode_videos(clips)
    torch.manual_seed(0)
    with torch.no_grad():
        posterior = pipe.vae.encode(clips.permute(0, 2, 1, 3, 4)).latent_dist
    sample = posterior.mean + posterior.std * torch.randn(posterior.mean.shape)  # latent_dist.sample()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert latents.shape == (2, 8, 3, 4, 8) and std.flatten()[1] == 1.25
    # SanaVideoPipeline decodes `latents * latents_std + latents_mean`: the inverse gives back the VAE's sample.
    torch.testing.assert_close(latents * std + mean, sample, rtol=1e-4, atol=1e-5)


def test_prompts_are_encoded_as_the_pipeline_encodes_them_after_its_instruction(tiny):
    model, pipe = tiny
    embeds, mask, _, _ = pipe.encode_prompt(
        PROMPTS,
        do_classifier_free_guidance=False,
        device="cpu",
        max_sequence_length=16,
        complex_human_instruction=_instruction(),
    )
    outputs = model.text_encoder_outputs(PROMPTS)
    torch.testing.assert_close(outputs["prompt_embeds"], embeds, rtol=0, atol=0)
    assert torch.equal(outputs["prompt_attention_mask"], mask)
    # The first token, the instruction's last ("User Prompt: " ends in ":") and the caption's words, lower-cased.
    assert outputs["prompt_attention_mask"].sum(1).tolist() == [1 + 1 + 4, 1 + 1 + 8]
    assert model.truncated_captions.count == 0
    model.text_encoder_outputs(["a red ball falls " * 4])  # 16 words: over the 16 - 2 a caption keeps
    assert model.truncated_captions.count == 1


def _instruction() -> list[str]:
    """`SanaVideoPipeline.__call__`'s default instruction, read independently of the adapter."""
    import inspect

    return inspect.signature(SanaVideoPipeline.__call__).parameters["complex_human_instruction"].default


def test_the_loss_is_flow_matching_with_the_masked_prompt(tiny):
    """By hand at sigma = 0.3: `x_t = 0.7 x_0 + 0.3 noise`, t = 300, the prompt with its mask, and the MSE of the
    prediction against `noise - x_0` (logit-normal draws weigh 1)."""
    model, _ = tiny
    latents = torch.randn(2, 8, 3, 4, 8, generator=torch.Generator().manual_seed(1))
    conditioning = model.encode_prompts(PROMPTS)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = model.diffusion_loss(model.transformer, latents, conditioning, timesteps=torch.tensor([300.0]))
    torch.manual_seed(0)
    noise = torch.randn_like(latents)
    with torch.no_grad():
        prediction = model.transformer(
            0.7 * latents + 0.3 * noise,
            encoder_hidden_states=conditioning.embeds,
            encoder_attention_mask=conditioning.attention_mask,
            timestep=torch.full((2,), 300.0),
            return_dict=False,
        )[0]
    torch.testing.assert_close(loss["diffusion"], (prediction - (noise - latents)).pow(2).mean())


def test_the_ltx2_vae_latents_are_its_sample_normalised_by_its_buffers():
    """The 720p checkpoint's LTX-2 VAE: `(z - latents_mean) / latents_std` with its buffers, no `scaling_factor`
    (`SanaVideoPipeline` decodes `latents * latents_std + latents_mean`)."""
    vae = tiny_ltx2_components()["vae"]
    vae.register_to_config(scaling_factor=0.7)  # not applied by SanaVideoPipeline
    index = {"vae": ["diffusers", "AutoencoderKLLTX2Video"]}
    model_spec = SanaVideoSpec.from_model_configs("sana", {"num_layers": 2, **TINY_HEADS}, dict(vae.config), index)
    model = SanaVideoAdapter(
        model_spec,
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=tiny_sana_video_transformer(),
        scheduler=None,
    )
    clips = torch.rand(2, 9, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    latents = model.encode_videos(clips)
    torch.manual_seed(0)
    with torch.no_grad():
        sample = vae.encode(clips.permute(0, 2, 1, 3, 4)).latent_dist.sample()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    assert not torch.equal(std, torch.ones_like(std)) and latents.shape == (2, 8, 2, 1, 2)
    torch.testing.assert_close(latents * std + mean, sample, rtol=1e-4, atol=1e-5)


TINY_HEADS = {"num_attention_heads": 2, "attention_head_dim": 8}


def spec(vae_class="AutoencoderKLWan", **transformer):
    """The spec of the released 2B configs (20 blocks of 20 x 112, the 480p checkpoint's Wan 2.1 VAE or the 720p
    one's LTX-2 VAE), with `transformer` changed."""
    config = {"num_layers": 20, "num_attention_heads": 20, "attention_head_dim": 112, "patch_size": [1, 2, 2]}
    vae = {
        "AutoencoderKLWan": {"scale_factor_spatial": 8, "scale_factor_temporal": 4},
        "AutoencoderKLLTX2Video": {"spatial_compression_ratio": 32, "temporal_compression_ratio": 8},
    }.get(vae_class, {})
    index = {"_class_name": "SanaVideoPipeline", "vae": ["diffusers", vae_class]}
    return SanaVideoSpec.from_model_configs("sana", {**config, **transformer}, vae, index)


def test_the_spec_states_the_grid_and_the_depth_and_refuses_what_the_model_cannot_take():
    model = spec()
    assert (model.default_depth, model.hidden_size, model.fps) == (12, 2240, 16)  # 60 % of 20 blocks
    assert model.token_grid(81, 480, 832) == (21, 30, 52)
    model.check_clip(81, 480, 832)
    with pytest.raises(GridError, match=r"`num_frames=80` must be 4k\+1 .* `width=840` must be a multiple of 32"):
        model.check_clip(80, 480, 840)
    with pytest.raises(ModelLayoutError, match="`AutoencoderDC` VAE"):
        spec(vae_class="AutoencoderDC")
    ltx2 = spec(vae_class="AutoencoderKLLTX2Video", patch_size=[1, 1, 1])  # x8 in time: twice Wan's frame spacing
    assert ltx2.frame_spacing == 8 and ltx2.teacher_frames_per_token_frame == 2
    assert ltx2.token_grid(81, 704, 1280) == (11, 22, 40)
    with pytest.raises(GridError, match=r"`num_frames=85` must be 8k\+1"):
        ltx2.check_clip(85, 704, 1280)
    with pytest.raises(ModelLayoutError, match="no dynamic guidance"):
        model.check_options(use_dynamic_cfg=True)
    with pytest.raises(ModelLayoutError, match="`max_sequence_length=2` must be at least 3"):
        model.for_training(TrainingOptions(max_sequence_length=2))
