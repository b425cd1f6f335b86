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
"""The training loop of `diffusers_tsa.train_text_to_video_tsa` (the command, whose flags it takes), imported once
the flags parse."""

import argparse
import json
import logging
import math
import random
import signal
import sys
import time
from pathlib import Path

import diffusers
import PIL.Image
import torch
import transformers
from accelerate import Accelerator, DistributedType
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params, free_memory
from diffusers.utils import export_to_video, is_wandb_available
from einops import rearrange
from huggingface_hub import create_repo, upload_folder
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffusers_tsa import AlignmentWeight, cli
from diffusers_tsa.adapters import ADAPTERS, GenerationSettings
from diffusers_tsa.loss_registry import ALIGNMENT_LOSSES, WeightSchedule, options_of
from diffusers_tsa.storage import disk_full_is_one_line
from diffusers_tsa.training import (
    AlignedTransformer,
    Alignment,
    AlignmentProbe,
    CorruptRows,
    DataOrder,
    NonFiniteBatches,
    OutputDirLock,
    Preemption,
    RunningMeans,
    ShuffledOrder,
    TrainingClips,
    TrainingSchedule,
    UnreadableClips,
    check_resume,
    checkpoint_step,
    collate_examples,
    intact_checkpoints,
    model_inputs,
    parse_signal,
    plan_training,
    preempted_exit_status,
    run_settings,
    save_checkpoint,
    save_model_card,
    save_run_settings,
    write_probe,
)


logger = get_logger(__name__)


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`get_optimizer`).
def get_optimizer(args, params_to_optimize):
    """AdamW (default), Adam or Prodigy, with the upstream example's flags."""
    if args.optimizer == "prodigy":
        try:
            import prodigyopt
        except ImportError:
            raise ImportError("--optimizer prodigy needs `pip install prodigyopt`.") from None
        return prodigyopt.Prodigy(
            params_to_optimize,
            betas=(args.adam_beta1, args.adam_beta2),
            beta3=args.prodigy_beta3,
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
            decouple=args.prodigy_decouple,
            use_bias_correction=args.prodigy_use_bias_correction,
            safeguard_warmup=args.prodigy_safeguard_warmup,
        )
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ImportError("--use_8bit_adam needs `pip install bitsandbytes`.") from None
        optimizer_class = bnb.optim.AdamW8bit if args.optimizer == "adamw" else bnb.optim.Adam8bit
    else:
        optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(
        params_to_optimize,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.adam_weight_decay,
    )


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`weight_dtype` in `main`), with DeepSpeed's bf16 branch fixed.
def frozen_weight_dtype(accelerator) -> torch.dtype:
    """The dtype of the frozen weights: the mixed-precision one (DeepSpeed's config first), else fp32."""
    if accelerator.state.deepspeed_plugin:
        deepspeed_config = accelerator.state.deepspeed_plugin.deepspeed_config
        if deepspeed_config.get("fp16", {}).get("enabled"):
            return torch.float16
        if deepspeed_config.get("bf16", {}).get("enabled"):
            return torch.bfloat16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def all_finite(values: torch.Tensor, accelerator, step: int) -> bool:
    """Whether the step's (diffusion, alignment, total) losses are finite on every process; warns naming the term
    otherwise, so that the batch is skipped everywhere instead of trained through."""
    if accelerator.gather(values.isfinite().unsqueeze(0)).all():
        return True
    diffusion, align, _ = values.tolist()
    bad = [name for name, v in (("loss/diffusion", diffusion), ("loss/alignment", align)) if not math.isfinite(v)]
    logger.warning(
        f"Step {step}: non-finite {', '.join(bad) or 'loss on another process'} (diffusion {diffusion:.4g}, "
        f"alignment {align:.4g}); skipping this batch.",
        main_process_only=False,
    )
    return False


def step_alignment_loss(logs: dict, accelerator) -> float | None:
    """The step's alignment loss averaged over the processes (the same on each, so that every process schedules the
    same weight); `None` when every batch of the step was skipped."""
    mean = torch.tensor([logs.get("loss/alignment", math.nan)], device=accelerator.device)
    mean = accelerator.gather(mean).nanmean()
    return None if mean.isnan() else mean.item()


#: The settings recorded with precomputed teacher features that the model card shows (as `precomputed_<key>`).
PRECOMPUTED_CARD_SETTINGS = ("teacher_input", "clip", "video_column", "storage_dtype", "mask_ratio")


def resolved_settings(
    plan, learning_rate: float, projector_learning_rate: float | None, schedule, mixed_precision: str
) -> dict:
    """The settings the run resolved from its flags, configs and data, under their flags' names (the flags stay as
    given): the aligned block, the validation frame rate, the learning rates after --scale_lr, the steps and epochs,
    the precision (accelerate's config when the flag is not given), the text length (the family's default), and for
    precomputed teacher features, the teacher and the settings recorded with them."""
    resolved = {
        "alignment_depth": plan.alignment.depth if plan.alignment else None,
        "fps": plan.fps,
        "learning_rate": learning_rate,
        "projector_learning_rate": projector_learning_rate,
        "max_train_steps": schedule.max_train_steps,
        "num_train_epochs": schedule.num_train_epochs,
        "mixed_precision": mixed_precision,
        "max_sequence_length": plan.spec.resolve_max_sequence_length(plan.options.max_sequence_length),
    }
    recorded = plan.alignment.features_settings if plan.alignment else None
    if recorded is not None:
        resolved.update(
            {
                "teacher_model_name_or_path": recorded["teacher"],
                "teacher_features_column": plan.alignment.features_column,
                # JSON text for the mappings (`teacher_input`, `clip`): trackers take scalars and strings only.
                **{
                    f"precomputed_{key}": json.dumps(value) if isinstance(value := recorded[key], dict) else value
                    for key in PRECOMPUTED_CARD_SETTINGS
                },
            }
        )
    return resolved


def card_hyperparameters(args, spec, resolved: dict) -> dict:
    """The settings the model card lists: alignment (with the options of its loss), optimisation, the family's training
    options and data, as the run resolved them (`resolved_settings`)."""
    loss = ALIGNMENT_LOSSES.get(args.alignment_loss)  # None for --alignment_loss none
    alignment = [
        "alignment_depth",
        "alignment_weight",
        *(option.dest for option in (options_of(loss.options) if loss else ())),
        *(option.dest for option in (options_of(WeightSchedule) if loss else ())),
        "alignment_preset",
        "alignment_target_depth",
        "teacher_model_name_or_path",
        "teacher_frames",
        *(
            ["teacher_features_column", *(f"precomputed_{key}" for key in PRECOMPUTED_CARD_SETTINGS)]
            if "teacher_features_column" in resolved
            else []
        ),
        "projector_hidden_dim",
        "projector_head",
    ]
    keys = [
        "training_mode",
        "alignment_loss",
        *(alignment if loss else []),
        "learning_rate",
        *(["projector_learning_rate"] if loss else []),
        "train_batch_size",
        "gradient_accumulation_steps",
        "max_train_steps",
        "mixed_precision",
        "height",
        "width",
        "max_num_frames",
        "max_sequence_length",
        "seed",
    ]
    if args.training_mode == "lora":
        keys += ["rank", "lora_alpha"]
    if spec.uses_flow_matching:
        keys += ["flow_weighting_scheme", "flow_logit_mean", "flow_logit_std", "flow_mode_scale", "flow_shift"]
    if args.expert is not None:
        keys.append("expert")
    return {key: resolved[key] if key in resolved else getattr(args, key) for key in keys}


# Adapted from diffusers' examples/cogvideo/train_cogvideox_lora.py (`log_validation`).
def log_validation(pipe, plan, settings, args, accelerator, step, *, final=False, images=None):
    """Generates `--num_validation_videos` per validation prompt with a stock pipeline; writes them under
    output_dir/validation/ and to the trackers (`images`: an image-to-video run's first frame per prompt). Returns the
    written paths and their prompts."""
    prompts = args.validation_prompt.split(args.validation_prompt_separator)
    images = images or [None] * len(prompts)
    what = "Final validation, the saved weights in a stock pipeline," if final else "Running validation"
    logger.info(f"{what} at step {step}: {len(prompts)} prompt(s) x {args.num_validation_videos} video(s)")
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(args.seed) if args.seed is not None else None
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    paths, videos_for_tracker = [], []
    for p, prompt in enumerate(prompts):
        for i in range(args.num_validation_videos):
            with torch.no_grad(), accelerator.autocast():
                frames = plan.spec.generate(pipe, prompt, settings, generator, images[p])  # (T, H, W, 3) in [0, 1]
            path = folder / f"{'final' if final else f'step-{step}'}-{p}-{i}.mp4"
            export_to_video(list(frames), str(path), fps=plan.fps)
            paths.append(str(path.relative_to(args.output_dir)))
            videos_for_tracker.append((prompt, frames))
    for tracker in accelerator.trackers:
        phase = "test" if final else "validation"
        if tracker.name == "wandb":
            import wandb

            tracker.log(
                {
                    phase: [
                        wandb.Video(str(Path(args.output_dir) / path), caption=prompt, fps=plan.fps)
                        for path, (prompt, _) in zip(paths, videos_for_tracker)
                    ]
                },
                step=step,
            )
        elif tracker.name == "tensorboard":
            for n, (prompt, frames) in enumerate(videos_for_tracker):
                video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, C, H, W) in [0, 1]
                tracker.writer.add_images(f"{phase}/{n}: {prompt[:60]}", video, step, dataformats="NCHW")
    free_memory()
    return paths, [prompt for prompt, _ in videos_for_tracker]


def validation_images(args, plan, data_order) -> list:
    """The first frame (a PIL image) of each validation prompt of an image-to-video run: `--validation_images`
    (paths or URLs, one per prompt), else the first frame of the first training clip after its crop, for every
    prompt.

    Raises:
        `UsageError`: `--validation_images` does not give one image per prompt.
    """
    from diffusers.utils import load_image

    prompts = args.validation_prompt.split(args.validation_prompt_separator)
    if args.validation_images is None:
        first = TrainingClips(plan.table, plan.clip, order=data_order, decode_videos=True)[0]["video"][0]
        pixels = ((first.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return [PIL.Image.fromarray(rearrange(pixels, "c h w -> h w c").numpy())] * len(prompts)
    paths = args.validation_images.split(args.validation_prompt_separator)
    if len(paths) != len(prompts):
        raise cli.FlagError(
            f"--validation_images gives {len(paths)} image(s) for {len(prompts)} --validation_prompt(s): give one per "
            "prompt, separated by --validation_prompt_separator."
        )
    return [load_image(path) for path in paths]


def log_probe(probe, args, accelerator, step):
    """The alignment probe at `step`: its agreement to the log and the trackers, its pictures to the trackers and to
    output_dir/validation/ (with the agreement, in agreement.jsonl)."""
    with accelerator.autocast():
        result = probe(step)
    logger.info(
        f"Alignment probe at step {step}: top-1 agreement {result.agreement.top1:.3f}, tempered KL "
        f"{result.agreement.kl:.4f} ({result.agreement.num_pairs} query-frame pairs)"
    )
    write_probe(result, args.output_dir)
    accelerator.log(result.logs(), step=step)
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({f"alignment/{name}": wandb.Image(p) for name, p in result.pictures.items()}, step=step)
        elif tracker.name == "tensorboard":
            for name, picture in result.pictures.items():
                tracker.writer.add_image(f"alignment/{name}", picture, step, dataformats="HWC")


def train(args: argparse.Namespace) -> None:
    # Read every config (student, teacher, dataset) once and check the flags against them before any weight loads.
    plan = plan_training(args)

    logging_dir = Path(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),  # several CPU processes: gloo
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise cli.FlagError(
            "--mixed_precision fp16 needs a GPU (CPU autocast computes in bfloat16): use --mixed_precision bf16 or no."
        )
    if args.report_to == "wandb" and not is_wandb_available():
        raise ImportError("--report_to wandb needs `pip install wandb`.")

    # Make one log on every process with the configuration for debugging.
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_warning()  # its INFO repeats "All the weights of ..." at each load
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()

    # A resumed run's settings against the checkpoint's record, before any weight loads or any file is written.
    settings = run_settings(args, plan.alignment.depth if plan.alignment else None, accelerator.num_processes)
    if plan.resume is not None:
        with cli.flag_errors():
            changed = check_resume(plan.resume, settings)
        if changed:
            logger.info(
                "Resuming with changed settings, applied from the checkpoint's step on: "
                + ", ".join(f"--{name} {recorded!r} -> {given!r}" for name, recorded, given in changed)
            )

    # SIGTERM (and --preemption_signal): finish the step, save a checkpoint, exit.
    signals = [signal.SIGTERM] + ([parse_signal(args.preemption_signal)] if args.preemption_signal else [])
    preemption = Preemption(signals).install()

    if args.seed is not None:
        set_seed(args.seed)
    # One seed orders the data on every process (the shuffle, crops, flips); a resumed run reads it from the checkpoint.
    data_order = DataOrder(args.seed if args.seed is not None else broadcast_object_list([random.getrandbits(31)])[0])

    repo_id = None
    if accelerator.is_main_process:
        # One run per output folder, for the whole run; a killed run's lock ends with its process.
        output_lock = OutputDirLock(args.output_dir).acquire()
        if args.push_to_hub:
            repo_id = create_repo(repo_id=args.hub_model_id or Path(args.output_dir).name, exist_ok=True).repo_id

    # Frozen weights go to half precision under mixed precision; trainable ones stay in fp32.
    weight_dtype = frozen_weight_dtype(accelerator)

    # Load the model's components (tokenizer, text encoder, VAE, transformer, scheduler); on precomputed latents and
    # prompt embeddings, neither the VAE nor the text encoder (validation loads them for the time it runs).
    # A full fine-tune trains in fp32 from the checkpoint's own precision, never from a half-precision copy.
    adapter = ADAPTERS[plan.spec.family].from_pretrained(
        plan.spec,
        variant=args.variant,
        weight_dtype=weight_dtype,
        device=accelerator.device,
        transformer_dtype=torch.float32 if args.training_mode == "full" else weight_dtype,
        options=plan.options,
        encoders=plan.inputs is None,
    )
    adapter.configure_vae(slicing=args.enable_slicing, tiling=args.enable_tiling)

    # Choose what trains: a LoRA adapter, or every transformer weight (kept in fp32); the adapter saves and loads it.
    if args.training_mode == "lora":
        adapter.add_lora(args.rank, args.lora_alpha)
    else:
        adapter.enable_full_training()
    cast_training_params([adapter.transformer], dtype=torch.float32)
    if args.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()

    # The alignment term (projector, hooked block, teacher targets); None for --alignment_loss none.
    alignment = None
    if plan.alignment:
        alignment = Alignment.build(
            plan.alignment,
            adapter,
            device=accelerator.device,
            teacher_dtype=getattr(torch, args.teacher_dtype),
            trust_remote_code=args.trust_remote_code,
            teacher_revision=args.teacher_revision,
            cache_dir=args.cache_dir,
        )
    model = AlignedTransformer(adapter, alignment)

    # The alignment probe: at each validation, how well the student's correspondences follow the teacher's on one
    # fixed clip, with pictures of them.
    probe = None  # not for the student's own target: it has no teacher to compare with
    validates = (args.validation_steps or args.validation_epochs) and accelerator.is_main_process
    if alignment and alignment.target_extractor is None and validates:
        probe = AlignmentProbe.build(
            alignment,
            adapter,
            plan.table,
            plan.clip,
            video=args.validation_video,
            inputs_columns=plan.inputs_columns,
            device=accelerator.device,
            dtype=weight_dtype,
            seed=data_order.seed,
        )

    # Custom saving & loading hooks so that `accelerator.save_state(...)` writes the weights in their stock format
    # (the LoRA or the transformer, and the projector beside them), and the data order.
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for saved in models:
                accelerator.unwrap_model(saved).save_trained(output_dir)
                if weights:
                    weights.pop()  # make sure the model is not saved again
            data_order.save(output_dir)
            if alignment_weight is not None:
                alignment_weight.save(output_dir)
            save_run_settings(output_dir, settings)  # what a resumed run is compared with

    def load_model_hook(models, input_dir):
        while models:
            accelerator.unwrap_model(models.pop()).load_trained(input_dir)
        data_order.load(input_dir)
        if alignment_weight is not None:
            alignment_weight.load(input_dir)  # the schedule's step, EMA and threshold state continue exactly

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # Optimizer: the transformer's trainable weights and the projector, each at its learning rate (both scaled by
    # GPUs x accumulation x batch size under --scale_lr).
    lr_scale = args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    lr_scale = lr_scale if args.scale_lr else 1
    learning_rate = args.learning_rate * lr_scale
    projector_lr = (args.projector_learning_rate or args.learning_rate) * lr_scale if alignment else None
    params_to_optimize = model.parameter_groups(learning_rate, projector_lr)
    optimizer = get_optimizer(args, params_to_optimize)

    # Dataset and DataLoader: clips are decoded in the workers (not at all when every frozen model's output is
    # precomputed); unreadable ones are skipped and counted. Their order, crops and flips come from `data_order` alone
    # (no global RNG), so a resumed run sees what it would have seen.
    train_dataset = TrainingClips(
        plan.table,
        plan.clip,
        order=data_order,
        id_token=args.id_token,
        random_flip=args.random_flip,
        features_column=plan.alignment.features_column if plan.alignment else None,
        inputs_columns=plan.inputs_columns,
        decode_videos=plan.needs_videos,
    )
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        sampler=ShuffledOrder(len(train_dataset), data_order),
        collate_fn=collate_examples,
        num_workers=args.dataloader_num_workers,
        pin_memory=accelerator.device.type == "cuda",  # workers prefetch; pinned batches copy to the GPU async
        generator=torch.Generator(),  # workers' base seeds: not drawn from the RNG that draws the noise
    )

    # Scheduler and math around the number of training steps.
    steps = {
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "max_train_steps": args.max_train_steps,
        "num_train_epochs": args.num_train_epochs,
    }
    schedule = TrainingSchedule.resolve(len(train_dataloader), **steps)
    # A prepared scheduler steps once per process on each optimizer step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=schedule.max_train_steps * accelerator.num_processes,
        num_cycles=args.lr_num_cycles,
        power=args.lr_power,
    )

    # Prepare everything with our `accelerator`.
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )

    # We need to recalculate our total training steps as the size of the training dataloader may have changed.
    schedule = TrainingSchedule.resolve(len(train_dataloader), **steps)
    # lambda of Eq. 14 at each step (warm-up, decay, cut-off, threshold); checkpoints carry its state.
    alignment_weight = None
    if alignment:
        alignment_weight = AlignmentWeight(
            plan.alignment.weight, plan.alignment.schedule, total_steps=schedule.max_train_steps
        )

    # Trackers get the configuration as resolved (which holds no token: --hub_token is refused).
    resolved = resolved_settings(plan, learning_rate, projector_lr, schedule, accelerator.mixed_precision)
    config = {**{k: v for k, v in vars(args).items() if k != "hub_token"}, **resolved}
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_name or "text-to-video-tsa", config=config)
        Path(args.output_dir, "training_config.json").write_text(json.dumps(config, indent=2))

    # Train!
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Model family = {plan.spec.family}, training mode = {adapter.training_mode}")
    if plan.preset:
        logger.info(f"  Alignment preset = {plan.preset.summary(args)}")
    logger.info(
        f"  Alignment = {args.alignment_loss} at block {resolved['alignment_depth']}, weight {args.alignment_weight}"
    )
    if alignment:
        source = f"online teacher in {args.teacher_dtype}" if alignment.teacher else "precomputed teacher"
        if alignment.target_extractor is not None:
            source = f"the student's own block {plan.alignment.target_depth}, without gradient"
        logger.info(
            f"  Student grid {alignment.config.student_grid} -> teacher grid {alignment.config.teacher_grid} "
            f"({source}); weight schedule {plan.alignment.schedule}"
        )
    logger.info(
        "  Inputs = "
        + (
            "precomputed latents and prompt embeddings (no VAE encoder, no text encoder)"
            if plan.inputs
            else "encoded by the VAE and the text encoder at each step"
        )
    )
    logger.info(f"  Num trainable parameters = {sum(p.numel() for g in params_to_optimize for p in g['params'])}")
    logger.info(f"  Num examples = {len(train_dataset)}")
    logger.info(f"  Num epochs = {schedule.num_train_epochs}")
    logger.info(f"  Instantaneous batch size per device = {args.train_batch_size}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimization steps = {schedule.max_train_steps}")
    global_step = 0
    first_epoch = 0
    resume_batches = 0

    # Potentially load in the weights and states from a previous save (found and checked complete by the plan)
    if plan.resume is not None:
        logger.info(f"Resuming from checkpoint {plan.resume}")
        accelerator.load_state(str(plan.resume))
        global_step = checkpoint_step(plan.resume)
        first_epoch = global_step // schedule.steps_per_epoch
        resume_batches = (global_step % schedule.steps_per_epoch) * args.gradient_accumulation_steps
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {args.output_dir} yet: starting a new training run.")

    progress_bar = tqdm(
        range(0, schedule.max_train_steps),
        initial=global_step,
        desc="Steps",
        disable=not accelerator.is_local_main_process,
    )

    # Validation videos come from a stock pipeline around the live transformer, switched to eval mode meanwhile.
    generation = GenerationSettings(
        num_frames=plan.clip.num_frames,
        height=plan.clip.height,
        width=plan.clip.width,
        num_inference_steps=args.validation_num_inference_steps,
        guidance_scale=args.guidance_scale,
        use_dynamic_cfg=args.use_dynamic_cfg,
        max_sequence_length=plan.spec.options.max_sequence_length,
    )

    images = validation_images(args, plan, data_order) if args.validation_prompt and plan.spec.image_to_video else None

    def validate(step):
        model.eval()
        if probe:
            log_probe(probe, args, accelerator, step)
        if args.validation_prompt:
            with adapter.encoders_loaded():
                pipe = adapter.pipeline(accelerator.unwrap_model(model).transformer)
                log_validation(pipe, plan, generation, args, accelerator, step, images=images)
                del pipe
        model.train()

    validating = accelerator.is_main_process and (args.validation_prompt or probe)
    validating = validating and accelerator.distributed_type != DistributedType.DEEPSPEED
    if probe and global_step == 0:
        log_probe(probe, args, accelerator, 0)  # where the alignment starts

    def checkpoint(step):
        return save_checkpoint(
            args.output_dir,
            step,
            accelerator.save_state,
            total_limit=args.checkpoints_total_limit,
            is_main_process=accelerator.is_main_process,
            wait_for_everyone=accelerator.wait_for_everyone,
        )

    def any_process(flag: bool) -> bool:
        return bool(accelerator.gather(torch.tensor([flag], device=accelerator.device)).any())

    unreadable = UnreadableClips()  # each warned about and counted once
    nonfinite = NonFiniteBatches(args.max_nonfinite_steps)
    corrupt = CorruptRows(len(train_dataset), args.max_corrupt_row_share)  # stops the run past the share
    running = RunningMeans()  # the loss terms over the batches of an optimizer step
    validation = {"paths": [], "prompts": []}
    model.train()
    for epoch in range(first_epoch, schedule.num_train_epochs):
        train_dataloader.set_epoch(epoch)
        epoch_loader = train_dataloader
        if epoch == first_epoch and resume_batches:
            epoch_loader = accelerator.skip_first_batches(train_dataloader, resume_batches)
        running.reset()
        step_start = time.perf_counter()

        for batch in epoch_loader:
            for clip, reason in unreadable.add(batch["skipped"]):
                logger.warning(f"Skipping unreadable clip {clip}: {reason}", main_process_only=False)
            corrupt.add(batch["corrupt_rows"])
            with accelerator.accumulate(model):
                latents, conditioning = model_inputs(adapter, batch, dtype=weight_dtype)
                terms, student = model(latents, conditioning)
                diffusion_loss = sum(terms.values())
                align = alignment.loss(student, batch) if alignment else torch.zeros_like(diffusion_loss)
                loss = diffusion_loss + (alignment_weight.value if alignment else 0.0) * align  # Eq. 14

                # A non-finite loss on any process skips this batch everywhere instead of training through it.
                values = torch.stack([diffusion_loss.detach(), align.detach(), loss.detach()]).float()
                if all_finite(values, accelerator, global_step + 1):
                    accelerator.backward(loss)
                    running.add(dict(zip(("diffusion", "alignment", "total"), values.tolist())))
                    nonfinite.finite()
                else:
                    nonfinite.skip()  # stops training after --max_nonfinite_steps in a row

                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            # Checks if the accelerator has performed an optimization step behind the scenes
            if accelerator.sync_gradients:
                progress_bar.update(1)
                global_step += 1
                # A step of skipped batches logs no loss.
                logs = {f"loss/{k}": v for k, v in running.means().items()}
                if "loss/total" in logs:  # diffusers' examples log `loss`: the same value, under their name
                    logs["loss"] = logs["loss/total"]
                logs.update(
                    {
                        "lr": lr_scheduler.get_last_lr()[0],
                        "step_time": time.perf_counter() - step_start,
                        "data/skipped_clips": len(unreadable),
                        "data/skipped_batches": nonfinite.total,
                    }
                )
                if running.count and grad_norm is not None:
                    logs["grad_norm"] = float(grad_norm)
                if alignment_weight is not None:  # the weight this step trained with, then the schedule moves on
                    logs["alignment/weight"] = alignment_weight.value
                    tracked = step_alignment_loss(logs, accelerator) if alignment_weight.tracks_loss else None
                    alignment_weight.update(tracked)
                    if alignment_weight.ema is not None:
                        logs["alignment/loss_ema"] = alignment_weight.ema
                progress_bar.set_postfix(loss=logs.get("loss/total", "skipped"), lr=logs["lr"])
                accelerator.log(logs, step=global_step)
                running.reset()
                step_start = time.perf_counter()

                if global_step % args.checkpointing_steps == 0:
                    logger.info(f"Saved state to {checkpoint(global_step)}")
                if preemption.requested(any_process if accelerator.num_processes > 1 else None):
                    saved = Path(args.output_dir, f"checkpoint-{global_step}")
                    if global_step % args.checkpointing_steps:
                        saved = checkpoint(global_step)
                    received = preemption.received or signal.SIGTERM  # another process's, if not this one's
                    logger.warning(
                        f"{received.name} received: stopped after step {global_step} and saved {saved}; continue "
                        "with --resume_from_checkpoint latest."
                    )
                    accelerator.end_training()
                    sys.exit(preempted_exit_status(received))

                if validating and args.validation_steps and global_step % args.validation_steps == 0:
                    validate(global_step)

            if global_step >= schedule.max_train_steps:
                break

        validated = args.validation_steps and global_step % args.validation_steps == 0  # at this step, just now
        if validating and args.validation_epochs and (epoch + 1) % args.validation_epochs == 0 and not validated:
            validate(global_step)

    if probe and probe.last_step != global_step:
        log_probe(probe, args, accelerator, global_step)  # where the alignment ends

    # Save the final weights (the LoRA or the transformer, and the projector beside them).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(model)
        with disk_full_is_one_line("the final weights", args.output_dir, intact_checkpoints(args.output_dir)):
            trained.save_trained(args.output_dir)  # as trained, in fp32: load it with dtype=torch.bfloat16
        if unreadable:
            logger.warning(
                f"{len(unreadable)} unreadable clip(s) were skipped during training: {unreadable.summary()}"
            )
        if nonfinite.total:
            logger.warning(f"{nonfinite.total} batch(es) with a non-finite loss were skipped during training.")
        if adapter.truncated_captions:
            logger.warning(cli.translate(adapter.truncated_captions.summary()))

        # Final validation with a stock pipeline loaded from what was just saved, as a user would load it.
        if args.validation_prompt and args.num_validation_videos > 0:
            del trained
            free_memory()
            weights = {"lora" if adapter.training_mode == "lora" else "transformer": args.output_dir}
            pipe = plan.spec.load_trained_pipeline(
                **weights, variant=args.variant, dtype=weight_dtype, device=accelerator.device
            )
            plan.spec.use_sampler(pipe)  # the evaluation protocol's sampler, as during training
            validation["paths"], validation["prompts"] = log_validation(
                pipe, plan, generation, args, accelerator, global_step, final=True, images=images
            )
        save_model_card(
            repo_id or args.hub_model_id or Path(args.output_dir).name,
            args.output_dir,
            spec=plan.spec,
            weights=repo_id or args.output_dir,
            training_mode=adapter.training_mode,
            hyperparameters={
                **card_hyperparameters(args, plan.spec, resolved),
                **(
                    {"alignment_weight (last step)": alignment_weight.at(max(global_step - 1, 0))} if alignment else {}
                ),
            },
            dataset=args.dataset_name or args.instance_data_root,
            validation_prompts=validation["prompts"],
            videos=validation["paths"],
            generation=generation,
        )
        if args.push_to_hub:
            upload_folder(
                repo_id=repo_id,
                folder_path=args.output_dir,
                commit_message="End of training",
                ignore_patterns=["checkpoint-*", "checkpoint-*/**", f"{args.logging_dir}/**", ".*"],  # .*: the lock
            )
        saved = (
            "Final weights, model card and validation videos"
            if validation["paths"]
            else "Final weights and model card"
        )
        logger.info(f"{saved} are in {args.output_dir}")
        output_lock.release()

    accelerator.end_training()
