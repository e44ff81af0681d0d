"""A randomly initialised Llama of SmolLM2-135M's shapes, for the benchmarks that time parts of a step on the GPU
without the real model (no download, no staging): the costs there depend on the shapes, not on the weights."""
from __future__ import annotations

VOCAB, HIDDEN = 49152, 576  # SmolLM2-135M's vocabulary and width


def smollm2_shaped(layers: int = 30, vocab: int = VOCAB):
    """The model (``layers`` decoder layers: 30 are SmolLM2-135M's; a smaller ``vocab`` for quick checks), on the CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=1536,
                                        num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                                        tie_word_embeddings=True))
