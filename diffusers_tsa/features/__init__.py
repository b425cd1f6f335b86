"""What the frozen models compute for training clips, computed once and stored by `datasets.map` transforms.

`teacher_targets` is the one computation of what M-TSA aligns to, run online by training or once by `TeacherFeatures`;
training then reads `teacher_features` (F, H, W, C) and `motion_mask` (F, H, W) from the dataset and never runs the
teacher. `ModelInputs` stores the student's VAE posterior and prompt embeddings, so that training loads neither its
VAE encoder nor its text encoder; `Precompute` runs both on one decode of each clip. The command line (one GPU or
many, each process maps its own shard) is `python -m diffusers_tsa.features`:

    accelerate launch -m diffusers_tsa.features --dataset_name clips.csv --video_column video \\
        --pretrained_model_name_or_path THUDM/CogVideoX-2b \\
        --teacher_model_name_or_path videomaev2-base-distilled --output_dir clips-cached

- `teacher_features`: `teacher_targets`, `TeacherFeatures`, `decode_teacher_features`.
- `model_inputs`: `ModelInputs`.
- `transform`: what every transform shares (`ClipTransform`, `Precompute`, the storage dtypes).
- `precomputed`: reading a precomputed table for training (its settings, checked).
The column names are `diffusers_tsa.data.columns`'s, re-exported here.
"""

from ..data.columns import FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN, VALID_COLUMN
from .model_inputs import ModelInputs
from .teacher_features import TeacherFeatures, decode_teacher_features, teacher_targets
from .transform import STORAGE_DTYPES, ClipTransform, Precompute, from_storage


__all__ = [
    "FEATURES_COLUMN",
    "MASK_COLUMN",
    "SETTINGS_COLUMN",
    "STORAGE_DTYPES",
    "VALID_COLUMN",
    "ClipTransform",
    "ModelInputs",
    "Precompute",
    "TeacherFeatures",
    "decode_teacher_features",
    "from_storage",
    "teacher_targets",
]
