"""Tiny NOVA checkpoints (of the double or of the real package) and the `diffnext` stand-in package."""

from __future__ import annotations

from pathlib import Path

import torch

from ..text import tiny_tokenizer
from .model import NOVATransformer3DModel
from .pipeline import NOVAPipeline


def tiny_phi_config(vocab_size: int):
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
    )


def tiny_nova_components(seed: int = 0) -> dict:
    """A tiny pipeline around the double: a CogVideoX-style VAE (x8 space, x4 time, 4 channels), a 2-layer Phi text
    encoder of width 32, a word-level tokenizer and a flow-matching scheduler."""
    from diffusers import AutoencoderKLCogVideoX, FlowMatchEulerDiscreteScheduler
    from transformers import PhiModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        scaling_factor=0.18215,
    )
    text_encoder = PhiModel(tiny_phi_config(len(tokenizer)))
    transformer = NOVATransformer3DModel()
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def save_tiny_nova_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Writes a tiny `NOVAPipeline` checkpoint (the double) to `directory`; needs `install_diffnext_double` to load."""
    pipe = NOVAPipeline(**tiny_nova_components(seed))
    pipe.save_pretrained(directory)
    return Path(directory)


def register_tiny_nova_archs() -> tuple[str, str, str]:
    """Registers small widths on the real `diffnext` registries (as NOVA's own configs register its archs); returns
    the arch names."""
    from diffnext.models.transformers import transformer_nova as nova

    nova.VIDEO_ENCODERS.register("vit_d2w64", depth=2, embed_dim=64, num_heads=4)(nova.video_encoder)
    nova.IMAGE_ENCODERS.register("vit_d4w64", depth=4, embed_dim=64, num_heads=4)(nova.image_encoder)
    nova.IMAGE_DECODERS.register("mlp_d2w64", depth=2, embed_dim=64)(nova.image_decoder)
    return ("vit_d2w64", "vit_d4w64", "mlp_d2w64")


def save_tiny_real_nova_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Writes a tiny checkpoint of the real `NOVAPipeline` (needs `diffnext`), laid out as NOVA's Hub checkpoints:
    one subfolder per component and a `model_index.json` naming each component's module."""
    import json

    from diffnext.models.autoencoders.autoencoder_kl_opensora import AutoencoderKLOpenSora
    from diffnext.models.text_encoders.phi import PhiEncoderModel
    from diffnext.models.transformers.transformer_nova import NOVATransformer3DModel as RealNOVATransformer3DModel
    from diffnext.schedulers.scheduling_cfm import FlowMatchEulerDiscreteScheduler

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    components = {
        "transformer": RealNOVATransformer3DModel(
            image_dim=4,
            image_size=[64, 96],
            image_stride=8,
            text_token_dim=32,
            text_token_len=8,
            image_base_size=[4, 6],
            video_base_size=[3, 2, 3],
            arch=register_tiny_nova_archs(),
        ),
        "vae": AutoencoderKLOpenSora(
            down_block_types=("DownEncoderBlock2D",) * 2 + ("DownEncoderBlock3D",) * 2,
            up_block_types=("UpDecoderBlock3D",) * 4,
            block_out_channels=(32,) * 4,
            layers_per_block=1,
            latent_channels=4,
        ),
        "text_encoder": PhiEncoderModel(tiny_phi_config(len(tokenizer))),
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }
    index = {"_class_name": "NOVAPipeline"}
    for name, component in components.items():
        component.save_pretrained(Path(directory) / name)
        module = type(component).__module__
        index[name] = [module if module.startswith("diffnext") else module.split(".")[0], type(component).__name__]
    (Path(directory) / "model_index.json").write_text(json.dumps(index, indent=2))
    return Path(directory)


def install_diffnext_double(directory: str | Path) -> Path:
    """Writes a `diffnext` package into `directory` whose `diffnext.pipelines.NOVAPipeline` and
    `diffnext.utils.export_to_video` are this package's doubles.

    Put `directory` on `sys.path` / `PYTHONPATH` to make `import diffnext` find it.
    """
    package = Path(directory) / "diffnext"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Test double of NOVA\'s diffnext (diffusers_tsa.testing.nova)."""\n')
    (package / "pipelines.py").write_text("from diffusers_tsa.testing.nova import NOVAPipeline  # noqa: F401\n")
    (package / "utils.py").write_text("from diffusers_tsa.testing.nova import export_to_video  # noqa: F401\n")
    return Path(directory)
