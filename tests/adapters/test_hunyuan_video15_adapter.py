"""HunyuanVideo 1.5's own rules, on its tiny pipeline: latents as the pipeline normalises them, prompts as its two
text encoders encode them, the flow-matching loss by hand, and what its spec refuses. The shared contract (training,
reloading, the card, `eval.generate`) is `test_family_contract.py`'s."""

import pytest
import torch
from diffusers import HunyuanVideo15Pipeline

from diffusers_tsa.adapters import ADAPTERS, TrainingOptions, load_spec
from diffusers_tsa.adapters.hunyuan_video15 import HunyuanVideo15Spec
from diffusers_tsa.errors import GridError, ModelLayoutError
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components


PROMPTS = ["a red ball falls", 'a sign reads "hi 5" and a cat jumps']


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny pipeline, saved; its adapter (text length 16) and the stock pipeline read back."""
    path = tmp_path_factory.mktemp("hunyuan_video15") / "base"
    HunyuanVideo15Pipeline(**tiny_hunyuan_video15_components()).save_pretrained(path)
    spec = load_spec(path)  # `auto`: the pipeline class of its model_index.json
    model = ADAPTERS[spec.family].from_pretrained(spec, options=TrainingOptions(max_sequence_length=16))
    return model, HunyuanVideo15Pipeline.from_pretrained(path)


def test_the_latents_are_the_vae_sample_times_its_scaling_factor(tiny):
    model, pipe = tiny
    clips = torch.rand(2, 9, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    latents = model.encode_videos(clips)
    torch.manual_seed(0)
    with torch.no_grad():  # clip by clip: the VAE's mid-block attention takes one clip at a time
        posteriors = [pipe.vae.encode(clip[None].permute(0, 2, 1, 3, 4)).latent_dist for clip in clips]
    mean = torch.cat([p.mean for p in posteriors])
    std = torch.cat([p.std for p in posteriors])
    expected = (mean + std * torch.randn(mean.shape)) * pipe.vae.config.scaling_factor  # latent_dist.sample()
    assert pipe.vae.config.scaling_factor == 1.5 and latents.shape == (2, 4, 3, 2, 3)
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-5)


def test_prompts_are_encoded_as_the_pipeline_encodes_them_by_both_text_encoders(tiny):
    model, pipe = tiny
    pipe.tokenizer_max_length = 16  # the adapter's text length
    embeds, mask, glyphs, glyph_mask = pipe.encode_prompt(PROMPTS, device="cpu", batch_size=2)
    outputs = model.text_encoder_outputs(PROMPTS)
    torch.testing.assert_close(outputs["prompt_embeds"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(outputs["prompt_embeds_2"], glyphs)  # ByT5 run prompt by prompt, as the pipeline
    assert torch.equal(outputs["prompt_attention_mask"].float(), mask)
    assert torch.equal(outputs["prompt_attention_mask_2"].float(), glyph_mask)
    # The caption's words after the template's 108 tokens; ByT5 sees only the quoted text ("hi 5": 4 bytes + </s>).
    assert outputs["prompt_attention_mask"].sum(1).tolist() == [4, 11]
    assert outputs["prompt_attention_mask_2"].sum(1).tolist() == [0, len('Text "hi 5". ') + 1]
    assert not outputs["prompt_embeds_2"][0].any()


def test_the_loss_is_flow_matching_on_the_pipelines_text_to_video_input(tiny):
    """By hand at sigma = 0.3: `x_t = 0.7 x_0 + 0.3 noise` beside a zero conditioning latent and a zero mask,
    zero image embeddings, t = 300, and the MSE of the prediction against `noise - x_0` (logit-normal draws weigh 1)."""
    model, _ = tiny
    latents = torch.randn(2, 4, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    conditioning = model.encode_prompts(PROMPTS)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = model.diffusion_loss(model.transformer, latents, conditioning, timesteps=torch.tensor([300.0]))
    torch.manual_seed(0)
    noise = torch.randn_like(latents)
    inputs = torch.cat([0.7 * latents + 0.3 * noise, torch.zeros(2, 5, 3, 2, 3)], dim=1)
    with torch.no_grad():
        prediction = model.transformer(
            hidden_states=inputs,
            timestep=torch.full((2,), 300.0),
            encoder_hidden_states=conditioning.embeds,
            encoder_attention_mask=conditioning.attention_mask,
            encoder_hidden_states_2=conditioning.glyph_embeds,
            encoder_attention_mask_2=conditioning.glyph_attention_mask,
            image_embeds=torch.zeros(2, 729, 8),
            return_dict=False,
        )[0]
    torch.testing.assert_close(loss["diffusion"], (prediction - (noise - latents)).pow(2).mean())


def spec(**transformer):
    """The spec of the released 8.3B configs (54 blocks of 16 x 128), with `transformer` changed."""
    config = {"num_layers": 54, "num_attention_heads": 16, "attention_head_dim": 128, "task_type": "t2v"}
    vae = {"spatial_compression_ratio": 16, "temporal_compression_ratio": 4}
    return HunyuanVideo15Spec.from_model_configs("hv15", {**config, **transformer}, vae, {})


def test_the_spec_states_the_grid_and_the_depth_and_refuses_what_the_model_cannot_take():
    model = spec()
    assert (model.default_depth, model.hidden_size) == (32, 2048)  # 60 % of 54 blocks
    assert model.token_grid(121, 480, 848) == (31, 30, 53)
    model.check_clip(121, 480, 848)
    with pytest.raises(GridError, match=r"`num_frames=120` must be 4k\+1 .* `width=850` must be a multiple of 16"):
        model.check_clip(120, 480, 850)
    with pytest.raises(ModelLayoutError, match="image-to-video .* use a `\\*_t2v` checkpoint"):
        spec(task_type="i2v")
    with pytest.raises(ModelLayoutError, match="no dynamic guidance"):
        model.check_options(use_dynamic_cfg=True)
