"""Cost of the TSA machinery in one optimizer step: measured on a CogVideoX-shaped model, and counted analytically
for every family at its default size (CogVideoX-2B, CogVideoX 1.5-5B, Wan 2.1 1.3B and 14B, Wan 2.2 TI2V-5B,
LTX-Video 0.9, LTX-2, Kandinsky 5 T2V Lite, HunyuanVideo 1.5 480p, Sana-Video 2B 480p).

Measured (each configuration in a fresh subprocess, for honest peak memory): one optimizer step of the training
module the script builds (`AlignedTransformer`: the family adapter's forward + backward, projector, alignment loss,
AdamW) with `--alignment_loss none`, `m-tsa` on precomputed teacher features, and `m-tsa` with the teacher run online
(a ViT-B-sized VideoMAE with random weights, plus the motion mask). Each family's transformer has its real width
(CogVideoX-2B, Wan 2.1 1.3B, LTX-Video 0.9) with fewer blocks, on clips small enough for a laptop CPU; the VAE and
the text encoder, which cost the same in every configuration, are left out (latents and text embeddings are given).

    python benchmarks/bench_step.py                 # CPU, every family
    python benchmarks/bench_step.py --inputs        # the frozen encoders at each step vs precomputed inputs

`--inputs` measures one LoRA step of a CogVideoX-shaped pipeline at reduced width with the VAE and T5 encoding each
batch against one on the stored posterior and prompt embeddings (`ModelInputs`, float16), and counts the FLOPs of the
full-size VAE encoder and text encoder at CogVideoX-2B's and Wan 2.1's default sizes against their transformer's
forward and backward, with the bytes stored per clip.
    python benchmarks/bench_step.py --device cuda --families cogvideox --layers 30 --frames 49 --height 480 --width 720
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


RESULTS = Path(__file__).parent / "results"
CONFIGS = ("none", "m-tsa precomputed", "m-tsa online")
#: The measured families: a clip each takes at the default sizes (9 x 240 x 384 for CogVideoX and Wan: 8k+1 frames
#: and multiples of 32 suit LTX-Video too).
MEASURED = ("cogvideox", "wan", "ltx_video")

VIT_B = {"layers": 12, "width": 768, "ff_dim": 3072}
PROJECTOR_HIDDEN = 2048
#: Each family's transformer (public configs) at its default training size, its token grid there, and the teacher
#: grid of the default teacher input (`TeacherInput.for_clip` with a ViT-B/16, tubelet 2). `joint_text`: the text
#: tokens join the video tokens in self-attention (CogVideoX) rather than being attended to (Wan, LTX-Video).
FAMILIES = {
    "CogVideoX-2B": {
        "size": "49 x 480 x 720",
        "layers": 30,
        "width": 1920,
        "ff_dim": 7680,
        "text_tokens": 226,
        "joint_text": True,
        "student_grid": (13, 30, 45),
        "teacher_grid": (24, 10, 15),
    },
    "CogVideoX1.5-5B": {
        "size": "81 x 768 x 1360",
        "layers": 42,
        "width": 3072,
        "ff_dim": 12288,
        "text_tokens": 226,
        "joint_text": True,
        "student_grid": (11, 48, 85),
        "teacher_grid": (40, 16, 28),
    },
    "Wan2.1-T2V-1.3B": {
        "size": "81 x 480 x 832",
        "layers": 30,
        "width": 1536,
        "ff_dim": 8960,
        "text_tokens": 512,
        "joint_text": False,
        "student_grid": (21, 30, 52),
        "teacher_grid": (40, 10, 17),
    },
    "Wan2.1-T2V-14B": {
        "size": "81 x 720 x 1280",
        "layers": 40,
        "width": 5120,
        "ff_dim": 13824,
        "text_tokens": 512,
        "joint_text": False,
        "student_grid": (21, 45, 80),
        "teacher_grid": (40, 15, 27),
    },
    "Wan2.2-TI2V-5B": {
        "size": "121 x 704 x 1280",
        "layers": 30,
        "width": 3072,
        "ff_dim": 14336,
        "text_tokens": 512,
        "joint_text": False,
        "student_grid": (31, 22, 40),
        "teacher_grid": (60, 15, 27),
    },
    # Text: the 1000 Qwen2.5-VL, 256 ByT5 and 729 (zero, masked) image tokens join the video tokens in the
    # dual-stream blocks' joint attention, padding included (the stock attention is dense).
    "HunyuanVideo-1.5-480p": {
        "size": "121 x 480 x 848",
        "layers": 54,
        "width": 2048,
        "ff_dim": 8192,
        "text_tokens": 1000 + 256 + 729,
        "joint_text": True,
        "student_grid": (31, 30, 53),
        "teacher_grid": (60, 10, 18),
    },
    # Sana-Video 2B: 20 blocks of 20 heads of 112 with linear (ReLU-kernel) self-attention, `linear_attention_head`
    # wide per head (no N^2 term); its GLU MBConv FFN (hidden 2.5 d = 5600, a 1x1 conv to 2 x 5600 and one back, plus
    # a 3-tap temporal conv d -> d) costs 6 d (5600 + d) per token, the MLP of `ff_dim` 1.5 (5600 + d) = 11760; the
    # 300 Gemma 2 tokens are attended to.
    "Sana-Video-2B-480p": {
        "size": "81 x 480 x 832",
        "layers": 20,
        "width": 2240,
        "ff_dim": 11760,
        "text_tokens": 300,
        "joint_text": False,
        "linear_attention_head": 112,
        "student_grid": (21, 30, 52),
        "teacher_grid": (40, 10, 17),
    },
    "LTX-Video-0.9": {
        "size": "121 x 512 x 768",
        "layers": 28,
        "width": 2048,
        "ff_dim": 8192,
        "text_tokens": 128,
        "joint_text": False,
        "student_grid": (16, 16, 24),
        "teacher_grid": (60, 11, 16),
    },
    # Its 2 text blocks (self-attention over the prompt alone) are left out: under 0.1 % of the visual blocks'.
    "Kandinsky5-T2V-Lite": {
        "size": "121 x 512 x 768",
        "layers": 32,
        "width": 1792,
        "ff_dim": 7168,
        "text_tokens": 512,
        "joint_text": False,
        "student_grid": (31, 32, 48),
        "teacher_grid": (60, 11, 16),
    },
    # LTX-2 (19B): a 4096-wide video stream and a 2048-wide audio stream of 48 blocks each (the clip's 126 audio
    # latent frames at 24 fps), 1024 text tokens attended to by both, audio-video cross-attention in every block.
    "LTX-2": {
        "size": "121 x 512 x 768",
        "layers": 48,
        "width": 4096,
        "ff_dim": 16384,
        "text_tokens": 1024,
        "joint_text": False,
        "student_grid": (16, 16, 24),
        "teacher_grid": (60, 11, 16),
        "audio": {"tokens": 126, "width": 2048, "ff_dim": 8192},
    },
}


def transformer_flops(
    tokens: int, width: int, layers: int, ff_dim: int, context: int = 0, linear_attention_head: int | None = None
) -> float:
    """Forward FLOPs of a pre-norm transformer: 2 x (4 d^2 attention + 2 d ff_dim MLP) per token and block, plus
    4 N^2 d for the attention scores and their weighted sum (linear attention with heads of `linear_attention_head`
    channels: 4 N d d_head, each head's `K^T V` and its product with the queries); with `context` text tokens attended
    to (cross-attention), 2 x 2 d^2 per token for its query and output, 2 x 2 d^2 per text token for its keys and
    values, and 4 N T d."""
    dense = 2 * (4 * width**2 + 2 * width * ff_dim) * tokens
    attention = 4 * tokens * width * (linear_attention_head or tokens)
    cross = (4 * width**2 * tokens + 4 * width**2 * context + 4 * tokens * context * width) if context else 0
    return layers * (dense + attention + cross)


def audio_stream_flops(video_tokens: int, width: int, layers: int, text: int, audio: dict) -> float:
    """Forward FLOPs of an audio stream beside the video one (LTX-2): its own blocks (`transformer_flops`, text
    attended to), and per block the audio-video cross-attention both ways at the audio width: queries and outputs
    projected from and to each side's width, keys and values from the other side, 4 N_v N_a d_a for the scores and
    their weighted sum each way."""
    tokens, d_audio = audio["tokens"], audio["width"]
    own = transformer_flops(tokens, d_audio, layers, audio["ff_dim"], context=text)
    one_way = 2 * d_audio * (2 * width * video_tokens + 2 * d_audio * tokens) + 4 * video_tokens * tokens * d_audio
    other_way = 2 * d_audio * (2 * d_audio * tokens + 2 * width * video_tokens) + 4 * video_tokens * tokens * d_audio
    return own + layers * (one_way + other_way)


def analytic_share(name: str, family: dict) -> dict:
    """FLOPs of one training sample of `family` at its default size (its audio stream too, where it has one) and of
    each part of the TSA machinery."""
    from diffusers_tsa import GridResampling

    student_grid, teacher_grid = family["student_grid"], family["teacher_grid"]
    video_tokens = student_grid[0] * student_grid[1] * student_grid[2]
    teacher_tokens = teacher_grid[0] * teacher_grid[1] * teacher_grid[2]
    d, c, h = family["width"], VIT_B["width"], PROJECTOR_HIDDEN
    queries = round(0.2 * teacher_grid[1] * teacher_grid[2]) * teacher_grid[0]
    text = family["text_tokens"]
    if family["joint_text"]:
        forward = transformer_flops(video_tokens + text, d, family["layers"], family["ff_dim"])
    else:
        forward = transformer_flops(
            video_tokens,
            d,
            family["layers"],
            family["ff_dim"],
            context=text,
            linear_attention_head=family.get("linear_attention_head"),
        )
    if "audio" in family:
        forward += audio_stream_flops(video_tokens, d, family["layers"], text, family["audio"])
    step = 3 * forward  # forward + backward (2x); gradient checkpointing adds one more forward
    resampling = GridResampling.between(student_grid, teacher_grid, drop_first_frame=True)
    projected = (student_grid[0] - 1) * student_grid[1] * student_grid[2]  # frame 0 is dropped first
    kernel = resampling.downsample[0] * resampling.downsample[1] * resampling.downsample[2]
    projector = 3 * (2 * (d * h + h * h + h * c) * projected + 2 * c * c * kernel * teacher_tokens)
    loss = 8 * queries * teacher_tokens * c  # relations of both models + the fused gradient (Eq. 10)
    teacher = transformer_flops(teacher_tokens, c, VIT_B["layers"], VIT_B["ff_dim"])  # no backward
    return {
        "family": name,
        "setting": f"{family['size']}: student grid {student_grid} -> teacher grid {teacher_grid} "
        f"({'general path' if resampling.resize else 'integer ratios'}), ViT-B teacher, 20 % queries, per sample",
        "step_flops": step,
        "step_flops_with_checkpointing": 4 * forward,
        "projector_flops": projector,
        "m_tsa_loss_flops": loss,
        "teacher_online_flops": teacher,
        "share_precomputed": (projector + loss) / step,
        "share_online": (projector + loss + teacher) / step,
    }


def family_adapter(family: str, args, device: torch.device, batch: int):
    """`family`'s adapter around a transformer of its real width with `args.layers` blocks, with the latents and
    text conditioning of a batch (the VAE, tokenizer and text encoder are left out: their inputs are given)."""
    from diffusers import CogVideoXDDIMScheduler, FlowMatchEulerDiscreteScheduler

    frames, height, width, layers = args.frames, args.height, args.width, args.layers
    components = {"tokenizer": None, "text_encoder": None, "vae": None}
    if family == "cogvideox":
        from diffusers import CogVideoXTransformer3DModel

        from diffusers_tsa.adapters.cogvideox import CogVideoXAdapter, CogVideoXSpec

        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=30,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            text_embed_dim=4096,
            time_embed_dim=512,
            num_layers=layers,
            sample_height=height // 8,
            sample_width=width // 8,
            sample_frames=frames,
            max_text_seq_length=226,
        )
        spec = CogVideoXSpec(pretrained_model_name_or_path="", num_blocks=layers, hidden_size=1920, min_depth=1)
        adapter = CogVideoXAdapter(spec, transformer=transformer, scheduler=CogVideoXDDIMScheduler(), **components)
        latents = torch.randn(batch, (frames - 1) // 4 + 1, 16, height // 8, width // 8)
        conditioning = torch.randn(batch, 226, 4096)
    elif family == "wan":  # Wan 2.1 T2V 1.3B: 12 heads of 128, FFN 8960, UMT5 width 4096
        from diffusers import WanTransformer3DModel

        from diffusers_tsa.adapters.wan import WanAdapter, WanSpec

        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
        spec = WanSpec(pretrained_model_name_or_path="", num_blocks=layers, hidden_size=1536, min_depth=1)
        adapter = WanAdapter(spec, transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), **components)
        latents = torch.randn(batch, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
        conditioning = torch.randn(batch, 512, 4096)
    else:  # LTX-Video 0.9: 32 heads of 64, 128 latent channels, T5 width 4096
        from diffusers import LTXVideoTransformer3DModel

        from diffusers_tsa.adapters.ltx_video import LTXPromptEmbeds, LTXVideoAdapter, LTXVideoSpec

        transformer = LTXVideoTransformer3DModel(
            in_channels=128,
            out_channels=128,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=32,
            attention_head_dim=64,
            cross_attention_dim=2048,
            num_layers=layers,
            caption_channels=4096,
        )
        spec = LTXVideoSpec(pretrained_model_name_or_path="", num_blocks=layers, hidden_size=2048, min_depth=1)
        adapter = LTXVideoAdapter(
            spec, transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), **components
        )
        latents = torch.randn(batch, 128, (frames - 1) // 8 + 1, height // 32, width // 32)
        conditioning = LTXPromptEmbeds(torch.randn(batch, 128, 4096), torch.ones(batch, 128, dtype=torch.bool))
    transformer.to(device)
    if isinstance(conditioning, tuple):
        conditioning = type(conditioning)(*(t.to(device) for t in conditioning))
    else:
        conditioning = conditioning.to(device)
    return adapter, latents.to(device), conditioning


#: `--inputs`: the frozen encoders at each step against the precomputed inputs (`ModelInputs`).
INPUT_CONFIGS = ("encoders online", "precomputed inputs")
#: The families whose encoders `--inputs` counts at their default size: clip, VAE class (diffusers' default config
#: is the family's), text encoder (T5-XXL / UMT5-XXL: 24 layers of 4096, gated FFN 10240, 64 heads) and text length.
ENCODED = {
    "CogVideoX-2B": {"clip": (49, 480, 720), "vae": "AutoencoderKLCogVideoX", "vocab": 32128, "text_tokens": 226},
    "Wan2.1-T2V-1.3B": {"clip": (81, 480, 832), "vae": "AutoencoderKLWan", "vocab": 256384, "text_tokens": 512},
}


def counted_flops(module_fn) -> float:
    """FLOPs `torch.utils.flop_counter` counts for `module_fn()` run on the meta device (no weights, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        module_fn()
    return float(counter.get_total_flops())


def encoder_share(name: str) -> dict:
    """The FLOPs of one sample's VAE encoding and prompt encoding at `name`'s default size (counted on the meta
    device, full-size architectures), against its transformer's forward and backward (`analytic_share`), and the
    bytes `ModelInputs` stores per clip in float16 (the posterior's mean and log-variance, the prompt embeddings)."""
    import diffusers
    from transformers import T5Config, T5EncoderModel

    encoded = ENCODED[name]
    frames, height, width = encoded["clip"]
    text = T5Config(
        vocab_size=encoded["vocab"],
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
    )

    def vae():
        latents = getattr(diffusers, encoded["vae"])().encode(torch.empty(1, 3, frames, height, width)).latent_dist
        shapes["moments"] = (2 * latents.mean.shape[1], *latents.mean.shape[2:])

    shapes = {}
    vae_flops = counted_flops(vae)
    text_flops = counted_flops(lambda: T5EncoderModel(text)(torch.zeros(1, encoded["text_tokens"], dtype=torch.long)))
    step = analytic_share(name, FAMILIES[name])["step_flops"]
    moments = 1
    for size in shapes["moments"]:
        moments *= size
    return {
        "family": name,
        "clip": f"{frames} x {height} x {width}",
        "step_flops": step,
        "vae_encoder_flops": vae_flops,
        "text_encoder_flops": text_flops,
        "share_removed": (vae_flops + text_flops) / (step + vae_flops + text_flops),
        "moments_shape": list(shapes["moments"]),
        "bytes_per_clip": 2 * (moments + encoded["text_tokens"] * 4096),
    }


def reduced_cogvideox(args, *, encoders: bool) -> tuple:
    """`--inputs`' CogVideoX-shaped adapter at reduced width (random weights): a transformer `args.inputs_width` wide
    with `args.layers` blocks, and with `encoders` a T5 as wide (12 layers) and a VAE of widths (64, 128, 128, 256);
    and a batch of clips and captions."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from diffusers_tsa.adapters.cogvideox import CogVideoXAdapter, CogVideoXSpec
    from diffusers_tsa.testing import tiny_tokenizer

    torch.manual_seed(0)
    width, tokens, frames, height, pixels = args.inputs_width, 226, args.frames, args.height, args.width
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=width // 64,
        attention_head_dim=64,
        in_channels=16,
        out_channels=16,
        text_embed_dim=width,
        time_embed_dim=512,
        num_layers=args.layers,
        sample_height=height // 8,
        sample_width=pixels // 8,
        sample_frames=frames,
        max_text_seq_length=tokens,
    )
    components = {"tokenizer": None, "text_encoder": None, "vae": None}
    if encoders:
        text = T5Config(
            vocab_size=1000,
            d_model=width,
            d_kv=64,
            d_ff=width * 5 // 2,
            num_layers=12,
            num_heads=width // 64,
            feed_forward_proj="gated-gelu",
        )
        components = {
            "tokenizer": tiny_tokenizer(),
            "text_encoder": T5EncoderModel(text).requires_grad_(False),
            "vae": AutoencoderKLCogVideoX(block_out_channels=(64, 128, 128, 256)).requires_grad_(False),
        }
    spec = CogVideoXSpec(
        pretrained_model_name_or_path="",
        num_blocks=args.layers,
        hidden_size=width,
        min_depth=1,
        max_text_seq_length=tokens,
    )
    adapter = CogVideoXAdapter(
        spec, transformer=transformer.requires_grad_(False), scheduler=CogVideoXDDIMScheduler(), **components
    )
    clips = torch.rand(args.batch_size, frames, 3, height, pixels) * 2 - 1
    captions = ["a red ball is thrown hard, falls and bounces on the floor"] * args.batch_size
    return adapter, {"videos": clips, "captions": captions}


def inputs_worker(config: str, args) -> None:
    """One `--inputs` configuration: one LoRA step of `reduced_cogvideox` on a clip and caption encoded at each step
    (`encoders online`: VAE and T5 in memory) or on the precomputed posterior and embeddings in float16 that
    `args.inputs_cache` holds (`precomputed inputs`: neither encoder is ever built in the process); prints a JSON
    line."""
    from safetensors.torch import load_file

    from diffusers_tsa.training import AlignedTransformer, model_inputs

    device, online = torch.device(args.device), config == "encoders online"
    adapter, batch = reduced_cogvideox(args, encoders=online)
    if not online:  # as `TrainingClips` hands a `ModelInputs` row: float16, not a float32 copy
        stored = load_file(args.inputs_cache)
        batch = {"latent_moments": stored["latent_moments"], "text": {"prompt_embeds": stored["prompt_embeds"]}}
    for module in (adapter.text_encoder, adapter.vae, adapter.transformer):
        if module is not None:
            module.to(device)
    adapter.add_lora(64, 64)
    model = AlignedTransformer(adapter, None).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step():
        latents, conditioning = model_inputs(adapter, batch, dtype=torch.float32)
        terms, _ = model(latents, conditioning)
        sum(terms.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(json.dumps({"config": config, **measure(step, device, args.repeats)}))


def precompute_inputs(args, path: Path) -> None:
    """What `ModelInputs` stores for `reduced_cogvideox`'s batch, in float16, saved to `path` (safetensors)."""
    from safetensors.torch import save_file

    adapter, batch = reduced_cogvideox(args, encoders=True)
    save_file(
        {
            "latent_moments": adapter.latent_moments(batch["videos"]).half().contiguous(),
            "prompt_embeds": adapter.text_encoder_outputs(batch["captions"])["prompt_embeds"].half().contiguous(),
        },
        str(path),
    )


def measure(step, device: torch.device, repeats: int) -> dict:
    """The median time of `repeats` calls of `step` after a warm-up one, and the process's peak memory."""

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(1 + repeats):  # the first step allocates the optimizer state and warms up
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {"seconds": statistics.median(times[1:]), "peak_mib": peak / 2**20}


def worker(family: str, config: str, args) -> None:
    """One configuration of one family in this process: builds the modules, times optimizer steps, prints a JSON
    line."""
    from transformers import VideoMAEConfig, VideoMAEModel

    from diffusers_tsa import AlignmentProjector, teacher_targets
    from diffusers_tsa.teachers import TeacherInput, VideoMAETeacher
    from diffusers_tsa.training import AlignedTransformer, Alignment, AlignmentConfig

    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = args.batch_size
    adapter, latents, text = family_adapter(family, args, device, batch)
    spec, transformer = adapter.spec, adapter.transformer
    student_grid = spec.token_grid(args.frames, args.height, args.width)
    teacher_input = TeacherInput.for_clip(args.frames, args.height, args.width, patch_size=16, tubelet_size=2)
    vit_b = VideoMAEConfig(
        image_size=[teacher_input.height, teacher_input.width],
        num_frames=teacher_input.num_frames,
        patch_size=16,
        tubelet_size=2,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        use_mean_pooling=True,
    )
    teacher = VideoMAETeacher(VideoMAEModel(vit_b), name="vit-b-random", input=teacher_input).to(device)

    clips = torch.rand(batch, args.frames, 3, args.height, args.width, device=device) * 2 - 1
    data = {"videos": clips}
    alignment = None
    if config != "none":
        online = config == "m-tsa online"
        if not online:
            data["teacher_features"], data["motion_mask"] = teacher_targets(teacher, clips, mask_ratio=0.2)
        settings = AlignmentConfig(
            loss="m-tsa",
            depth=spec.default_depth,
            student_grid=student_grid,
            student_width=spec.hidden_size,
            teacher_grid=teacher.grid,
            teacher_width=768,
            projector_hidden_dim=PROJECTOR_HIDDEN,
            teacher=teacher.geometry if online else None,
        )
        projector = AlignmentProjector(
            spec.hidden_size, 768, student_grid=student_grid, teacher_grid=teacher.grid, hidden_dim=PROJECTOR_HIDDEN
        ).to(device)
        extractor = adapter.feature_extractor(transformer, settings.depth)
        alignment = Alignment(settings, projector, extractor, teacher if online else None)
    model = AlignedTransformer(adapter, alignment).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step():
        terms, student = model(latents, text)
        loss = sum(terms.values())
        if alignment is not None:
            loss = loss + alignment.config.weight * alignment.loss(student, data)  # a constant lambda
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    print(json.dumps({"family": family, "config": config, **measure(step, device, args.repeats)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--families", nargs="+", default=list(MEASURED), choices=MEASURED, help="Families to measure.")
    parser.add_argument("--layers", type=int, default=4, help="Transformer blocks (CogVideoX-2B has 30).")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--inputs",
        action="store_true",
        help="Measure the frozen encoders at each step against precomputed inputs instead (reduced width), and count "
        "the share of a step they take at CogVideoX-2B's and Wan 2.1's default sizes.",
    )
    parser.add_argument("--inputs_width", type=int, default=1024, help="--inputs: transformer and T5 width (1024).")
    parser.add_argument("--inputs_cache", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("FAMILY", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return inputs_worker(args.worker[1], args) if args.inputs else worker(*args.worker, args)
    if args.inputs:
        return inputs_main(args)

    rows = []
    for family in args.families:
        base = None
        for config in CONFIGS:
            row = run_worker(family, config)
            base = base or row
            row["time_vs_none"] = row["seconds"] / base["seconds"]
            row["extra_memory_mib"] = row["peak_mib"] - base["peak_mib"]
            rows.append(row)
            print(row, flush=True)
    analytic = [analytic_share(name, family) for name, family in FAMILIES.items()]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    setting = {k: getattr(args, k) for k in ("layers", "frames", "height", "width", "batch_size", "repeats")}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"step_{args.device}.json"
    out.write_text(
        json.dumps(
            {
                "device": device_name,
                "torch": torch.__version__,
                "measured_setting": setting,
                "measured": rows,
                "analytic": analytic,
            },
            indent=2,
        )
    )
    lines = [
        f"One optimizer step on {device_name}, torch {torch.__version__}: each family's real width, {args.layers} "
        f"blocks, {args.frames} x {args.height} x {args.width}, batch {args.batch_size}.",
        "",
        "| family | alignment | time (s) | time / none | peak memory (MiB) | extra memory (MiB) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['family']} | {r['config']} | {r['seconds']:.2f} | {r['time_vs_none']:.3f} | {r['peak_mib']:.0f} | "
            f"{r['extra_memory_mib']:.0f} |"
            for r in rows
        ),
        "",
        "Analytic, per training sample at each family's default size (ViT-B teacher, 20 % M-TSA queries):",
        "",
        "| family | setting | step FLOPs | projector | M-TSA loss | online teacher | share, precomputed "
        "| share, online |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {a['family']} | {a['setting'].split(', ViT-B')[0]} | {a['step_flops']:.2e} | {a['projector_flops']:.2e} "
            f"| {a['m_tsa_loss_flops']:.2e} | {a['teacher_online_flops']:.2e} | {100 * a['share_precomputed']:.2f} % "
            f"| {100 * a['share_online']:.2f} % |"
            for a in analytic
        ),
    ]
    write_table(out, lines)


def write_table(out: Path, lines: list[str]) -> None:
    """The Markdown table beside the JSON results `out`, printed too."""
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"Wrote {out} and {out.with_suffix('.md')}")


def run_worker(family: str, config: str, *flags: str) -> dict:
    """`--worker family config` in a fresh process (for honest peak memory): its JSON line."""
    command = [sys.executable, __file__, *sys.argv[1:], *flags, "--worker", family, config]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{family}, {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def inputs_main(args) -> None:
    """`--inputs`: both configurations measured, the encoders' share counted; written to `inputs_<device>`."""
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "inputs.safetensors"
        precompute_inputs(args, cache)
        rows = [run_worker("cogvideox", config, "--inputs_cache", str(cache)) for config in INPUT_CONFIGS]
    for row in rows:
        row["time_vs_online"] = row["seconds"] / rows[0]["seconds"]
        print(row, flush=True)
    counted = [encoder_share(name) for name in ENCODED]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    setting = {
        k: getattr(args, k) for k in ("inputs_width", "layers", "frames", "height", "width", "batch_size", "repeats")
    }
    out = RESULTS / f"inputs_{args.device}.json"
    RESULTS.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "device": device_name,
                "torch": torch.__version__,
                "measured_setting": setting,
                "measured": rows,
                "counted": counted,
            },
            indent=2,
        )
    )
    lines = [
        f"One LoRA step on {device_name}, torch {torch.__version__}: a CogVideoX-shaped pipeline at reduced width "
        f"(transformer and T5 {args.inputs_width} wide, {args.layers} blocks; 12 T5 layers; VAE (64, 128, 128, 256)), "
        f"{args.frames} x {args.height} x {args.width}, batch {args.batch_size}, 226 text tokens.",
        "",
        "| inputs | time (s) | time / online | peak memory (MiB) |",
        "|---|---|---|---|",
        *(f"| {r['config']} | {r['seconds']:.2f} | {r['time_vs_online']:.3f} | {r['peak_mib']:.0f} |" for r in rows),
        "",
        "Counted (FLOPs of the full-size architectures on the meta device), per training sample at the default size:",
        "",
        "| family | clip | transformer fwd + bwd | VAE encoder | text encoder | share of the step removed | stored per "
        "clip (float16) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {c['family']} | {c['clip']} | {c['step_flops']:.2e} | {c['vae_encoder_flops']:.2e} | "
            f"{c['text_encoder_flops']:.2e} | {100 * c['share_removed']:.1f} % | {c['bytes_per_clip'] / 2**20:.1f} MiB "
            f"(moments {tuple(c['moments_shape'])}) |"
            for c in counted
        ),
    ]
    write_table(out, lines)


if __name__ == "__main__":
    main()
