"""A test double of NOVA's `NOVATransformer3DModel` and `NOVAPipeline` (package `diffnext`, which CI cannot install).

NOVA's code is not on PyPI, so the CI tests of `diffusers_tsa.adapters.nova` run against this small stand-in, and
`tests/adapters/test_nova_adapter.py` and `tests/adapters/test_family_contract.py` repeat the same checks against the
real package whenever it is importable. The double reproduces what the adapter relies on (checked against NOVA's public repository
at commit 2cd254a):

- the attribute layout: `video_encoder`, `image_encoder` (each with `.blocks`, `.patch_embed.patch_size`,
  `.embed_dim`, and `image_encoder.encoder_depth`), `image_decoder`, `mask_embed`, `text_embed` (`.weight`,
  `.num_tokens`, `.proj`, `.norm`, `.encoders`, `encode_prompts`), `motion_embed` (`.base_flow`), the attention
  projections `blocks[i].attn.qkv` / `.attn.proj`, the `attn_checkpointing` / `mlp_checkpointing` block flags, and
  the `noise_scheduler` / `sample_scheduler` attributes;
- the forward contract: `model(inputs)` with `inputs = {"x": latents (B, C, T, H, W), "prompt": text embeddings,
  "motion_flow": [...], "fps": [...]}` returns `{"loss_t2i", "loss_i2i"}` in train mode and `{"x": latents}` in eval
  mode; each `image_encoder` block returns `(B*T, P + N, D)`: P video-encoder tokens (video patch = 2 x image patch)
  then the N image tokens of the frame, row-major; the first `encoder_depth` blocks see only the visible tokens;
  blocks add their residuals in place;
- the pipeline contract: `NOVAPipeline(transformer, scheduler, vae, text_encoder, tokenizer)` wires the text encoder
  into `transformer.text_embed.encoders`, and `pipe(prompt, max_latent_length=...)` returns `.frames` as uint8
  `(B, T, H, W, 3)` arrays.

It is simpler where the adapter does not look: uniform instead of truncated-normal mask ratios, one masked step and a
few Euler steps for generation, a plain MLP diffusion head.

- `model.py`: the double of `NOVATransformer3DModel`;
- `pipeline.py`: the doubles of `NOVAPipeline` and `diffnext.utils.export_to_video`;
- `builders.py`: tiny checkpoints of the double (`save_tiny_nova_pipeline`) or of the real package
  (`save_tiny_real_nova_pipeline`, whose small archs `register_tiny_nova_archs` registers), and
  `install_diffnext_double(directory)`, which writes a tiny `diffnext` package there whose `diffnext.pipelines` and
  `diffnext.utils` hold the doubles, so the adapter's lazy `import diffnext` finds it (in this process or, through
  `PYTHONPATH`, in an `accelerate launch` subprocess);
- `environment.py`: `tiny_nova_checkpoint(root, kind)`, a tiny checkpoint of the double or of the real package whose
  `diffnext` this process imports while the block runs, with what a launched process needs (`TinyNOVA.env`,
  `TinyNOVA.launcher`);
- `with_tiny_archs.py`: `python -m diffusers_tsa.testing.nova.with_tiny_archs FILE ARGS...` runs FILE with the small
  archs registered on the real package, so that a launched process (the training script, a model card's code) can
  build the tiny real checkpoint.
"""

from .builders import (
    install_diffnext_double,
    register_tiny_nova_archs,
    save_tiny_nova_pipeline,
    save_tiny_real_nova_pipeline,
    tiny_nova_components,
)
from .environment import TinyNOVA, diffnext_modules, tiny_nova_checkpoint
from .model import NOVATransformer3DModel
from .pipeline import NOVAPipeline, export_to_video


__all__ = [
    "NOVAPipeline",
    "NOVATransformer3DModel",
    "TinyNOVA",
    "diffnext_modules",
    "export_to_video",
    "install_diffnext_double",
    "register_tiny_nova_archs",
    "save_tiny_nova_pipeline",
    "save_tiny_real_nova_pipeline",
    "tiny_nova_checkpoint",
    "tiny_nova_components",
]
