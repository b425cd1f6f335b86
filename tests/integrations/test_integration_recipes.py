"""The README's recipes for finetrainers and SimpleTuner, run as loops of those trainers' shapes on tiny models: a
finetrainers-style `forward` returning `(pred, target, sigmas)` with the loss computed by the trainer, and a
SimpleTuner-style `auxiliary_loss(model_output, prepared_batch, loss)` hook over cached latents."""

import pytest
import torch
from peft import LoraConfig

from diffusers_tsa.adapters.adapter import scaled_moments
from diffusers_tsa.integrations import HostAlignment
from diffusers_tsa.projector import AlignmentProjector
from diffusers_tsa.testing import tiny_cogvideox_components, tiny_videomae


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipes") / "teacher"
    tiny_videomae().save_pretrained(path)
    return path


def student(teacher):
    components = tiny_cogvideox_components()
    transformer = components["transformer"]
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    alignment = HostAlignment.attach(
        transformer,
        teacher=teacher,
        num_frames=9,
        height=96,
        width=144,
        depth=1,
        projector_hidden_dim=16,
        vae=components["vae"],
    )
    return components, alignment


def cached_latents(components, generator):
    """What a latent cache holds: scaled VAE latents `(B, F, C, H, W)` of clips (no pixels)."""
    vae = components["vae"]
    videos = torch.rand(2, 3, 9, 96, 144, generator=generator) * 2 - 1
    with torch.no_grad():
        moments = scaled_moments(vae.encode(videos).latent_dist, 0.0, vae.config.scaling_factor)
    return moments.chunk(2, dim=1)[0].permute(0, 2, 1, 3, 4)


class FinetrainersLikeSpecification:
    """`ModelSpecification.forward` in finetrainers' shape: the prediction, the target and the noise levels; the
    trainer computes the loss."""

    def forward(self, transformer, condition_model_conditions, latent_model_conditions, sigmas, generator=None):
        latents = latent_model_conditions["latents"]
        noise = torch.randn(latents.shape, generator=generator)
        noisy = (1 - sigmas.view(-1, 1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1, 1) * noise
        pred = transformer(
            hidden_states=noisy,
            timestep=(sigmas * 1000).long(),
            **condition_model_conditions,
        ).sample
        return pred, noise - latents, sigmas


def test_a_finetrainers_shaped_loop_trains_the_projector_and_saves_it_with_its_checkpoints(teacher, tmp_path):
    components, alignment = student(teacher)
    transformer = components["transformer"]
    model_parts = [transformer]  # what finetrainers' optimizer and checkpointer see
    optimizer = torch.optim.AdamW([p for m in model_parts for p in m.parameters() if p.requires_grad], lr=1e-3)
    spec, generator = FinetrainersLikeSpecification(), torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in alignment.projector.parameters()]
    transformer.train()
    for step in range(2):
        latents = cached_latents(components, generator)
        conditions = {"encoder_hidden_states": torch.randn(2, 16, 32, generator=generator)}
        sigmas = torch.rand(2, generator=generator)
        pred, target, sigmas = spec.forward(transformer, conditions, {"latents": latents}, sigmas, generator)
        loss = (pred - target).pow(2).mean()  # the trainer's MSE ...
        loss = loss + alignment.weight * alignment.loss(latents=latents)  # ... plus the recipe's one line
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for m in model_parts for p in m.parameters()], 1.0)
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(a, b) for a, b in zip(before, alignment.projector.parameters()))
    alignment.save_projector(tmp_path / "checkpoint-2")  # the recipe's checkpoint callback
    saved = AlignmentProjector.from_pretrained(tmp_path / "checkpoint-2", subfolder="alignment_projector")
    for a, b in zip(saved.parameters(), alignment.projector.parameters()):
        assert torch.equal(a, b)


class SimpleTunerLikeModel:
    """A model in SimpleTuner's shape: `model_predict(prepared_batch)` and the `auxiliary_loss` hook; its batches carry
    cached latents only."""

    def __init__(self, transformer):
        self.model = transformer

    def model_predict(self, prepared_batch):
        output = self.model(
            hidden_states=prepared_batch["noisy_latents"],
            encoder_hidden_states=prepared_batch["encoder_hidden_states"],
            timestep=prepared_batch["timesteps"],
        )
        return {"model_prediction": output.sample}

    def auxiliary_loss(self, model_output, prepared_batch, loss):
        return loss, None


class WithTSA(SimpleTunerLikeModel):
    """The recipe: the projector attached to the model (`HostAlignment`), the term added in `auxiliary_loss`."""

    def __init__(self, transformer, alignment):
        super().__init__(transformer)
        self.alignment = alignment

    def auxiliary_loss(self, model_output, prepared_batch, loss):
        term = self.alignment.loss(latents=prepared_batch["latents"])
        return loss + self.alignment.weight * term, self.alignment.logs()


def test_a_simpletuner_shaped_auxiliary_loss_over_cached_latents(teacher):
    components, alignment = student(teacher)
    model = WithTSA(components["transformer"], alignment)
    model.model.train()
    generator = torch.Generator().manual_seed(0)
    latents = cached_latents(components, generator)
    batch = {
        "latents": latents,
        "noisy_latents": latents + torch.randn(latents.shape, generator=generator),
        "encoder_hidden_states": torch.randn(2, 16, 32, generator=generator),
        "timesteps": torch.tensor([100, 500]),
    }
    output = model.model_predict(batch)
    loss = (output["model_prediction"] - latents).pow(2).mean()
    total, logs = model.auxiliary_loss(output, batch, loss)
    assert set(logs) == {"loss/alignment"} and total > loss
    total.backward()
    assert all(p.grad is not None for p in alignment.projector.parameters())
