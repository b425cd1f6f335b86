"""diffusers-tsa: Tempered Self-Similarity Alignment for video diffusion models."""

__version__ = "0.1.0.dev0"
