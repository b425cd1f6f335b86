"""The model card (`README.md`) written beside a training run's final weights."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..adapters.options import GenerationSettings
from ..adapters.spec import ModelSpec
from .card_code import card_source, usage_code


#: The example prompt of a card when validation generated nothing.
DEFAULT_PROMPT = "A ball is thrown and bounces on the floor."


def save_model_card(
    repo_id: str,
    output_dir: str | os.PathLike,
    *,
    spec: ModelSpec,
    weights: str,
    training_mode: str,
    hyperparameters: dict,
    dataset: str | None,
    validation_prompts: list[str],
    videos: list[str],
    generation: GenerationSettings,
) -> Path:
    """Writes `output_dir/README.md`: base model, method, every alignment hyperparameter, dataset, tags, the
    family's code to load and run the result (`usage_code`) and the validation videos.

    Args:
        repo_id (`str`): the card's title: the Hub repository (`--hub_model_id`), or a repo-id-like name for a local
            run.
        output_dir (`str` or `os.PathLike`): where the final weights are.
        spec (`ModelSpec`): the base checkpoint (`--pretrained_model_name_or_path`) that was fine-tuned.
        weights (`str`): where the card's code loads the trained weights from: the Hub repository they were pushed
            to, or `output_dir`.
        training_mode (`str`): `"lora"` or `"full"`.
        hyperparameters (`dict`): alignment and optimisation settings, shown as a table.
        dataset (`str`, *optional*): the training data (a local one is named by its absolute path).
        validation_prompts (`list[str]`): prompts of `videos`, in order.
        videos (`list[str]`): validation video paths relative to `output_dir`.
        generation (`GenerationSettings`): how the validation videos were generated (the card's code
            generates with these settings).
    """
    base_model = spec.pretrained_model_name_or_path
    method = hyperparameters.get("alignment_loss", "none")
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in hyperparameters.items())
    gallery = "\n".join(f"- *{prompt}*: [{video}]({video})" for prompt, video in zip(validation_prompts, videos))
    code = usage_code(spec, weights, training_mode, (validation_prompts or [DEFAULT_PROMPT])[0], generation)
    local = os.path.exists(base_model)
    base = f"`{card_source(base_model)}`" if local else f"[{base_model}](https://huggingface.co/{base_model})"
    description = f"""
# {repo_id}

{"LoRA" if training_mode == "lora" else "Full"} fine-tune of {base} with
**{method.upper()}** alignment (Tempered Self-Similarity Alignment{", motion-focused" if method == "m-tsa" else ""}),
trained with `train_text_to_video_tsa.py` from diffusers-tsa.
{f"Training data: `{card_source(dataset)}`." if dataset else ""}

## Hyperparameters

| setting | value |
|---|---|
{rows}

The alignment projector (not needed for inference) is saved beside the weights, in `alignment_projector/`.

## Use it

```py
{code}
```

## Validation videos

{gallery or "None were generated."}
"""
    tags = ["text-to-video", "diffusers", "diffusers-training", spec.family, training_mode, "tsa"]
    data = ModelCardData(license="other", library_name="diffusers", base_model=base_model, tags=tags)
    path = Path(output_dir) / "README.md"
    ModelCard(f"---\n{data.to_yaml()}\n---\n{description}").save(path)
    return path
