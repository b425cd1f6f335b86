"""The tiny tokenizer and text encoders every tiny pipeline shares (built in memory, no download)."""

from __future__ import annotations

import torch


#: Width of the tiny text encoders' embeddings (the tiny transformers' text input).
TINY_TEXT_EMBED_DIM = 32

#: The tiny tokenizer's vocabulary: the words of the demo's, tests' and benchmarks' captions (others become <unk>).
TINY_WORDS = (
    "a an the is to and on at of into ball square cat glass water red green blue yellow white thrown gently hard "
    "right left falls jumps pours bounces floor moves speed . , 0 1 2 3 4 5 6 7 8 9"
).split()


def tiny_tokenizer():
    """A lower-casing word-level tokenizer over `TINY_WORDS`, built in memory; it saves, reloads with
    `AutoTokenizer`, and works with transformers 4 and 5 (NOVA's `diffnext` needs 4)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", *TINY_WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


def tiny_text_encoder(tokenizer, *, seed: int = 0, width: int = TINY_TEXT_EMBED_DIM, umt5: bool = False):
    """A tiny T5 encoder (UMT5 for Wan) over `tokenizer`'s vocabulary: 2 layers of 4 heads, `width` wide."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(seed)
    return model_class(
        config_class(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    )
