"""A randomly initialised two-layer Llama sized to a real tokenizer: real transformers code paths in milliseconds."""

from __future__ import annotations

from typing import Any


def tiny_llama(vocab_size: int, seed: int = 0) -> Any:
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()
