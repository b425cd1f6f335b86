"""Column names of the tables diffusers-tsa reads and writes."""

#: The caption and video columns of every table `load_video_dataset` returns (and of what the features CLI saves).
CAPTION = "caption"
VIDEO = "video"

#: The columns `TeacherFeatures` adds: features `(F, H, W, C)`, motion mask `(F, H, W)`, whether the clip was usable,
#: and on every row the JSON of the settings the row was made with (they travel with the data).
FEATURES_COLUMN = "teacher_features"
MASK_COLUMN = "motion_mask"
VALID_COLUMN = "teacher_valid"
SETTINGS_COLUMN = "teacher_settings"
#: The CRC-32 of a usable row's stored features and mask, checked when training reads the row.
FEATURES_CHECKSUM_COLUMN = "teacher_checksum"

#: The columns `ModelInputs` adds: the VAE posterior in the model's latent space `(2C, F, H, W)` (mean and
#: log-variance), each text-encoder output by its name (e.g. `prompt_embeds` `(L, D)`), whether the row is usable, and
#: the settings JSON on every row.
LATENTS_COLUMN = "latent_moments"
INPUTS_VALID_COLUMN = "inputs_valid"
INPUTS_SETTINGS_COLUMN = "inputs_settings"
#: The CRC-32 of a usable row's stored model inputs (its columns by sorted name), checked when training reads the row.
INPUTS_CHECKSUM_COLUMN = "inputs_checksum"


def training_caption(caption: str | None, id_token: str | None = None) -> str:
    """The prompt a caption trains as: `""` for an empty one (as caption dropout trains), after `id_token` if given."""
    caption = caption or ""
    return f"{id_token} {caption}" if id_token else caption
