#!/usr/bin/env python
# Copyright 2026 The diffusers-tsa authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Fine-tune a text-to-video diffusion model with Tempered Self-Similarity Alignment (TSA / M-TSA).

The script follows diffusers' `examples/cogvideo/train_cogvideox_lora.py` (same flags where they overlap) and adds
the alignment term of the paper (Eq. 14): L = L_diffusion + alignment_weight * L_M-TSA, between the output of one
transformer block, projected onto a video foundation model's token grid, and that model's features of the clean
clip. Model specifics live in `diffusers_tsa.adapters`, one module per family (CogVideoX 1.0 and 1.5, Wan 2.1 and 2.2,
LTX-Video, NOVA), so this loop is model-agnostic.

    accelerate launch train_text_to_video_tsa.py --pretrained_model_name_or_path THUDM/CogVideoX-2b \\
        --instance_data_root data --caption_column prompts.txt --video_column videos.txt \\
        --teacher_model_name_or_path videomaev2-base --training_mode full --learning_rate 2e-6
"""

import argparse
import importlib.util

from diffusers_tsa import cli
from diffusers_tsa.training.preemption import parse_signal


def tensorboard_installed() -> bool:
    """Whether tensorboard imports here (found without importing accelerate, and with it torch, before parsing)."""
    return importlib.util.find_spec("tensorboard") is not None


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Fine-tune a text-to-video model with TSA / M-TSA.")

    # Model information
    cli.add_student_arguments(parser)
    parser.add_argument("--cache_dir", type=str, default=None, help="Where downloaded models and datasets are stored.")
    cli.add_model_training_arguments(parser)

    # Dataset information
    cli.add_dataset_arguments(parser)
    parser.add_argument("--id_token", type=str, default=None, help="Token prepended to every caption, if given.")
    parser.add_argument(
        "--dataloader_num_workers",
        type=int,
        default=0,
        help="Subprocesses decoding clips; 0 (default) decodes in the main process.",
    )

    # Validation
    parser.add_argument(
        "--validation_prompt",
        type=str,
        default=None,
        help="Prompt(s) generated during validation, separated by --validation_prompt_separator.",
    )
    parser.add_argument("--validation_prompt_separator", type=str, default=":::", help="Separator of prompts.")
    parser.add_argument(
        "--validation_images",
        type=str,
        default=None,
        help="With --image_to_video: the first frame (path or URL) of each validation prompt, separated by "
        "--validation_prompt_separator; default: the first frame of the first training clip, after its crop.",
    )
    parser.add_argument("--num_validation_videos", type=int, default=1, help="Videos per validation prompt (1).")
    parser.add_argument("--validation_epochs", type=int, default=None, help="Validate every X epochs (off).")
    parser.add_argument(
        "--validation_steps",
        type=int,
        default=None,
        help="Validate every X optimizer steps (off); validation also runs once at the end when prompts are given.",
    )
    parser.add_argument(
        "--validation_video",
        type=str,
        default=None,
        help="A held-out clip on which each validation measures and draws the alignment (default: the dataset's "
        "first clip); needs the teacher online.",
    )
    parser.add_argument("--guidance_scale", type=float, default=6, help="Guidance scale of validation (6).")
    parser.add_argument("--use_dynamic_cfg", action="store_true", help="Cosine dynamic guidance in validation.")
    parser.add_argument(
        "--validation_num_inference_steps", type=int, default=50, help="Denoising steps of validation videos (50)."
    )

    # Training information
    parser.add_argument("--seed", type=int, default=None, help="A seed for reproducible training.")
    parser.add_argument(
        "--training_mode",
        type=str,
        default="lora",
        choices=["lora", "full"],
        help="'lora' (default) trains a LoRA adapter; 'full' fine-tunes every transformer weight (the paper).",
    )
    parser.add_argument("--rank", type=int, default=128, help="The dimension of the LoRA update matrices (128).")
    parser.add_argument(
        "--lora_alpha", type=float, default=128, help="LoRA scaling: the update is scaled by lora_alpha / rank (128)."
    )
    parser.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Mixed precision; defaults to the accelerate config. Trainable weights stay in fp32.",
    )
    parser.add_argument(
        "--output_dir", type=str, default="cogvideox-tsa", help="Where checkpoints and final weights are written."
    )
    cli.add_clip_arguments(parser)
    parser.add_argument(
        "--validation_fps",
        "--fps",
        type=int,
        default=None,
        action=cli.DeprecatedNames,
        deprecated_flags={"--fps": "in diffusers' example, --fps is the frame rate the input videos are read at"},
        help="Frame rate of the validation videos (the family's: 8 CogVideoX, 16 CogVideoX 1.5 and Wan, 25 LTX-Video). "
        "--fps is its deprecated name.",
    )
    parser.add_argument("--random_flip", action="store_true", help="Flip clips horizontally with probability 1/2.")
    parser.add_argument("--train_batch_size", type=int, default=4, help="Batch size per device (4).")
    parser.add_argument("--num_train_epochs", type=int, default=1)
    parser.add_argument(
        "--max_train_steps", type=int, default=None, help="Optimizer steps to run; overrides --num_train_epochs."
    )
    parser.add_argument(
        "--checkpointing_steps",
        type=int,
        default=500,
        help="Save the training state every X optimizer steps, for --resume_from_checkpoint (500).",
    )
    parser.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints (all)."
    )
    parser.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="Resume from a `checkpoint-<step>` folder, or 'latest' for the newest one in --output_dir.",
    )
    parser.add_argument(
        "--preemption_signal",
        type=str,
        default=None,
        help="A signal that, besides SIGTERM, makes the run finish its step, save a checkpoint and exit (e.g. "
        "SIGUSR1, what `sbatch --signal=USR1@120` sends before the kill); resume with --resume_from_checkpoint latest.",
    )
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per step (1).")
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="Trade compute for memory in the transformer."
    )
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=1e-4,
        help="Learning rate of the transformer (1e-4 suits LoRA; the paper's full fine-tune uses 2e-6).",
    )
    parser.add_argument(
        "--scale_lr", action="store_true", help="Scale learning rates by GPUs x accumulation x batch size."
    )
    parser.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant",
        help='One of "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup".',
    )
    parser.add_argument("--lr_warmup_steps", type=int, default=500, help="Warm-up optimizer steps (500).")
    parser.add_argument("--lr_num_cycles", type=int, default=1, help="Restarts of cosine_with_restarts.")
    parser.add_argument("--lr_power", type=float, default=1.0, help="Power of the polynomial scheduler.")

    # Alignment (TSA) and its video teacher
    cli.add_alignment_arguments(parser)
    cli.add_teacher_arguments(parser)

    # Optimizer
    parser.add_argument(
        "--optimizer",
        type=lambda s: s.lower(),
        default="adamw",
        choices=["adam", "adamw", "prodigy"],
        help="Optimizer (adamw, as the paper).",
    )
    parser.add_argument("--use_8bit_adam", action="store_true", help="8-bit Adam(W) from bitsandbytes.")
    parser.add_argument("--adam_beta1", type=float, default=0.9, help="beta1 of Adam and Prodigy.")
    parser.add_argument("--adam_beta2", type=float, default=0.95, help="beta2 of Adam and Prodigy.")
    parser.add_argument("--prodigy_beta3", type=float, default=None, help="beta3 of Prodigy (sqrt(beta2)).")
    parser.add_argument("--prodigy_decouple", action="store_true", help="AdamW-style decoupled weight decay.")
    parser.add_argument("--adam_weight_decay", type=float, default=1e-04, help="Weight decay (1e-4).")
    parser.add_argument("--adam_epsilon", type=float, default=1e-08, help="Epsilon of Adam and Prodigy.")
    parser.add_argument("--max_grad_norm", default=1.0, type=float, help="Max gradient norm (1.0).")
    parser.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=3,
        help="A batch with a non-finite loss is skipped, not trained through; stop with an error after this many "
        "in a row (3).",
    )
    parser.add_argument(
        "--max_corrupt_row_share",
        type=float,
        default=0.01,
        help="A precomputed row that fails its checksum is skipped like an unreadable clip; stop with an error when "
        "more than this share of the rows are (0.01).",
    )
    parser.add_argument("--prodigy_use_bias_correction", action="store_true", help="Adam's bias correction.")
    parser.add_argument("--prodigy_safeguard_warmup", action="store_true", help="Prodigy warm-up safeguard.")

    # Other information
    parser.add_argument("--tracker_name", type=str, default=None, help="Project name in the tracker.")
    parser.add_argument("--push_to_hub", action="store_true", help="Push the final weights to the Hub.")
    # A token on a command line reaches logs (accelerate prints a failed child's command line), shell history and
    # process lists: it is refused, with what to do instead.
    parser.add_argument("--hub_token", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hub_model_id", type=str, default=None, help="Hub repository (default: output_dir name).")
    parser.add_argument("--logging_dir", type=str, default="logs", help="Tracker logs, under --output_dir.")
    parser.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")
    parser.add_argument(
        "--report_to",
        type=str,
        default=None,
        help="'tensorboard', 'wandb', 'comet_ml', 'all' or 'none'. Default: 'tensorboard' when it is installed "
        "(`pip install tensorboard`), else 'none'.",
    )
    args = cli.parse_with_preset(parser, input_args)  # --alignment_preset's values are defaults: given flags win
    if args.report_to is None:  # the core install has no tracker: log to tensorboard only where it is installed
        args.report_to = "tensorboard" if tensorboard_installed() else "none"

    # Checks of the script's own flags; the rest is checked against the configs by `plan_training`.
    if args.hub_token is not None:
        raise cli.FlagError(
            "--hub_token is not accepted: a token on a command line ends up in logs, shell history and process lists. "
            "Run `hf auth login` once, or set the HF_TOKEN environment variable; --push_to_hub uses it."
        )
    if args.preemption_signal is not None:
        with cli.flag_errors():
            parse_signal(args.preemption_signal)
    if args.dataset_name is None and args.instance_data_root is None:
        raise cli.FlagError("Pass --dataset_name or --instance_data_root.")
    if args.training_mode == "lora" and (args.rank < 1 or args.lora_alpha <= 0):
        raise cli.FlagError(f"--rank must be >= 1 and --lora_alpha > 0, got {args.rank} and {args.lora_alpha}.")
    for flag in (
        "checkpointing_steps",
        "validation_steps",
        "validation_epochs",
        "checkpoints_total_limit",
        "max_nonfinite_steps",
    ):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise cli.FlagError(f"--{flag} must be >= 1, got {getattr(args, flag)}.")
    return args


def main(args: argparse.Namespace) -> None:
    """Trains with the parsed flags `args`. The training loop (`diffusers_tsa.train_loop`), and with it torch,
    diffusers and transformers, is imported here, after the flags parse: `--help` and flag errors come first."""
    from diffusers_tsa.train_loop import train

    train(args)


if __name__ == "__main__":
    cli.run(lambda: main(parse_args()))
