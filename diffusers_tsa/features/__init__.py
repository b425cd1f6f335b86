"""What the frozen models compute for training clips, computed once and stored by `datasets.map` transforms.

`teacher_targets` is the one computation of what M-TSA aligns to, run online by training or once by `TeacherFeatures`;
training then reads `teacher_features` (F, H, W, C) and `motion_mask` (F, H, W) from the dataset and never runs the
teacher. `ModelInputs` stores the student's VAE posterior and prompt embeddings, so that training loads neither its
VAE encoder nor its text encoder; `Precompute` runs both on one decode of each clip. The command line (one GPU or
many, each process maps its own shard) is `python -m diffusers_tsa.features`:

    accelerate launch -m diffusers_tsa.features --dataset_name clips.csv --video_column video \
        --pretrained_model_name_or_path THUDM/CogVideoX-2b \
        --teacher_model_name_or_path videomaev2-base-distilled --output_dir clips-cached

- `teacher_features`: `teacher_targets`, `TeacherFeatures`, `decode_teacher_features`.
- `model_inputs`: `ModelInputs`.
- `transform`: what every transform shares (`ClipTransform`, `Precompute`, the storage dtypes).
- `precomputed`: reading a precomputed table for training (its settings, checked).
The column names are `diffusers_tsa.data.columns`'s, re-exported here.

The names are imported on first use, so that the command parses its flags before torch is imported.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports


if TYPE_CHECKING:
    from ..data.columns import FEATURES_COLUMN, MASK_COLUMN, SETTINGS_COLUMN, VALID_COLUMN
    from .model_inputs import ModelInputs
    from .teacher_features import TeacherFeatures, decode_teacher_features, teacher_targets
    from .transform import STORAGE_DTYPES, ClipTransform, Precompute, from_storage


#: Public name -> the module it comes from.
_SOURCES = {
    "ClipTransform": ".transform",
    "FEATURES_COLUMN": "..data.columns",
    "MASK_COLUMN": "..data.columns",
    "ModelInputs": ".model_inputs",
    "Precompute": ".transform",
    "SETTINGS_COLUMN": "..data.columns",
    "STORAGE_DTYPES": "..choices",
    "TeacherFeatures": ".teacher_features",
    "VALID_COLUMN": "..data.columns",
    "decode_teacher_features": ".teacher_features",
    "from_storage": ".transform",
    "teacher_targets": ".teacher_features",
}

__all__ = sorted(_SOURCES)
__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
