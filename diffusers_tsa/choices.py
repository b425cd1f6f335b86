"""The names the commands offer as choices, importable without torch, diffusers, transformers or datasets.

Each tuple is the one list of its kind: the module that acts on the value imports it from here, so that a command
can parse its arguments (and print `--help` or a bad choice's `error:` line) before any heavy module is imported.
"""

#: `--model_family` values: the families of `diffusers_tsa.adapters` (`ModelSpec.family`, keys of `ADAPTERS`, each
#: registered when `diffusers_tsa.adapters` imports its module).
MODEL_FAMILIES = ("cogvideox", "hunyuan_video15", "kandinsky5", "ltx2", "ltx_video", "nova", "sana_video", "wan")
#: `FlowMatching.weighting_scheme` values (`--flow_weighting_scheme`).
WEIGHTING_SCHEMES = ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none")
#: `ClipSpec.reshape_mode` values (`--video_reshape_mode`).
RESHAPE_MODES = ("center", "random", "stretch")
#: Old names of reshape modes -> the mode they stand for. `"none"` stretched here but random-crops in diffusers'
#: `train_cogvideox_lora.py`: it was renamed `"stretch"`.
DEPRECATED_RESHAPE_MODES = {"none": "stretch"}
#: The video decoders (`--video_backend`, `read_video(backend=)`), in the order `"auto"` tries them.
VIDEO_BACKEND_NAMES = ("torchcodec", "decord", "imageio-ffmpeg")
#: `TeacherInput.frames` values (`--teacher_frames`).
TEACHER_FRAMES = ("uniform", "latent", "pooled")
#: `AlignmentProjector.head` values (`--projector_head`): VideoREPA's MLP with a learned resampler (`"mlp"`), or
#: SimpleTuner's CREPA projector, LayerNorm then one Linear, resized to the teacher grid without weights.
PROJECTOR_HEADS = ("mlp", "layernorm_linear")
#: Storage dtype of precomputed tensors (`--storage_dtype`) -> Arrow dtype of the column: Arrow has no bfloat16, so
#: its bits are stored as uint16.
STORAGE_DTYPES = {"float16": "float16", "bfloat16": "uint16", "float32": "float32"}
