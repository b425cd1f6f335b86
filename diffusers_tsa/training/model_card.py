"""The model card (`README.md`) written beside a training run's final weights."""

from __future__ import annotations

import os
from pathlib import Path

from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, populate_model_card
from huggingface_hub import ModelCard, ModelCardData

from ..compat import dtype_argument


def save_model_card(
    repo_id: str,
    output_dir: str | os.PathLike,
    *,
    base_model: str,
    training_mode: str,
    hyperparameters: dict,
    dataset: str | None,
    validation_prompts: list[str],
    videos: list[str],
    pipeline_class: str,
) -> Path:
    """Writes `output_dir/README.md`: base model, method, every alignment hyperparameter, dataset, tags, a loading
    snippet and the validation videos.

    Args:
        repo_id (`str`): the Hub repository (`--hub_model_id`), or a repo-id-like name for a local run.
        output_dir (`str` or `os.PathLike`): where the final weights are.
        base_model (`str`): `--pretrained_model_name_or_path`.
        training_mode (`str`): `"lora"` or `"full"`.
        hyperparameters (`dict`): alignment and optimisation settings, shown as a table.
        dataset (`str`, *optional*): the training data.
        validation_prompts (`list[str]`): prompts of `videos`, in order.
        videos (`list[str]`): validation video paths relative to `output_dir`.
        pipeline_class (`str`): the stock pipeline that loads the result.
    """
    method = hyperparameters.get("alignment_loss", "none")
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in hyperparameters.items())
    gallery = "\n".join(f"- *{prompt}*: [{video}]({video})" for prompt, video in zip(validation_prompts, videos))
    dtype = dtype_argument()  # what the diffusers that trained this asks for
    if training_mode == "lora":
        load = (
            f"pipe = {pipeline_class}.from_pretrained(\"{base_model}\", {dtype}=torch.bfloat16)\n"
            f"pipe.load_lora_weights(\"{repo_id}\")  # rank and alpha come with the weights"
        )
    else:
        load = (
            f"transformer = {pipeline_class.replace('Pipeline', 'Transformer3DModel')}.from_pretrained(\"{repo_id}\", "
            f"subfolder=\"transformer\", {dtype}=torch.bfloat16)\n"
            f"pipe = {pipeline_class}.from_pretrained(\"{base_model}\", transformer=transformer, {dtype}=torch.bfloat16)"
        )
    base = base_model if os.path.exists(base_model) else f"[{base_model}](https://huggingface.co/{base_model})"
    description = f"""
# {repo_id}

{"LoRA" if training_mode == "lora" else "Full"} fine-tune of {base} with
**{method.upper()}** alignment (Tempered Self-Similarity Alignment{", motion-focused" if method == "m-tsa" else ""}),
trained with `train_text_to_video_tsa.py` from diffusers-tsa.
{f"Training data: `{dataset}`." if dataset else ""}

## Hyperparameters

| setting | value |
|---|---|
{rows}

The alignment projector (not needed for inference) is saved beside the weights as `alignment_projector.safetensors`.

## Use it

```py
import torch
from diffusers import {pipeline_class}{", " + pipeline_class.replace("Pipeline", "Transformer3DModel") if training_mode == "full" else ""}
from diffusers.utils import export_to_video

{load}
video = pipe("{validation_prompts[0] if validation_prompts else "A ball is thrown and bounces on the floor."}").frames[0]
export_to_video(video, "output.mp4", fps=8)
```

## Validation videos

{gallery or "None were generated."}
"""
    # A new card from diffusers' training template (what `load_or_create_model_card` makes for a new repo,
    # without asking the Hub for an existing card, so local runs stay offline).
    card = ModelCard.from_template(
        card_data=ModelCardData(license="other", library_name="diffusers", base_model=base_model),
        template_path=MODEL_CARD_TEMPLATE_PATH,
        model_description=description,
    )
    tags = ["text-to-video", "diffusers", "diffusers-training", pipeline_class.removesuffix("Pipeline").lower(),
            training_mode, "tsa"]
    card = populate_model_card(card, tags=tags)
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path
