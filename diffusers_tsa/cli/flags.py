"""The flag groups the commands share, each declaring its flags, their defaults and help in one place.

Each `add_*_arguments` adds one group to an `argparse` parser; `diffusers_tsa.training.plan` reads the resulting
namespace into library objects. They import no torch, diffusers, transformers or datasets (the choices come from
`diffusers_tsa.choices` and the torch-free registries), so that a command's `--help` and argument errors come first.
"""

from __future__ import annotations

import argparse

from ..choices import (
    DEPRECATED_RESHAPE_MODES,
    MODEL_FAMILIES,
    PROJECTOR_HEADS,
    RESHAPE_MODES,
    TEACHER_FRAMES,
    VIDEO_BACKEND_NAMES,
    WEIGHTING_SCHEMES,
)
from ..data.columns import FEATURES_COLUMN
from ..loss_registry import ALIGNMENT_LOSSES, registered_options
from ..training.presets import ALIGNMENT_PRESETS
from .deprecation import DeprecatedNames


def add_student_arguments(
    parser: argparse.ArgumentParser, *, optional: str | None = None, protocol_vae: bool = False
) -> None:
    """The student, the base model every command reads the same way (`diffusers_tsa.training.plan.plan_student`):
    `--pretrained_model_name_or_path`, `--revision`, `--variant`, `--model_family`, its text length
    (`--max_sequence_length`), its task (`--image_to_video`, `--first_frame_conditioning_p`) and VAE memory savers
    (`--enable_slicing`, `--enable_tiling`).

    Args:
        parser (`argparse.ArgumentParser`): the command's parser.
        optional (`str`, *optional*): for a command that runs without a student, what happens then (a sentence
            added to the help of `--pretrained_model_name_or_path`, which is then not required).
        protocol_vae (`bool`, defaults to `False`): for a command that generates for an evaluation protocol: the
            VAE flags default to `None` (the family's protocol, `ModelSpec.protocol_vae_tiling`) and can be turned
            off (`--no-enable_tiling`), since tiling changes the pixels.
    """
    group = parser.add_argument_group("student (the base model)")
    group.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        required=optional is None,
        help="Base pipeline: a Hub model id (e.g. THUDM/CogVideoX-2b) or a local folder."
        + (f" {optional}" if optional else ""),
    )
    group.add_argument("--revision", type=str, default=None, help="Revision of the base model on the Hub.")
    group.add_argument("--variant", type=str, default=None, help="Variant of the model files, e.g. 'fp16'.")
    group.add_argument(
        "--model_family",
        type=str,
        default="auto",
        choices=["auto", *MODEL_FAMILIES],
        help="Model adapter; 'auto' (default) reads the pipeline class from the checkpoint's model_index.json.",
    )
    group.add_argument(
        "--max_sequence_length",
        type=int,
        default=None,
        help="Text tokens per prompt (default: the family's pipeline default: 226 CogVideoX, 512 Wan, 128 LTX); "
        "precomputed prompt embeddings, training and generation must be given the same.",
    )
    group.add_argument(
        "--image_to_video",
        action="store_true",
        help="Train the checkpoint's image-to-video task: each clip is conditioned on its first frame (after the "
        "crop and flip) as the family's I2V pipeline conditions on its `image`. Needs an I2V checkpoint.",
    )
    group.add_argument(
        "--first_frame_conditioning_p",
        type=float,
        default=None,
        help="With --image_to_video, the share of training samples conditioned on their first frame, for "
        "checkpoints that train text- and image-to-video in one (LTX-Video, LTX-2, Wan 2.2 TI2V-5B); default: the "
        "family's. Checkpoints whose I2V task always takes an image take only 1.0.",
    )
    if protocol_vae:
        protocol = "default: the family's protocol, on for CogVideoX as VideoREPA generates"
        group.add_argument(
            "--enable_slicing", action=argparse.BooleanOptionalAction, default=None, help=f"VAE slicing ({protocol})."
        )
        group.add_argument(
            "--enable_tiling",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"VAE tiling ({protocol}; it changes pixels, so it is recorded in manifest.csv and "
            "generation_settings.json).",
        )
    else:
        group.add_argument("--enable_slicing", action="store_true", help="VAE slicing, to save memory.")
        group.add_argument("--enable_tiling", action="store_true", help="VAE tiling, to save memory.")


def add_model_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The family's training options beyond the text length (`TrainingOptions`): flow matching (Wan, LTX-Video;
    finetrainers' flag names and defaults) and the expert of a two-expert checkpoint."""
    group = parser.add_argument_group("model training options")
    group.add_argument(
        "--flow_weighting_scheme",
        type=str,
        default="logit_normal",
        choices=WEIGHTING_SCHEMES,
        help="Flow-matching families: how noise levels are drawn or the loss weighted (logit_normal); sigma is kept "
        ">= 1e-3, finetrainers' smallest, so sigma_sqrt's weight 1/sigma^2 stays <= 1e6.",
    )
    group.add_argument(
        "--flow_logit_mean",
        type=float,
        default=0.0,
        help="Mean of the logit-normal draw of sigma (0.0); positive favours noisier samples, as in the SD3 paper. "
        "finetrainers and diffusers' SD3 example index their scheduler's descending sigmas with the draw, so there "
        "a positive value favours cleaner samples: negate a value taken from their configs.",
    )
    group.add_argument("--flow_logit_std", type=float, default=1.0, help="Std of the logit-normal draw (1.0).")
    group.add_argument("--flow_mode_scale", type=float, default=1.29, help="Scale of the 'mode' draw (1.29).")
    group.add_argument(
        "--flow_shift", type=float, default=1.0, help="Shift of the noise levels; above 1 favours noisier ones (1.0)."
    )
    group.add_argument(
        "--expert",
        type=str,
        default=None,
        help="Two-expert checkpoints (Wan 2.2 A14B): the expert that trains, 'high_noise' (transformer) or "
        "'low_noise' (transformer_2), each on its own noise levels; the other stays as it is.",
    )


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dataset_name`, `--dataset_config_name`, `--instance_data_root`, `--video_column`, `--caption_column`, as
    in diffusers' `train_cogvideox_lora.py`."""
    group = parser.add_argument_group("dataset")
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A Hub dataset, a folder written by `save_to_disk` (e.g. by `python -m diffusers_tsa.features`), or a "
        "CSV/JSON/JSONL metadata file with caption and video columns.",
    )
    group.add_argument("--dataset_config_name", type=str, default=None, help="The config of a Hub dataset.")
    group.add_argument(
        "--instance_data_root",
        type=str,
        default=None,
        help="Folder of the clips; alone, it holds two text files named by --caption_column and --video_column.",
    )
    group.add_argument(
        "--video_column",
        type=str,
        default="video",
        help="Dataset column with the videos, or the file under --instance_data_root listing one video path a line.",
    )
    group.add_argument(
        "--caption_column",
        type=str,
        default="text",
        help="Dataset column with the captions, or the file under --instance_data_root with one caption a line.",
    )


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """How clips are read (`ClipSpec`); training and precomputed features must be given the same values."""
    group = parser.add_argument_group("clips (the same for precomputing and training)")
    group.add_argument("--height", type=int, default=480, help="All input videos are resized to this height (480).")
    group.add_argument("--width", type=int, default=720, help="All input videos are resized to this width (720).")
    group.add_argument(
        "--max_num_frames", type=int, default=49, help="Frames kept per clip, uniform stride, trimmed to 4k+1 (49)."
    )
    group.add_argument("--skip_frames_start", type=int, default=0, help="Frames dropped at the start of a clip (0).")
    group.add_argument("--skip_frames_end", type=int, default=0, help="Frames dropped at the end of a clip (0).")
    group.add_argument(
        "--video_reshape_mode",
        type=str,
        default="center",
        choices=RESHAPE_MODES,
        action=DeprecatedNames,
        deprecated_values=DEPRECATED_RESHAPE_MODES,
        help="Crop after an aspect-preserving resize ('center', 'random'; precomputed features need a fixed crop) "
        "or resize to the size, changing the aspect ratio ('stretch'; 'none' is its deprecated name: diffusers' "
        "example random-crops for 'none').",
    )
    group.add_argument(
        "--video_backend",
        type=str,
        default="auto",
        choices=("auto", *VIDEO_BACKEND_NAMES),
        help="Video decoder: 'auto' (default) reads with the first installed of torchcodec, decord and "
        "imageio-ffmpeg, and with the next ones what it cannot read.",
    )


def add_teacher_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """The video teacher and what it sees of each clip (`TeacherInput`)."""
    group = parser.add_argument_group("teacher")
    group.add_argument(
        "--teacher_model_name_or_path",
        "--teacher",
        type=str,
        default=None,
        required=required,
        help="Teacher: a VideoMAE/VideoMAEv2 folder or Hub id, a raw VideoMAEv2 .pth, V-JEPA 2, or an image model run "
        "frame by frame (DINOv2, DINOv2 with registers, DINOv3)."
        + ("" if required else " Needed to run the teacher online; optional with precomputed features."),
    )
    group.add_argument("--teacher_revision", type=str, default=None, help="Hub revision of the teacher.")
    group.add_argument(
        "--teacher_dtype",
        type=str,
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype the teacher runs in, whatever --mixed_precision is (float32, as VideoREPA runs its ViT; half "
        "precision is about 2x faster on GPUs, but the tempered softmax of tau = 0.1 amplifies its rounding).",
    )
    group.add_argument(
        "--teacher_frames",
        type=str,
        default="uniform",
        choices=TEACHER_FRAMES,
        help="Which frames the teacher sees: 'uniform' (default; --teacher_num_frames of those after the first, "
        "the paper's), 'latent' (one per latent frame, frame 0 included: SimpleTuner's CREPA; two on 8x VAEs, so "
        "that a teacher frame spans at most CogVideoX's 4 pixel frames) or 'pooled' (every "
        "frame, the features after the first averaged per latent frame: VideoREPA's DINOv2 path).",
    )
    group.add_argument(
        "--teacher_num_frames", type=int, default=None, help="Teacher frames with 'uniform' (clip frames - 1)."
    )
    group.add_argument("--teacher_height", type=int, default=None, help="Teacher input height (--height / 3).")
    group.add_argument("--teacher_width", type=int, default=None, help="Teacher input width (--width / 3).")
    group.add_argument(
        "--trust_remote_code", action="store_true", help="Allow a teacher checkpoint's own code to run (off)."
    )


def parse_with_preset(parser: argparse.ArgumentParser, args: list[str] | None = None) -> argparse.Namespace:
    """Parses `args` with the values of `--alignment_preset` (if given) as the defaults of their flags, so that a
    flag given on the command line wins over the preset (parsed twice: the preset first)."""
    known, _ = parser.parse_known_args(args)
    preset = getattr(known, "alignment_preset", None)
    if preset is not None:
        parser.set_defaults(**ALIGNMENT_PRESETS[preset].values)
    return parser.parse_args(args)


def add_loss_option_arguments(parser: argparse._ActionsContainer, *, targets_only: bool = False) -> None:
    """One flag per option of the registered alignment losses (`ALIGNMENT_LOSSES`), as each `loss_option` declares
    it: `--tsa_temperature`, `--tsa_mask_ratio`, `--crepa_*`; with `targets_only`, only the options that shape the
    teacher targets (`--tsa_mask_ratio`, also recorded with precomputed masks), for the commands that compute them."""
    for option in registered_options().values():
        if targets_only and not option.targets:
            continue
        if option.type is bool:
            kind = {"action": "store_true", "help": f"{option.help} (off)."}
        else:
            kind = {"type": option.type, "default": option.default, "help": f"{option.help} ({option.default})."}
        parser.add_argument(option.flag, *option.aliases, **kind)


def add_alignment_arguments(parser: argparse.ArgumentParser, *, own_loop: bool = True) -> None:
    """The alignment term of Eq. 14 (`AlignmentConfig`). With `own_loop=False`, the flags a loop that is not ours
    takes (`diffusers_tsa.integrations.HostAlignment.from_args`): the teacher's too, and none for precomputed columns
    or a projector learning rate (the projector trains in the host's parameter group)."""
    if not own_loop:
        add_teacher_arguments(parser)
    group = parser.add_argument_group("alignment (TSA)")
    losses = ", ".join(f"'{name}' ({loss.description})" for name, loss in ALIGNMENT_LOSSES.items())
    group.add_argument(
        "--alignment_loss",
        type=str,
        default="m-tsa",
        choices=[*ALIGNMENT_LOSSES, "none"],
        help=f"The alignment loss: {losses}, or 'none' (plain fine-tuning); default 'm-tsa'.",
    )
    group.add_argument(
        "--alignment_depth",
        type=int,
        default=None,
        help="Align the output of this transformer block, counted from 1 (default: the family's, e.g. 18 of 30 for "
        "CogVideoX-2B, the paper's best).",
    )
    group.add_argument(
        "--alignment_preset",
        type=str,
        default=None,
        choices=list(ALIGNMENT_PRESETS),
        help="Set the alignment flags to a baseline as its authors run it, or the paper's M-TSA: "
        + "; ".join(f"'{name}': {preset.description}" for name, preset in ALIGNMENT_PRESETS.items())
        + ". Each flag given on the command line overrides the preset's value.",
    )
    group.add_argument(
        "--alignment_weight",
        type=float,
        default=0.5,
        help="lambda of Eq. 14 (0.5), after any --alignment_weight_warmup_steps and before any decay.",
    )
    group.add_argument(
        "--alignment_target_depth",
        type=int,
        default=None,
        help="Align to the student's own block at this depth (deeper than --alignment_depth, counted from 1, "
        "without gradient) instead of a teacher: no teacher, no pixels, the student's grid (off).",
    )
    add_loss_option_arguments(group)
    group.add_argument("--projector_hidden_dim", type=int, default=2048, help="Projector MLP width (2048).")
    if not own_loop:
        return
    group.add_argument(
        "--teacher_features_column",
        type=str,
        default=None,
        help=f"Column of precomputed teacher features; default: '{FEATURES_COLUMN}' when the dataset has it, else "
        "the teacher runs online.",
    )
    group.add_argument(
        "--projector_head",
        type=str,
        default="mlp",
        choices=PROJECTOR_HEADS,
        help="The projector: 'mlp' (default; VideoREPA's 3-layer MLP and a learned resampler) or 'layernorm_linear' "
        "(SimpleTuner's CREPA projector, LayerNorm + Linear, resized to the teacher grid).",
    )
    group.add_argument(
        "--projector_learning_rate", type=float, default=None, help="Projector learning rate (--learning_rate)."
    )
