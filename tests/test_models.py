"""Reading a real GGUF file: a tiny Llama and the test tokenizer written with gguf's own writer, then loaded by
load_float through transformers' GGUF reader, as the SmolLM2 teacher is."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def _permuted(w: np.ndarray, heads: int) -> np.ndarray:
    """A q or k projection in llama.cpp's order (rotary halves interleaved by head), which transformers' reader
    undoes."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path) -> None:
    """A Llama model (tied embeddings) and its byte-level BPE tokenizer as a float32 GGUF file."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    for add, value in [(w.add_vocab_size, c.vocab_size), (w.add_context_length, c.max_position_embeddings),
                       (w.add_embedding_length, c.hidden_size), (w.add_feed_forward_length, c.intermediate_size),
                       (w.add_block_count, c.num_hidden_layers), (w.add_head_count, c.num_attention_heads),
                       (w.add_head_count_kv, c.num_key_value_heads), (w.add_layer_norm_rms_eps, c.rms_norm_eps),
                       (w.add_rope_dimension_count, c.hidden_size // c.num_attention_heads),
                       (w.add_rope_freq_base, c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters")
                        else c.rope_theta)]:
        add(value)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    special = set(tokenizer.all_special_ids)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for _, i in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", _array(model.model.embed_tokens.weight))
    for i, layer in enumerate(model.model.layers):
        for hf, name in names.items():
            t = _array(layer.get_submodule(hf).weight)
            heads = {"attn_q": c.num_attention_heads, "attn_k": c.num_key_value_heads}.get(name)
            w.add_tensor(f"blk.{i}.{name}.weight", _permuted(t, heads) if heads else t)
    w.add_tensor("output_norm.weight", _array(model.model.norm.weight))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_loads_as_the_model_it_holds_parsed_once(tmp_path, monkeypatch, tiny, tokenizer):
    """load_float reads a GGUF file (no cache: use_cache=False) into the model written to it, logits for logits, with
    its tokenizer; transformers' three reads of the file (config, tokenizer, weights) parse it once, and gguf's
    tensor-name map is built once for the architecture instead of once a module; both are gguf's own again after."""
    from quantgpt.models import load_float

    ref = tiny("llama")
    path = tmp_path / "tiny.gguf"
    write_gguf(ref, tokenizer, path)
    parses, maps = [], []
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def counted_reader(p, *a, **kw):
        parses.append(str(p))
        return reader(p, *a, **kw)

    def counted_map(*a):
        maps.append(a)
        return name_map(*a)

    monkeypatch.setattr(gguf, "GGUFReader", counted_reader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", counted_map)
    model, tok = load_float(str(path), use_cache=False)
    assert parses == [str(path.resolve())]
    assert len(maps) == len(set(maps)) == 1
    assert gguf.GGUFReader is counted_reader and gguf.get_tensor_name_map is counted_map
    x = torch.randint(0, ref.config.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, ref(input_ids=x).logits, rtol=1e-5, atol=1e-5)
    text = "The tower is 324 metres tall, about the same height as an 81-storey building."
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
