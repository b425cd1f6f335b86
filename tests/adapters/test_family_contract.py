"""The contract every model family keeps, checked on each family's tiny offline checkpoint: the hooked block's tokens
on the token grid carrying gradients into the LoRA before it, the LoRA file round trip, the model card's code run as
written, and `train_text_to_video_tsa.py` end to end (a LoRA run reloaded by the stock pipeline, a resumed run ending
bit-identical, a full fine-tune reloaded as a stock transformer) with `eval/generate.py` on its output.

Each family is one `TinyFamily` of `FAMILIES` (as finetrainers' `SFTTrainerFastTestsMixin` and diffusers'
`PipelineTesterMixin` run one set of tests over every model); its own rules (Wan's experts, LTX-Video's packing,
NOVA's layout, CogVideoX 1.5's padding...) are tested in its own file. Each family's training runs are made once per
module (`lora_run`, `full_run`) and inspected by several tests; its tests stay on one xdist worker
(`pytest -n 2 --dist loadgroup`) so that they share them.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from diffusers import (
    CogVideoXPipeline,
    HunyuanVideo15Pipeline,
    Kandinsky5T2VPipeline,
    LTX2Pipeline,
    LTXPipeline,
    SanaVideoPipeline,
    WanPipeline,
)
from einops import rearrange
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from diffusers_tsa import AlignmentProjector
from diffusers_tsa.adapters import ADAPTERS, GenerationSettings, ModelAdapter, load_spec
from diffusers_tsa.adapters.ltx2 import LTX2Adapter
from diffusers_tsa.adapters.nova import load_nova_lora
from diffusers_tsa.errors import ModelLayoutError
from diffusers_tsa.testing import (
    tiny_cogvideox_components,
    tiny_kandinsky5_components,
    tiny_ltx2_components,
    tiny_ltx_video_components,
    tiny_sana_video_components,
    tiny_videomae,
    tiny_wan_components,
    write_test_dataset,
)
from diffusers_tsa.testing.hunyuan_video15 import tiny_hunyuan_video15_components
from diffusers_tsa.testing.model_card import REPO_ID, card_code, run_card_code, write_cards
from diffusers_tsa.testing.nova import tiny_nova_checkpoint


SCRIPT = Path(__file__).resolve().parents[2] / "train_text_to_video_tsa.py"
LORA_FILE = "pytorch_lora_weights.safetensors"
PROJECTOR = Path("alignment_projector") / "diffusion_pytorch_model.safetensors"
PROMPT = "a white square moves right"
PROMPTS = ["a red ball falls", PROMPT]
DIFFUSERS_LORA_TARGETS = ("to_k", "to_out.0", "to_q", "to_v")
DIFFUSERS_CARD = ("pipe.load_lora_weights(",)  # a LoRA run's card loads it with the pipeline's own loader


def diffusers_load_lora(pipe, folder: Path) -> None:
    pipe.load_lora_weights(folder)  # no set_adapters: rank and alpha come from the file's metadata


def transformer_load_lora(pipe, folder: Path) -> None:
    pipe.transformer.load_lora_adapter(folder, weight_name=LORA_FILE)  # a pipeline without load_lora_weights


def nova_load_lora(pipe, folder: Path) -> None:
    load_nova_lora(pipe.transformer, folder)  # NOVAPipeline has no load_lora_weights


def as_received(received: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The next block's input, which the diffusers families' blocks take as the adapter's tokens `(B, F*H*W, D)`."""
    return received


def nova_image_tokens(received: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """NOVA's next `image_encoder` block input `(B*F, P + H*W, D)` (P video-encoder tokens first) as `(B, F*H*W, D)`."""
    frames, height, width = grid
    return rearrange(received[:, -height * width :], "(b f) n d -> b (f n) d", f=frames)


@dataclass(frozen=True)
class TinyFamily:
    """How one family's tiny checkpoint is made and trained, and what the contract expects of it.

    Args:
        name (`str`): the test id.
        family (`str`): the spec's family (the log's "Model family", the card's tag).
        clip (`tuple[int, int, int]`): frames, height and width of the clips it trains and generates.
        grid (`tuple[int, int, int]`): the student token grid of `clip`.
        teacher_grid (`tuple[int, int, int]`): the grid of the tiny VideoMAE teacher with `flags`.
        lora_layers (`int`): LoRA layers `add_lora` adds.
        lora_modules (`tuple[str, ...]`): the module paths (prefixes) under which they all are.
        pipeline (`Callable`, *optional*): the stock pipeline built from tiny components; `None` for NOVA.
        nova (`str`, *optional*): `"double"` or `"real"`: a tiny NOVA checkpoint (`tiny_nova_checkpoint`).
        blocks (`str`, defaults to `"transformer_blocks"`): the block list `depth` counts in.
        depth (`int`, defaults to 1): the aligned block (`--alignment_depth`).
        lora_targets (`tuple[str, ...]`): the LoRA's target modules, sorted.
        next_block_tokens (`Callable`): the adapter's tokens, from what the block after the hooked one receives.
        max_sequence_length (`int`, *optional*): text tokens for training and generation; `None` is the family's.
        teacher_kwargs (`dict`): `tiny_videomae` arguments.
        flags (`tuple[str, ...]`): the training script's family-specific flags.
        card (`tuple[str, ...]`): what a LoRA run's model card holds for this family beyond the common lines.
        transformer_config (`dict`): what a full fine-tune's saved transformer config holds.
        dynamic_cfg_refusal (`str`, *optional*): how `--use_dynamic_cfg` is refused, where it is.
        validation_steps (`int`, *optional*): `--validation_steps` of the LoRA run (videos and the alignment probe
            during training); `None` makes only the final video.
        load_lora (`Callable`): how a user loads a run's LoRA into the stock pipeline.
        marks (`tuple`): pytest marks of its tests.
    """

    name: str
    family: str
    clip: tuple[int, int, int]
    grid: tuple[int, int, int]
    teacher_grid: tuple[int, int, int]
    lora_layers: int
    lora_modules: tuple[str, ...]
    pipeline: Callable | None = None
    nova: str | None = None
    blocks: str = "transformer_blocks"
    depth: int = 1
    lora_targets: tuple[str, ...] = DIFFUSERS_LORA_TARGETS
    next_block_tokens: Callable = as_received
    max_sequence_length: int | None = 16
    teacher_kwargs: dict = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    card: tuple[str, ...] = DIFFUSERS_CARD
    transformer_config: dict = field(default_factory=dict)
    dynamic_cfg_refusal: str | None = None
    validation_steps: int | None = None
    load_lora: Callable = diffusers_load_lora
    marks: tuple = ()

    @property
    def settings(self) -> GenerationSettings:
        """Two denoising steps of a `clip`-sized video."""
        return GenerationSettings(*self.clip, num_inference_steps=2, max_sequence_length=self.max_sequence_length)

    @contextlib.contextmanager
    def checkpoint(self, root: Path):
        """Writes the tiny checkpoint under `root`; yields its path, the environment and the launcher of a process
        that uses it (for NOVA, its `diffnext` is importable here while the block runs)."""
        if self.nova:
            with tiny_nova_checkpoint(root, self.nova) as nova:
                yield nova.path, nova.env(), nova.launcher
            return
        self.pipeline().save_pretrained(root / "base")
        yield root / "base", {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}, ()


REAL_NOVA_MARKS = (
    pytest.mark.skipif(
        importlib.util.find_spec("diffnext") is None,
        reason="NOVA's diffnext is not installed (pip install from github.com/baaivision/NOVA)",
    ),
    pytest.mark.optional_suite("NOVA's real diffnext package (install it as the README's NOVA section says)"),
)
TEACHER_32X48 = ("--teacher_num_frames", "8", "--teacher_height", "32", "--teacher_width", "48")
NOVA = {
    "family": "nova",
    "clip": (9, 64, 96),  # latents 3 x 8 x 12, image tokens 3 x 4 x 6, 6 video-encoder tokens per frame
    "grid": (3, 4, 6),
    "teacher_grid": (4, 2, 3),
    "lora_layers": (2 + 4) * 2,  # (video + image encoder blocks) x (qkv, proj)
    "lora_modules": ("video_encoder.blocks.", "image_encoder.blocks."),
    "blocks": "image_encoder.blocks",
    "depth": 3,  # the first 2 of its 4 image-encoder blocks see only the visible tokens
    "lora_targets": ("attn.proj", "attn.qkv"),
    "next_block_tokens": nova_image_tokens,
    "max_sequence_length": None,  # NOVA's prompts have a fixed length
    "teacher_kwargs": {"image_size": (32, 48)},
    "flags": ("--model_family", "nova", *TEACHER_32X48),
    "card": ("load_nova_lora(pipe.transformer",),
    "dynamic_cfg_refusal": "not supported by NOVA",
    "load_lora": nova_load_lora,
}
FAMILIES = [
    TinyFamily(
        name="cogvideox",
        family="cogvideox",
        pipeline=lambda: CogVideoXPipeline(**tiny_cogvideox_components()),
        clip=(9, 96, 144),  # latents 3 x 12 x 18, tokens 3 x 6 x 9
        grid=(3, 6, 9),
        teacher_grid=(4, 2, 3),
        lora_layers=2 * 4,  # blocks x (to_q, to_k, to_v, to_out.0) of the joint attention
        lora_modules=("transformer_blocks.",),
    ),
    TinyFamily(
        name="cogvideox15",
        family="cogvideox",
        pipeline=lambda: CogVideoXPipeline(**tiny_cogvideox_components(patch_size_t=2)),
        clip=(17, 96, 144),  # latents 5 x 12 x 18, padded to 6, in pairs: tokens 3 x 6 x 9
        grid=(3, 6, 9),
        teacher_grid=(8, 2, 3),  # 16 frames at 32x48
        lora_layers=2 * 4,
        lora_modules=("transformer_blocks.",),
        teacher_kwargs={"num_frames": 16},
        transformer_config={"patch_size_t": 2},
    ),
    TinyFamily(
        name="wan",
        family="wan",
        pipeline=lambda: WanPipeline(**tiny_wan_components()),
        clip=(9, 64, 96),  # latents 3 x 8 x 12, tokens 3 x 4 x 6
        grid=(3, 4, 6),
        teacher_grid=(4, 2, 3),
        lora_layers=2 * 2 * 4,  # blocks x (attn1, attn2) x (to_q, to_k, to_v, to_out.0)
        lora_modules=("blocks.",),
        blocks="blocks",
        flags=TEACHER_32X48,
        dynamic_cfg_refusal="WanPipeline has no dynamic guidance",
    ),
    TinyFamily(
        name="ltx_video",
        family="ltx_video",
        pipeline=lambda: LTXPipeline(**tiny_ltx_video_components()),
        clip=(9, 64, 96),  # latents and tokens 2 x 2 x 3 (32x / 8x VAE, patch 1)
        grid=(2, 2, 3),
        teacher_grid=(4, 2, 3),  # time x4 after latent frame 0
        lora_layers=2 * 2 * 4,  # blocks x (self, cross attention) x (q, k, v, out)
        lora_modules=("transformer_blocks.",),
        flags=(*TEACHER_32X48, "--validation_fps", "25"),
        card=(*DIFFUSERS_CARD, "frame_rate=25"),
        dynamic_cfg_refusal="not supported by LTX-Video",
        validation_steps=1,
    ),
    TinyFamily(
        name="kandinsky5",
        family="kandinsky5",
        pipeline=lambda: Kandinsky5T2VPipeline(**tiny_kandinsky5_components()),
        clip=(9, 32, 48),  # latents 3 x 4 x 6, tokens 3 x 2 x 3 (patch 1 x 2 x 2): the cheapest VAE input
        grid=(3, 2, 3),
        teacher_grid=(4, 2, 3),
        lora_layers=(1 + 2 * 2) * 4,  # (text block's attention + visual blocks x (self, cross)) x (q, k, v, out)
        lora_modules=("text_transformer_blocks.", "visual_transformer_blocks."),
        blocks="visual_transformer_blocks",
        lora_targets=("cross_attention.out_layer", "self_attention.out_layer", "to_key", "to_query", "to_value"),
        flags=TEACHER_32X48,
        dynamic_cfg_refusal="not supported by Kandinsky 5",
    ),
    TinyFamily(
        name="ltx2",
        family="ltx2",
        pipeline=lambda: LTX2Pipeline(**tiny_ltx2_components()),
        clip=(9, 64, 96),  # latents and tokens 2 x 2 x 3 (32x / 8x VAE, patch 1)
        grid=(2, 2, 3),
        teacher_grid=(4, 2, 3),  # time x4 after latent frame 0
        lora_layers=2 * 2 * 4,  # blocks x (video self, text cross attention) x (q, k, v, out); no audio stream
        lora_modules=("transformer_blocks.",),
        lora_targets=tuple(sorted(LTX2Adapter.lora_target_modules)),
        flags=TEACHER_32X48,
        card=(*DIFFUSERS_CARD, "frame_rate=24"),
        dynamic_cfg_refusal="not supported by LTX-2",
    ),
    TinyFamily(
        name="hunyuan_video15",
        family="hunyuan_video15",
        pipeline=lambda: HunyuanVideo15Pipeline(**tiny_hunyuan_video15_components()),
        clip=(9, 32, 48),  # latents and tokens 3 x 2 x 3 (x16 / x4 VAE, patch 1)
        grid=(3, 2, 3),
        teacher_grid=(4, 2, 3),
        lora_layers=(2 + 1) * 4,  # (dual-stream blocks + the text's token-refiner block) x (q, k, v, out)
        lora_modules=("transformer_blocks.", "context_embedder."),
        flags=TEACHER_32X48,
        card=("pipe.transformer.load_lora_adapter(", "pipe.tokenizer_max_length = 16"),
        dynamic_cfg_refusal="HunyuanVideo15Pipeline has no dynamic guidance",
        load_lora=transformer_load_lora,
    ),
    TinyFamily(
        name="sana_video",
        family="sana_video",
        pipeline=lambda: SanaVideoPipeline(**tiny_sana_video_components()),
        clip=(9, 32, 64),  # latents 3 x 4 x 8 (Wan 2.1 VAE), tokens 3 x 2 x 4 (patch 1 x 2 x 2); sides of 32k
        grid=(3, 2, 4),
        teacher_grid=(4, 2, 3),
        lora_layers=2 * 2 * 4,  # blocks x (linear self-attention, cross-attention) x (q, k, v, out)
        lora_modules=("transformer_blocks.",),
        flags=TEACHER_32X48,
        dynamic_cfg_refusal="SanaVideoPipeline has no dynamic guidance",
    ),
    TinyFamily(name="nova", nova="double", **NOVA),
    TinyFamily(name="nova_real", nova="real", marks=REAL_NOVA_MARKS, **NOVA),
]


@dataclass(frozen=True)
class Tiny:
    """A family's tiny checkpoint, teacher and clips on disk, and how a launched process uses them."""

    family: TinyFamily
    root: Path
    base: Path
    env: dict
    launcher: tuple[str, ...]

    def adapter(self) -> ModelAdapter:
        """The family's adapter on the tiny checkpoint, its transformer in train mode (NOVA's forward is its
        training step in train mode), as the training loop holds it."""
        spec = load_spec(self.base)
        model = ADAPTERS[spec.family].from_pretrained(spec)
        model.transformer.train()
        return model

    def generate(self, pipe) -> np.ndarray:
        """One video of `PROMPT` with the family's `settings`, seed 0."""
        generator = torch.Generator().manual_seed(0)
        return load_spec(self.base).generate(pipe, PROMPT, self.family.settings, generator)


@pytest.fixture(
    scope="module",
    params=[pytest.param(f, id=f.name, marks=[pytest.mark.xdist_group(f.name), *f.marks]) for f in FAMILIES],
)
def tiny(request, tmp_path_factory):
    """The family's tiny checkpoint, its tiny VideoMAE teacher and two clips, saved to disk."""
    family = request.param
    root = tmp_path_factory.mktemp(family.name)
    tiny_videomae(**family.teacher_kwargs).save_pretrained(root / "teacher")
    write_test_dataset(root / "data", num_clips=2, caption=PROMPT, num_frames=max(12, family.clip[0]))
    with family.checkpoint(root) as (base, env, launcher):
        yield Tiny(family, root, base, env, launcher)


def clips(family: TinyFamily, batch: int = 2) -> torch.Tensor:
    """Random clips `(B, T, C, H, W)` in [-1, 1] of the family's size."""
    frames, height, width = family.clip
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --- The adapter, in this process ------------------------------------------------------------------------------------


def test_the_hooked_block_gives_the_next_blocks_input_on_the_grid_and_trains_the_lora_before_it(tiny):
    family, model = tiny.family, tiny.adapter()
    model.add_lora(4, 4)
    latents, conditioning = model.encode_videos(clips(family)), model.encode_prompts(PROMPTS)
    received = []

    def record(module, args, kwargs):
        received.append((kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).detach().clone())

    handle = model.transformer.get_submodule(family.blocks)[family.depth].register_forward_pre_hook(
        record, with_kwargs=True
    )
    extractor = model.feature_extractor(model.transformer, family.depth)
    with extractor.capture() as captured:
        terms = model.diffusion_loss(model.transformer, latents, conditioning)
    handle.remove()
    tokens = model.alignment_tokens(captured.hidden_states, batch_size=2)
    assert model.spec.token_grid(*family.clip) == family.grid
    assert tokens.shape == (2, prod(family.grid), model.spec.hidden_size)  # (B, F*H*W, D): video tokens only
    # The hooked block's output, as the next block receives it, untouched by anything after the hook.
    assert torch.equal(tokens.detach(), family.next_block_tokens(received[0], family.grid))

    projector = AlignmentProjector(
        model.spec.hidden_size, 32, student_grid=family.grid, teacher_grid=family.teacher_grid, hidden_dim=16
    )
    projected = projector(tokens)
    assert projected.shape == (2, *family.teacher_grid, 32)
    projected.square().mean().backward(retain_graph=True)
    grads = {name: p.grad for name, p in model.transformer.named_parameters() if "lora_B" in name}
    assert len(grads) == family.lora_layers and all(name.startswith(family.lora_modules) for name in grads)
    after = tuple(f"{family.blocks}.{i}." for i in range(family.depth, model.spec.num_blocks))
    for name, grad in grads.items():  # the LoRA before the hooked block gets gradients, the LoRA after it none
        assert grad is None if name.startswith(after) else (grad is not None and grad.abs().sum() > 0), name
    sum(terms.values()).backward()  # and the diffusion loss still trains through the same graph
    extractor.remove()


def test_a_lora_round_trips_through_its_file_into_a_resumed_run_and_a_stock_pipeline(tiny, tmp_path):
    family, model = tiny.family, tiny.adapter()
    model.add_lora(4, 8)
    targets = {name for name, module in model.transformer.named_modules() if hasattr(module, "lora_A")}
    assert targets and all(name.endswith(family.lora_targets) for name in targets)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.save_lora_weights(tmp_path / "lora", model.transformer)
    trained = get_peft_model_state_dict(model.transformer)

    resumed = tiny.adapter()
    resumed.add_lora(4, 8)
    resumed.load_lora_weights(tmp_path / "lora", resumed.transformer)
    loaded = get_peft_model_state_dict(resumed.transformer)
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)

    pipe = model.spec.pipeline_class.from_pretrained(tiny.base)
    family.load_lora(pipe, tmp_path / "lora")
    ((adapter_name, config),) = pipe.transformer.peft_config.items()
    assert (config.r, config.lora_alpha, tuple(sorted(config.target_modules))) == (4, 8, family.lora_targets)
    stock = get_peft_model_state_dict(pipe.transformer, adapter_name=adapter_name)
    assert stock.keys() == trained.keys() and all(torch.equal(stock[k], trained[k]) for k in trained)

    # Another run's LoRA is refused: a file without this run's weights, an adapter on fewer modules than the file's.
    (tmp_path / "other").mkdir()
    save_file({"transformer.proj_out.lora_A.weight": torch.zeros(4, 16)}, tmp_path / "other" / LORA_FILE)
    n = 2 * family.lora_layers
    with pytest.raises(
        ModelLayoutError, match=rf"does not hold this run's LoRA \({n} weights\): {n} missing .* 1 unex"
    ):
        resumed.load_lora_weights(tmp_path / "other", resumed.transformer)
    other, first = tiny.adapter(), family.lora_targets[0]
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=[first]), other.transformer)
    kept = 2 * sum(name.endswith(first) for name in targets)
    with pytest.raises(ModelLayoutError, match=rf"LoRA \({kept} weights\): 0 missing .* {n - kept} unexpected"):
        other.load_lora_weights(tmp_path / "lora", other.transformer)


# --- The training script ---------------------------------------------------------------------------------------------


#: What `accelerate launch --cpu --num_processes 1 --mixed_precision no --dynamo_backend no` tells the script, without
#: the launcher's own process (`test_train_script.py` launches the script with it, on one and two processes).
ONE_CPU_PROCESS = {"ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO"}


def train(tiny: Tiny, output_dir: Path, *flags: str) -> str:
    """`python train_text_to_video_tsa.py` as one CPU process, offline, with M-TSA against the tiny teacher at
    block `depth`, a rank-4 LoRA and a small projector; returns the log."""
    family = tiny.family
    frames, height, width = family.clip
    text = ("--max_sequence_length", str(family.max_sequence_length)) if family.max_sequence_length else ()
    command = [
        sys.executable, *tiny.launcher, str(SCRIPT),
        "--pretrained_model_name_or_path", str(tiny.base), "--teacher_model_name_or_path", str(tiny.root / "teacher"),
        "--instance_data_root", str(tiny.root / "data"), "--caption_column", "prompts.txt",
        "--video_column", "videos.txt", "--height", str(height), "--width", str(width),
        "--max_num_frames", str(frames), *text, "--alignment_loss", "m-tsa", "--alignment_depth", str(family.depth),
        "--projector_hidden_dim", "16", "--rank", "4", "--lora_alpha", "4", "--train_batch_size", "2",
        "--learning_rate", "1e-2", "--lr_warmup_steps", "0", "--seed", "0", "--report_to", "none",
        "--validation_num_inference_steps", "2", "--output_dir", str(output_dir), *family.flags, *flags,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**tiny.env, **ONE_CPU_PROCESS}, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def lora_run(tiny, tmp_path_factory):
    """Two LoRA steps with a checkpoint after each and a final validation video (and the family's
    `validation_steps`)."""
    out = tmp_path_factory.mktemp("lora") / "out"
    steps = tiny.family.validation_steps
    during = ("--validation_steps", str(steps)) if steps else ()
    flags = ("--max_train_steps", "2", "--checkpointing_steps", "1", "--validation_prompt", PROMPT, *during)
    return out, train(tiny, out, *flags)


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory):
    """One full fine-tuning step, with gradient checkpointing."""
    out = tmp_path_factory.mktemp("full") / "out"
    flags = ("--training_mode", "full", "--learning_rate", "1e-3", "--gradient_checkpointing")
    return out, train(tiny, out, *flags, "--max_train_steps", "1", "--checkpointing_steps", "100")


@pytest.mark.slow
def test_a_lora_run_reloads_in_a_stock_pipeline_and_changes_its_output(tiny, lora_run):
    out, log = lora_run
    family, spec = tiny.family, load_spec(tiny.base)
    assert f"Model family = {family.family}, training mode = lora" in log and "Alignment = m-tsa" in log
    assert f"Student grid {family.grid} -> teacher grid {family.teacher_grid}" in log
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    assert all((out / name).is_file() for name in spec.saved_files("lora")) and (out / PROJECTOR).is_file()
    names = {p.name for p in (out / "validation").iterdir()}
    steps = range(family.validation_steps, 3, family.validation_steps) if family.validation_steps else ()
    videos = {"final-0-0.mp4", *(f"step-{step}-0-0.mp4" for step in steps)}
    probe = {"agreement.jsonl", "motion_mask.png", *(f"correspondence-{step}.png" for step in (0, *steps))}
    assert {name for name in names if name.endswith(".mp4")} == videos
    if steps:  # and the alignment probe, at the start and at each validation
        assert names == videos | probe
    assert iio.imread(out / "validation" / "final-0-0.mp4").shape == (*family.clip, 3)
    lora = load_file(out / LORA_FILE)
    assert lora and all(k.startswith(tuple(f"transformer.{m}" for m in family.lora_modules)) for k in lora)
    card = (out / "README.md").read_text()
    assert all(line in card for line in (f"- {family.family}", "- lora", f"import {spec.pipeline_class_name}"))
    assert all(line in card for line in family.card)

    pipe = spec.pipeline_class.from_pretrained(tiny.base)
    before = tiny.generate(pipe)
    family.load_lora(pipe, out)
    ((config),) = pipe.transformer.peft_config.values()
    assert (config.r, config.lora_alpha, tuple(sorted(config.target_modules))) == (4, 4, family.lora_targets)
    assert not np.allclose(tiny.generate(pipe), before, atol=1e-4)


@pytest.mark.slow
def test_a_run_resumed_from_a_checkpoint_ends_as_the_uninterrupted_one(tiny, lora_run, tmp_path):
    straight, _ = lora_run
    out = tmp_path / "out"
    shutil.copytree(straight / "checkpoint-1", out / "checkpoint-1")
    log = train(
        tiny, out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--resume_from_checkpoint", "latest"
    )
    assert f"Resuming from checkpoint {out / 'checkpoint-1'}" in log
    expected, resumed = load_file(straight / LORA_FILE), load_file(out / LORA_FILE)
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    first = load_file(out / "checkpoint-1" / LORA_FILE)
    assert any(not torch.equal(first[k], resumed[k]) for k in first)  # step 2 did train


@pytest.mark.slow
def test_a_full_fine_tune_reloads_as_a_stock_transformer_and_changes_the_output(tiny, full_run):
    out, log = full_run
    family, spec = tiny.family, load_spec(tiny.base)
    assert f"Model family = {family.family}, training mode = full" in log
    assert all((out / name).is_file() for name in spec.saved_files("full")) and (out / PROJECTOR).is_file()
    assert "- full" in (out / "README.md").read_text()
    trained = spec.transformer_class.from_pretrained(out, subfolder="transformer")
    assert all(trained.config[key] == value for key, value in family.transformer_config.items())
    base = spec.pipeline_class.from_pretrained(tiny.base)
    weights, untouched = trained.state_dict(), base.transformer.state_dict()
    assert weights.keys() == untouched.keys()  # the projector is not inside
    assert any(not torch.equal(weights[k], v) for k, v in untouched.items())

    before = tiny.generate(base)
    tuned = spec.pipeline_class.from_pretrained(tiny.base, transformer=trained)
    assert not np.allclose(tiny.generate(tuned), before, atol=1e-4)
    loaded = spec.load_trained_pipeline(transformer=out)  # the script's and eval's way
    assert all(torch.equal(v, weights[k]) for k, v in loaded.transformer.state_dict().items())
    resumed = tiny.adapter()  # and resuming a full run loads it in place
    resumed.load_transformer(out, resumed.transformer)
    assert all(torch.equal(v, weights[k]) for k, v in resumed.transformer.state_dict().items())


@pytest.mark.slow
def test_the_model_cards_code_runs_on_the_output_folder_and_on_the_hub_repo(tiny, lora_run, full_run, tmp_path):
    """The cards' code, as written, loads a LoRA and a full fine-tune into the family's stock pipeline (never through
    diffusers-tsa's `load_spec`), from the run's folder and from its Hub repository; so do the cards the training
    script wrote. One process runs them all."""
    cards = []
    for mode, (run, _) in (("lora", lora_run), ("full", full_run)):
        model = tiny.adapter()
        folder, cache = tmp_path / mode, tmp_path / "hub-cache"
        cards += write_cards(model, mode, tiny.family.settings, folder, repo_id=f"{REPO_ID}-{mode}", cache=cache)
        code = card_code(folder / "out" / "README.md")
        assert model.spec.pipeline_class_name in code and "load_spec" not in code
        cards.append((run / "README.md", tmp_path / f"{mode}-run"))
    run_card_code(cards, python=(sys.executable, *tiny.launcher), env=tiny.env, cache=tmp_path / "hub-cache")


@pytest.mark.slow
def test_eval_generate_makes_videos_with_the_runs_lora(tiny, lora_run, tmp_path, monkeypatch):
    """`eval/generate.py` loads base + LoRA through the family's spec, samples with the family's sampler, and the LoRA
    changes the videos; options the family lacks are refused naming the flag."""
    from diffusers_tsa.eval import generate as eval_generate
    from diffusers_tsa.eval.common import exit_on_user_error

    family, spec = tiny.family, load_spec(tiny.base)
    loaded, real_load = [], eval_generate.load_pipeline

    def spy(*args):
        loaded.append(real_load(*args))
        return loaded[-1]

    monkeypatch.setattr(eval_generate, "load_pipeline", spy)
    (tmp_path / "prompts.csv").write_text("caption,upsampled_caption\nA red ball falls.,a red ball falls\n")
    frames, height, width = family.clip
    text = ("--max_sequence_length", str(family.max_sequence_length)) if family.max_sequence_length else ()
    common = [
        "--benchmark", "videophy2", "--pretrained_model_name_or_path", str(tiny.base),
        "--prompts", str(tmp_path / "prompts.csv"), "--labels", "none", "--num_inference_steps", "2",
        "--num_frames", str(frames), "--height", str(height), "--width", str(width), *text,
        "--dtype", "fp32", "--device", "cpu",
    ]  # fmt: skip
    eval_generate.main([*common, "--output_dir", str(tmp_path / "base")])
    eval_generate.main([*common, "--lora", str(lora_run[0]), "--output_dir", str(tmp_path / "tuned")])
    base_pipe, tuned_pipe = loaded
    assert type(tuned_pipe) is spec.pipeline_class
    layers = [m for m in tuned_pipe.transformer.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(len(m.active_adapters) == 1 and not m.disable_adapters for m in layers)  # loaded, active
    assert not any(isinstance(m, BaseTunerLayer) for m in base_pipe.transformer.modules())
    base, tuned = (iio.imread(tmp_path / run / "videos" / "A_red_ball_falls.mp4") for run in ("base", "tuned"))
    assert base.shape == tuned.shape == (frames, height, width, 3)
    assert not np.array_equal(base, tuned)
    with (tmp_path / "tuned" / "manifest.csv").open(newline="") as f:
        assert [row["scheduler"] for row in csv.DictReader(f)] == [spec.sampler()]  # the family's own sampler
    if family.dynamic_cfg_refusal:
        with pytest.raises(SystemExit, match=f"error: --use_dynamic_cfg=True: {family.dynamic_cfg_refusal}"):
            exit_on_user_error(
                lambda: eval_generate.main([*common, "--use_dynamic_cfg", "--output_dir", str(tmp_path / "x")])
            )
