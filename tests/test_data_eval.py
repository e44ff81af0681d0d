"""Data loading, block packing, caching and the perplexity protocol."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from quantgpt import QuantConfig, evaluate, quantize_model
from quantgpt.data import blocks, cache_dir, tokenize_files
from quantgpt.errors import QuantGPTError


def test_txt_jsonl_and_folder(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text("Hello world. " * 20)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": "Hi there " * 10}) for _ in range(3)))
    a = tokenize_files(tmp_path / "a.txt", tokenizer)
    b = tokenize_files(tmp_path / "b.jsonl", tokenizer)
    both = tokenize_files(tmp_path, tokenizer)
    assert both.numel() == a.numel() + b.numel() + 1  # joined by one end-of-text token
    assert torch.equal(both[: a.numel()], a)


def test_a_file_given_twice_counts_twice_and_is_tokenized_once(tmp_path, tokenizer):
    """A mix weights a file by naming it twice: its tokens appear twice, joined by end-of-text, from one pass."""
    (tmp_path / "a.txt").write_text("Hello world. " * 20)
    (tmp_path / "b.txt").write_text("Hi there " * 10)
    a, b = (tokenize_files(tmp_path / n, tokenizer, use_cache=False) for n in ("a.txt", "b.txt"))
    calls = []

    class Counting:  # the tokenizer, counting the texts it is given
        def __call__(self, text, **kw):
            calls.append(len(text))
            return tokenizer(text, **kw)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    mix = tokenize_files([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "a.txt"], Counting(), use_cache=False)
    eos = torch.tensor([tokenizer.eos_token_id])
    assert torch.equal(mix, torch.cat([a, eos, b, eos, a]))
    assert sorted(calls) == sorted([len("Hello world. " * 20), len("Hi there " * 10)])


def test_cache_is_keyed_by_content(tmp_path, tokenizer):
    f = tmp_path / "a.txt"
    f.write_text("one two three " * 30)
    first = tokenize_files(f, tokenizer)
    assert len(list((cache_dir() / "tokens").iterdir())) >= 1
    assert torch.equal(tokenize_files(f, tokenizer), first)
    f.write_text("four five six " * 30)
    assert not torch.equal(tokenize_files(f, tokenizer)[:5], first[:5])


@pytest.mark.parametrize("content,match", [("", "empty"), ("   \n", "empty")])
def test_empty_data(tmp_path, tokenizer, content, match):
    f = tmp_path / "e.txt"
    f.write_text(content)
    with pytest.raises(QuantGPTError, match=match):
        tokenize_files(f, tokenizer)


def test_bad_jsonl_and_missing(tmp_path, tokenizer):
    f = tmp_path / "e.jsonl"
    f.write_text('{"txt": 1}\n')
    with pytest.raises(QuantGPTError, match="'text' field"):
        tokenize_files(f, tokenizer)
    with pytest.raises(QuantGPTError, match="no such"):
        tokenize_files(tmp_path / "nope.txt", tokenizer)


def test_blocks_drop_remainder_and_reject_short():
    ids = torch.arange(25)
    b = blocks(ids, 8)
    assert b.shape == (3, 8) and torch.equal(b.flatten(), ids[:24])
    with pytest.raises(QuantGPTError, match="fewer than one block"):
        blocks(ids, 32)


def _manual_ppl(model, ids, seq_len):
    nll, n = 0.0, 0
    with torch.no_grad():
        for a in range(0, ids.numel() - seq_len + 1, seq_len):
            x = ids[a:a + seq_len][None]
            logits = model(x).logits[0, :-1]
            nll += F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            n += seq_len - 1
    return math.exp(nll / n), n


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("quant", [False, True])
def test_perplexity_matches_full_logits(tiny, arch, quant):
    m = tiny(arch)
    if quant:
        quantize_model(m, QuantConfig(bits="2-2-8"))
    ids = torch.randint(0, 300, (300,))
    r = evaluate(m, ids, seq_len=64, batch_size=2, progress=False)
    ppl, n = _manual_ppl(m, ids, 64)
    assert r["tokens"] == n == 4 * 63 and r["windows"] == 4
    assert r["perplexity"] == pytest.approx(ppl, rel=1e-4)
    assert 0 <= r["accuracy"] <= 1


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_window_halves(tiny, arch):
    """The first half of each 64-token window is what windows of 32 at the same starts score (a causal model
    sees the same prefix); the two halves' NLLs, weighted by their counts (31 and 32 a window), make the whole."""
    m = tiny(arch)
    ids = torch.randint(0, 300, (300,))
    r = evaluate(m, ids, seq_len=64, batch_size=3, progress=False)
    first = torch.cat([ids[a:a + 32] for a in range(0, 300 - 64 + 1, 64)])
    assert r["perplexity_halves"][0] == pytest.approx(evaluate(m, first, seq_len=32, progress=False)["perplexity"],
                                                      rel=1e-5)
    lo, hi = (math.log(p) for p in r["perplexity_halves"])
    assert (31 * lo + 32 * hi) / 63 == pytest.approx(r["nll"], rel=1e-6)
    bart = evaluate(tiny("bart"), ids, seq_len=64, progress=False)["perplexity_halves"]
    assert all(math.isfinite(p) for p in bart)


def test_evaluate_finds_the_tables_once(tiny, monkeypatch):
    """evaluate finds the quantized tables once for all its windows; shared_tables never walks the modules again."""
    import quantgpt.modules as modules

    m = tiny("llama")
    quantize_model(m, QuantConfig(bits="2-2-8"))
    ids = torch.randint(0, 300, (300,))
    want = evaluate(m, ids, seq_len=64, batch_size=1, progress=False)["perplexity"]
    walks = []
    monkeypatch.setattr(modules, "quant_embeddings", lambda model: walks.append(1) or [])
    assert evaluate(m, ids, seq_len=64, batch_size=1, progress=False)["perplexity"] == want
    assert walks == []


def test_sliding_window_scores_each_token_once(tiny):
    m = tiny("llama")
    ids = torch.randint(0, 300, (200,))
    r = evaluate(m, ids, seq_len=64, stride=16, progress=False)
    starts = list(range(0, 200 - 64 + 1, 16))
    assert r["tokens"] == 63 + 16 * (len(starts) - 1)
    # the same windows scored by hand
    nll = 0.0
    with torch.no_grad():
        for i, a in enumerate(starts):
            x = ids[a:a + 64][None]
            lp = F.cross_entropy(m(x).logits[0, :-1], x[0, 1:], reduction="none")
            nll += (lp if i == 0 else lp[-16:]).sum().item()
    assert r["nll"] == pytest.approx(nll / r["tokens"], rel=1e-5)


@pytest.mark.parametrize("stride", [None, 16])
def test_per_window_nll_is_each_windows_mean(tiny, stride):
    """per_window: each window's mean NLL over the tokens it scores, in order (batches of 3 over 5 or 9 windows, so
    a short last batch); their mean weighted by the scored counts is the whole text's NLL, and each matches the
    window scored by hand."""
    m = tiny("llama")
    ids = torch.randint(0, 300, (320,))
    r = evaluate(m, ids, seq_len=64, stride=stride, batch_size=3, progress=False, per_window=True)
    starts = list(range(0, 320 - 64 + 1, stride or 64))
    counts = [63] + [(stride or 63)] * (len(starts) - 1)
    assert len(r["window_nll"]) == r["windows"] == len(starts) and sum(counts) == r["tokens"]
    assert sum(w * c for w, c in zip(r["window_nll"], counts)) / r["tokens"] == pytest.approx(r["nll"], rel=1e-5)
    with torch.no_grad():
        for i in (0, len(starts) - 1):
            x = ids[starts[i]:starts[i] + 64][None]
            lp = F.cross_entropy(m(x).logits[0, :-1], x[0, 1:], reduction="none")[-counts[i]:]
            assert r["window_nll"][i] == pytest.approx(lp.mean().item(), rel=1e-4)
    assert "window_nll" not in evaluate(m, ids, seq_len=64, progress=False)  # opt-in


def test_frequency_groups_cut_the_training_tokens_by_share():
    """Ids sorted by count: an id is in the group where the share of training tokens held by more frequent ids falls
    (first 50%, 50-90%, 90-99%, the rest), and ids the text never has are a group of their own."""
    from quantgpt.evaluate import frequency_groups

    ids = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 4 + [4] * 1)
    groups, names = frequency_groups(ids, 7)
    assert groups.tolist() == [0, 1, 1, 2, 3, 4, 4]
    assert names == ["0-50%", "50-90%", "90-99%", "99-100%", "unseen"]


@pytest.mark.parametrize("arch", ["llama", "bart"])
def test_group_nll_splits_the_texts_nll_by_target_group(tiny, arch):
    """token_groups: each group's mean NLL over the scored targets in it; weighted by their counts they give the
    whole text's NLL, the counts add up to the scored tokens, a group of one id matches that id's targets scored by
    hand (causal), and a group no target falls in is None."""
    m = tiny(arch)
    ids = torch.randint(3, 300, (320,))
    groups = (torch.arange(m.config.vocab_size) % 3).long()
    groups[ids[1]] = 3  # ids[1] is a target in the first window
    groups[2] = 4  # id 2 never occurs: randint starts at 3
    r = evaluate(m, ids, seq_len=64, batch_size=3, progress=False, token_groups=groups)
    assert sum(r["group_tokens"]) == r["tokens"] and r["group_tokens"][4] == 0 and r["group_nll"][4] is None
    assert sum(v * k for v, k in zip(r["group_nll"], r["group_tokens"]) if k) / r["tokens"] == pytest.approx(r["nll"], rel=1e-5)
    if arch == "llama":
        with torch.no_grad():
            lps, starts = [], range(0, 320 - 64 + 1, 64)
            for a in starts:
                x = ids[a:a + 64][None]
                lp = F.cross_entropy(m(x).logits[0, :-1], x[0, 1:], reduction="none")
                lps.append(lp[x[0, 1:] == ids[1]])
        lp = torch.cat(lps)
        assert r["group_tokens"][3] == lp.numel() and r["group_nll"][3] == pytest.approx(lp.mean().item(), rel=1e-4)
    assert "group_nll" not in evaluate(m, ids, seq_len=64, progress=False)  # opt-in


def test_bart_is_scored_on_reconstruction(tiny):
    m = tiny("bart")
    r = evaluate(m, torch.randint(3, 300, (130,)), seq_len=64, progress=False)
    assert r["tokens"] == 2 * 63 and math.isfinite(r["perplexity"])


def test_eval_text_too_short(tiny):
    with pytest.raises(QuantGPTError, match="fewer than one window"):
        evaluate(tiny("llama"), torch.arange(10), seq_len=64, progress=False)
