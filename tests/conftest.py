"""Tiny random GPT-2, Llama and BART models and a byte-level BPE tokenizer trained inside the tests."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Triton, where installed, runs kernels on CPU tensors in its interpreter: how test_kernels checks the packed-weight
# kernel without a GPU. Triton reads this when it is imported, so it is set before anything imports it.
os.environ.setdefault("TRITON_INTERPRET", "1")

VOCAB = 384


def stop_after(tr, n: int) -> None:
    """A SIGTERM reaching ``tr`` during its step ``n``: the run stops with a checkpoint after that step."""
    step = tr.train_step

    def interrupted():
        row = step()
        if tr.step == n:
            tr._stop_signal = "SIGTERM"
        return row

    tr.train_step = interrupted


def cli_outputs(folder, *flags, capsys) -> tuple[str, float]:
    """``quantgpt generate`` (5 greedy tokens) and ``quantgpt eval`` (200 tokens) of ``folder`` on the CPU with the
    extra ``flags``: the completion and the perplexity."""
    import json

    from quantgpt.cli import main

    assert main(["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "5", "--device", "cpu", "--json",
                 "--quiet", *flags]) == 0
    assert main(["eval", str(folder), "--data", "sample", "--seq-len", "32", "--limit-tokens", "200", "--device", "cpu",
                 "--json", "--quiet", *flags]) == 0
    gen, ev = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    return gen["completion"], ev["perplexity"]


def step_seconds(tr, clock: list, cost) -> None:
    """Each training step ``s`` of ``tr`` moves the fake clock ``clock`` (a one-item list) by ``cost(s)`` seconds,
    before the step's sync, as on a device."""
    losses = tr.losses

    def timed(*a, **k):
        clock[0] += cost(tr.step + 1)
        return losses(*a, **k)

    tr.losses = timed


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("QUANTGPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def sample_text() -> str:
    from quantgpt.data import data_files

    return data_files("sample")[0].read_text()


def make_tokenizer(text: str):
    """A byte-level BPE tokenizer of VOCAB tokens trained on the first 100k characters of ``text``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text[:100_000]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tokenizer(sample_text):
    return make_tokenizer(sample_text)


@pytest.fixture(scope="session")
def ids(tokenizer):
    """The bundled sample text, tokenized: the training stream of the trainer tests."""
    from quantgpt.data import tokenize_files

    return tokenize_files("sample", tokenizer, use_cache=False)


def make_model(arch: str, seed: int = 0, **kw):
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=2, **kw)
        m = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          tie_word_embeddings=kw.pop("tie_word_embeddings", True), **kw)
        m = LlamaForCausalLM(cfg)
    elif arch == "bart":
        cfg = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=kw.pop("encoder_layers", 1),
                         decoder_layers=kw.pop("decoder_layers", 1), encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0, **kw)
        m = BartForConditionalGeneration(cfg)
    else:
        raise ValueError(arch)
    return m.eval()


@pytest.fixture
def tiny():
    return make_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama saved as a transformers folder, with its tokenizer."""
    d = tmp_path_factory.mktemp("tiny_llama")
    make_model("llama").save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d
