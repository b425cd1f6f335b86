"""The diffusion objective of each family against the formula written out in the test."""

import torch

from diffusers_tsa.adapters.cogvideox import CogVideoXAdapter, CogVideoXSpec
from diffusers_tsa.testing import tiny_cogvideox_components


def test_cogvideox_objective_is_the_weighted_x0_error_of_the_v_prediction():
    """diffusers' `train_cogvideox_lora.py`: x_t = sqrt(a) x0 + sqrt(1 - a) eps, the model predicts v, x0_hat =
    sqrt(a) x_t - sqrt(1 - a) v, and each sample's MSE to x0 is weighted by 1 / (1 - a), a = alphas_cumprod[t]."""
    components = tiny_cogvideox_components()
    spec = CogVideoXSpec(
        pretrained_model_name_or_path="", num_blocks=2, hidden_size=32, min_depth=1, max_text_seq_length=16
    )
    adapter = CogVideoXAdapter(spec, **components)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 3, 4, 12, 18, generator=generator)  # (B, F, C, H, W)
    conditioning = torch.randn(3, 16, 32, generator=generator)

    torch.manual_seed(7)
    loss = adapter.diffusion_loss(adapter.transformer, latents, conditioning)["diffusion"]

    torch.manual_seed(7)  # the same draws, in the adapter's order: the noise, then one timestep per sample
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, 1000, (3,))
    a = components["scheduler"].alphas_cumprod[timesteps].double().view(-1, 1, 1, 1, 1)
    noisy = (a.sqrt() * latents + (1 - a).sqrt() * noise).float()
    with torch.no_grad():
        v = adapter.transformer(
            hidden_states=noisy, encoder_hidden_states=conditioning, timestep=timesteps, return_dict=False
        )[0]
    x0 = a.sqrt() * noisy - (1 - a).sqrt() * v
    expected = (((x0 - latents) ** 2).mean(dim=(1, 2, 3, 4)) / (1 - a.flatten())).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)
    assert 0 < timesteps.min() and loss > 0  # a non-trivial draw
