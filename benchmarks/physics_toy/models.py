"""The experiment's models: the student, a tiny LTX-Video pipeline whose VAE is set here to reconstruct the clips;
the teacher, a tiny VideoMAE trained by masked autoencoding on the training clips (no labels), saved as the
`VideoMAEModel` folder the project's `load_teacher` reads; and an oracle teacher read from the clips' object maps, the
upper bound of what a teacher's correspondences can say about the ball."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from diffusers_tsa.teachers import TeacherInput, VideoTeacher, load_teacher
from diffusers_tsa.testing import tiny_text_encoder, tiny_tokenizer

from .physics import ball_pixels
from .scene import HEIGHT, NUM_FRAMES, WIDTH


#: The student's latent channels and width; its VAE patches 8x8 pixels of one frame (no temporal compression), so a
#: clip's latents are 9 x 4 x 8 and so are its tokens (LTX-Video's transformer patch is 1).
LATENT_CHANNELS, STUDENT_HEADS, STUDENT_HEAD_DIM, STUDENT_LAYERS = 32, 4, 16, 4
#: The aligned block (of `STUDENT_LAYERS`).
DEPTH = 2
#: What the teacher sees: frames 1..8 at the clip's size, a 4 x 4 x 8 grid (tubelet 2 x 8 x 8) of width 64.
TEACHER_INPUT = TeacherInput(num_frames=NUM_FRAMES - 1, height=HEIGHT, width=WIDTH)
TEACHER_PATCH, TEACHER_TUBELET, TEACHER_WIDTH = 8, 2, 64


#: The constant channel of the VAE's hidden layer: large enough that its RMS norm divides every other channel by
#: nearly the same number, and their SiLU works in its linear range (relative error about 1e-4).
CONSTANT = 1e5


def student_vae():
    """A patch VAE of the LTX-Video family: 8x8 pixels of one frame per latent, no down blocks: `conv_in`, an RMS
    norm, SiLU and `conv_out` on each side (weights set by `pca_vae`)."""
    from diffusers import AutoencoderKLLTXVideo

    hidden = LATENT_CHANNELS + 1
    return AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(hidden,) * 4,
        decoder_block_out_channels=(hidden,) * 4,
        layers_per_block=(0,) * 5,
        decoder_layers_per_block=(0,) * 5,
        spatio_temporal_scaling=(False,) * 4,
        decoder_spatio_temporal_scaling=(False,) * 4,
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        patch_size=8,
        patch_size_t=1,
    )


def _patch_orders(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Which pixel of an 8x8x3 patch each encoder input channel holds, and which decoder output channel each pixel
    comes from (the two sides patchify in different orders): `(encoder_pixel (192,), decoder_channel (192,))`."""
    p, channels = vae.encoder.patch_size, 3
    pixels = torch.arange(channels * p * p, dtype=torch.float64).reshape(1, channels, 1, 1, p, 1, p)
    # The encoder's patchify (`LTXVideoEncoder3d.forward`) with one frame and one patch: (c, t, y, x) order.
    encoder_pixel = pixels.reshape(1, channels, 1, 1, 1, p, 1, p).permute(0, 1, 3, 7, 5, 2, 4, 6).flatten(1, 4)
    decoded = torch.arange(channels * p * p, dtype=torch.float64).reshape(1, -1, 1, 1, 1)
    # The decoder's unpatchify (`LTXVideoDecoder3d.forward`) of the same patch, back to (c, y, x).
    decoded = decoded.reshape(1, -1, 1, p, p, 1, 1, 1).permute(0, 1, 5, 2, 6, 4, 7, 3)
    decoder_channel = decoded.flatten(6, 7).flatten(4, 5).flatten(2, 3).reshape(-1)
    return encoder_pixel.reshape(-1).long(), decoder_channel.long()


@torch.no_grad()
def pca_vae(clips: torch.Tensor):
    """The student's VAE, set so that it reconstructs the clips: its latent of a patch is the patch's projection on
    the `LATENT_CHANNELS` principal components of the training patches (`clips` `(B, T, 3, H, W)` in [-1, 1]), and
    its decoder maps a latent back through them. Each side's RMS norm and SiLU run in their linear range (a constant
    hidden channel of size `CONSTANT`), the posterior's log-variance is -8 (a sample is the mean), and
    `latents_mean` / `latents_std`, with which LTX-Video normalises latents, are the clips' latent statistics.
    Returns the VAE in eval mode."""
    vae = student_vae().eval()
    for parameter in vae.parameters():
        parameter.zero_()
    p, channels = vae.encoder.patch_size, LATENT_CHANNELS
    encoder_pixel, decoder_channel = _patch_orders(vae)
    pixels = clips.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
    patches = pixels.reshape(*pixels.shape[:3], HEIGHT // p, p, WIDTH // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    patches = patches.reshape(-1, 3 * p * p).double()  # (c, y, x) order
    mean = patches.mean(dim=0)
    basis = torch.linalg.svd(patches - mean, full_matrices=False).Vh[:channels]  # (C, 192), (c, y, x) order
    hidden = channels + 1
    gain = 2.0 * CONSTANT / hidden**0.5  # undoes the norm's division and SiLU's slope 1/2 at 0
    encoder, decoder = vae.encoder, vae.decoder
    # Encoder: conv_in projects the patch (its input channels in the encoder's order) on the basis, the current frame
    # only (the last tap of the causal kernel, the centre of its 3x3).
    encoder.conv_in.conv.weight[:channels, :, -1, 1, 1] = basis[:, encoder_pixel].float()
    encoder.conv_in.conv.bias[:channels] = -(basis @ mean).float()
    encoder.conv_in.conv.bias[channels] = CONSTANT
    encoder.conv_out.conv.weight[:channels, :channels, -1, 1, 1] = gain * torch.eye(channels)
    encoder.conv_out.conv.bias[channels] = -8.0  # the log-variance channel
    # Decoder (not causal: the middle tap is the current frame): the latent, then the basis back to pixels.
    decoder.conv_in.conv.weight[:channels, :channels, 1, 1, 1] = torch.eye(channels)
    decoder.conv_in.conv.bias[channels] = CONSTANT
    to_pixels = torch.empty(3 * p * p, channels, dtype=torch.float64)
    to_pixels[decoder_channel] = basis.T
    offset = torch.empty(3 * p * p, dtype=torch.float64)
    offset[decoder_channel] = mean
    decoder.conv_out.conv.weight[:, :channels, 1, 1, 1] = gain * to_pixels.float()
    decoder.conv_out.conv.bias.copy_(offset.float())
    means = vae.encode(pixels).latent_dist.mean  # (B, C, T, h, w)
    vae.latents_mean.copy_(means.mean(dim=(0, 2, 3, 4)))
    vae.latents_std.copy_(means.std(dim=(0, 2, 3, 4)).clamp_min(1e-3))
    return vae


def save_student(folder: Path, vae, *, seed: int) -> Path:
    """Writes the student's `LTXPipeline` (the trained `vae`, a new random transformer, the tiny text encoder) to
    `folder`, the checkpoint the adapter loads."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=STUDENT_HEADS,
        attention_head_dim=STUDENT_HEAD_DIM,
        cross_attention_dim=STUDENT_HEADS * STUDENT_HEAD_DIM,
        num_layers=STUDENT_LAYERS,
        caption_channels=32,
    )
    LTXPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(tokenizer, seed=seed),
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    ).save_pretrained(folder)
    return folder


def teacher_config():
    """The teacher's `VideoMAEConfig`: 3 blocks of width 64, a 1-block decoder, patch 8, tubelet 2."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=[HEIGHT, WIDTH],
        patch_size=TEACHER_PATCH,
        tubelet_size=TEACHER_TUBELET,
        num_frames=TEACHER_INPUT.num_frames,
        hidden_size=TEACHER_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        use_mean_pooling=True,
        norm_pix_loss=False,
    )


def random_teacher(folder: Path, *, seed: int):
    """The same VideoMAE untrained (the reference a structured teacher is compared with), loaded by `load_teacher`."""
    from transformers import VideoMAEModel

    torch.manual_seed(seed)
    VideoMAEModel(teacher_config()).save_pretrained(folder)
    return load_teacher(folder, TEACHER_INPUT)


def train_teacher(folder: Path, clips: torch.Tensor, *, steps: int, seed: int, batch_size: int = 16, lr: float = 1e-3):
    """A tiny VideoMAE trained by masked autoencoding (`VideoMAEForPreTraining`, 75 % tube masking, pixel targets) on
    the frames it sees of `clips` `(B, T, 3, H, W)`, normalised as `load_teacher` normalises them; its encoder is saved
    to `folder` as a `VideoMAEModel` (no final norm: `use_mean_pooling=True`). Returns the teacher loaded back through
    `load_teacher`, and the last reconstruction loss."""
    from transformers import VideoMAEForPreTraining

    config = teacher_config()
    torch.manual_seed(seed)
    model = VideoMAEForPreTraining(config)
    model.videomae.save_pretrained(folder)  # the untrained encoder: only to read the project's input pipeline
    prepare = load_teacher(folder, TEACHER_INPUT)
    with torch.no_grad():
        frames = prepare.prepare(clips)
        pixels = (frames.add(1.0).mul(0.5) - prepare.mean) / prepare.std  # as `encode_prepared` normalises
    grid = config.num_frames // config.tubelet_size, HEIGHT // config.patch_size, WIDTH // config.patch_size
    per_frame = grid[1] * grid[2]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        index = torch.randint(len(pixels), (batch_size,), generator=generator)
        masked = torch.rand(batch_size, per_frame, generator=generator).argsort(dim=1) >= per_frame // 4
        mask = masked.repeat(1, grid[0])  # tube masking: the same 75 % of positions in every tubelet
        loss = model(pixel_values=pixels[index], bool_masked_pos=mask).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    model.videomae.save_pretrained(folder)
    return load_teacher(folder, TEACHER_INPUT), float(loss.detach())


#: A teacher token is the ball's when the ball covers this share of its pixels over its tubelet (a still disk of
#: radius 3 covers at most 44 % of an 8x8 patch): its oracle feature is then the ball's direction alone.
BALL_SHARE = 0.25


class ObjectMaps(torch.nn.Module):
    """The oracle's backbone: features of tokens from the clips' object maps. Each token is `s e_ball + (1 - s)
    e_position`, `s` its ball share over `BALL_SHARE` (at most 1), `e_ball` one direction and `e_position` a fixed
    random direction orthogonal to it per spatial position: the ball's tokens correspond to the ball's tokens in every
    frame (cosine 1) and to nothing else (cosine 0), the background's to the same place in every frame."""

    def __init__(self, grid_hw: tuple[int, int], width: int, *, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        position = F.normalize(torch.randn(grid_hw[0] * grid_hw[1], width - 1, generator=generator), dim=-1)
        self.register_buffer("position", position)  # (H*W, C - 1): every channel but the ball's
        self.weight = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # device and dtype for VideoTeacher

    def forward(self, ball: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
        """`ball` bool `(B, T, H, W)` -> tokens `(B, F * H' * W', C)` in `(f, h, w)` order."""
        pt, ph, pw = tubelet
        share = rearrange(ball.float(), "b (f pt) (h ph) (w pw) -> b (f h w) (pt ph pw)", pt=pt, ph=ph, pw=pw)
        s = (share.mean(-1, keepdim=True) / BALL_SHARE).clamp(max=1.0)
        position = repeat(self.position, "n c -> (f n) c", f=share.shape[1] // self.position.shape[0])
        return torch.cat([s, (1.0 - s) * position], dim=-1)


class OracleTeacher(VideoTeacher):
    """A teacher whose features are the clips' object maps (`ObjectMaps`), on the grid of the teacher it is `like`:
    the same frames (`prepare`), tubelet and width. The ball's pixels are the physics metric's (`physics.ball_pixels`)."""

    def __init__(self, like: VideoTeacher, *, seed: int = 0):
        tubelet, patch = like.tubelet[:2]
        super().__init__(
            ObjectMaps(like.grid[1:], like.hidden_size, seed=seed),
            name="oracle (object maps)",
            input=like.input,
            patch_size=patch,
            tubelet_size=tubelet,
            hidden_size=like.hidden_size,
        )

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        rgb = (pixels * self.std + self.mean).mul(255.0)  # back from the normalisation of `encode_prepared`
        ball = ball_pixels(rearrange(rgb, "b t c h w -> b t h w c").cpu().numpy())
        return self.backbone(torch.from_numpy(ball).to(rgb.device), self.tubelet)
