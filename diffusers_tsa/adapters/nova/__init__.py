"""NOVA (BAAI's autoregressive video model, package `diffnext`): its spec, training adapter and LoRA file."""

from .adapter import NOVAAdapter
from .lora import LORA_WEIGHT_NAME, load_nova_lora, read_nova_lora, save_nova_lora
from .spec import DIFFNEXT_INSTALL, NOVASpec, import_diffnext


__all__ = [
    "DIFFNEXT_INSTALL",
    "LORA_WEIGHT_NAME",
    "NOVAAdapter",
    "NOVASpec",
    "import_diffnext",
    "load_nova_lora",
    "read_nova_lora",
    "save_nova_lora",
]
