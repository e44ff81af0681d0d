"""quantize_model: what is swapped, what is left alone, tying, skips and errors."""
import pytest
import torch
from torch import nn

from quantgpt import QuantConfig, quantize_model
from quantgpt.errors import QuantGPTError
from quantgpt.modules import QuantConv1D, QuantEmbedding, QuantLinear


def _types(model):
    return {n: type(m) for n, m in model.named_modules()}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bart"])
def test_swap_leaves_other_modules_untouched(tiny, arch):
    m = tiny(arch)
    before = _types(m)
    float_params = {n: p.detach().clone() for n, p in m.named_parameters()}
    quantize_model(m, QuantConfig(bits="2-2-8"))
    after = _types(m)
    for name, cls in before.items():
        if issubclass(cls, nn.Linear) or cls.__name__ == "Conv1D":
            assert issubclass(after[name], QuantLinear), name
            assert (after[name] is QuantConv1D) == (cls.__name__ == "Conv1D")
        elif name.endswith(("wpe", "embed_positions")):
            assert after[name] is cls, name  # position embeddings stay float
        elif issubclass(cls, nn.Embedding):
            assert after[name] is QuantEmbedding, name
        elif name:
            assert after[name] is cls, name  # norms, activations, containers untouched
    # the float master weights are the same numbers under the same names
    for n, p in m.named_parameters():
        if n in float_params:
            assert torch.equal(p, float_params[n]), n


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bart"])
def test_tied_embedding_and_head_stay_tied(tiny, arch):
    m = tiny(arch)
    quantize_model(m, QuantConfig(bits="2-2-8"))
    emb, head = m.get_input_embeddings(), m.get_output_embeddings()
    assert isinstance(emb, QuantEmbedding) and isinstance(head, QuantLinear)
    assert head.weight is emb.weight
    assert torch.equal(head.quantized_weight(), emb.quantized_weight())
    # a training step moves the one shared tensor
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randint(0, 300, (2, 12))
    m.train()
    out = m(input_ids=x, labels=x)
    out.loss.backward()
    opt.step()
    assert head.weight is emb.weight
    assert torch.equal(head.quantized_weight(), emb.quantized_weight())
    if arch == "bart":
        assert m.model.encoder.embed_tokens.weight is m.model.decoder.embed_tokens.weight is emb.weight


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_shared_tables_quantize_the_table_once_with_the_same_gradients(tiny, arch):
    from quantgpt.lm import Head, hidden_states, hidden_states_and_head
    from quantgpt.modules import quant_embeddings

    x = torch.randint(0, 300, (2, 12))
    grads, losses = [], []
    for share in (False, True, "given"):  # "given": the tables found once by the caller, as the trainer keeps them
        m = tiny(arch)
        quantize_model(m, QuantConfig(bits="2-2-8", group_size=16))
        emb = m.get_input_embeddings()
        calls = []
        emb.weight_quantizer.register_forward_hook(lambda *a: calls.append(1))
        m.train()
        if share:  # as the trainer and evaluate run it
            out, head = hidden_states_and_head(m, x, tables=quant_embeddings(m) if share == "given" else None)
        else:  # the lookup's table, then the head's own
            out, head = hidden_states(m, x), Head(m)
        h = out.last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(h[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        assert len(calls) == (1 if share else 2)
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
        assert emb._shared is None  # dropped on leaving: the next forward quantizes the updated weights
    for i in (1, 2):
        torch.testing.assert_close(losses[i], losses[0], rtol=0, atol=0)
        assert grads[0].keys() == grads[i].keys() and any("gamma" in n for n in grads[0])
        for n in grads[0]:
            torch.testing.assert_close(grads[i][n], grads[0][n], rtol=1e-6, atol=1e-7)


def test_untied_head_gets_its_own_embedding_bits(tiny):
    m = tiny("llama", tie_word_embeddings=False)
    quantize_model(m, QuantConfig(bits="4-2-8"))
    head = m.get_output_embeddings()
    assert head.weight is not m.get_input_embeddings().weight
    assert head.weight_quantizer.bits == 2
    assert m.model.layers[0].mlp.up_proj.weight_quantizer.bits == 4


def test_float_embedding_keeps_head_float(tiny):
    m = tiny("gpt2")
    quantize_model(m, QuantConfig(bits="2-16-8"))
    assert type(m.get_input_embeddings()) is nn.Embedding
    assert type(m.get_output_embeddings()) is nn.Linear


def test_conv1d_matches_linear_on_transposed_weight(tiny):
    from quantgpt.convert import _weight_q
    from quantgpt.quantizers import ActQuantizer

    m = tiny("gpt2")
    conv = m.transformer.h[0].mlp.c_fc
    lin = nn.Linear(conv.nx, conv.nf)
    lin.weight.data = conv.weight.data.t().clone()
    lin.bias.data = conv.bias.data.clone()
    cfg = QuantConfig(bits="3-16-8", granularity="channel")
    quantize_model(m, cfg)
    ql = QuantLinear(lin.weight, lin.bias, _weight_q("mds", 3, lin.weight, cfg, True), ActQuantizer(8))
    qc = m.transformer.h[0].mlp.c_fc
    x = torch.randn(2, 5, conv.nx)
    assert torch.allclose(ql(x), qc(x), atol=1e-5)
    assert torch.allclose(qc.weight_quantizer.gamma, ql.weight_quantizer.gamma)


def test_skip_patterns(tiny):
    m = tiny("llama")
    quantize_model(m, QuantConfig(bits="4-16-8", skip=("*.mlp.*",)))
    assert type(m.model.layers[0].mlp.up_proj) is nn.Linear
    assert isinstance(m.model.layers[0].self_attn.q_proj, QuantLinear)


def test_nothing_to_quantize(tiny):
    m = tiny("llama")
    with pytest.raises(QuantGPTError, match="nothing to quantize"):
        quantize_model(m, QuantConfig(bits="4-16-16", skip=("*",)))


def test_group_size_must_divide_width(tiny):
    m = tiny("llama")
    with pytest.raises(QuantGPTError, match="does not divide"):
        quantize_model(m, QuantConfig(bits="4-16-16", quantizer="minmax", group_size=24))


def test_already_quantized(tiny):
    m = quantize_model(tiny("llama"), QuantConfig())
    with pytest.raises(QuantGPTError, match="already"):
        quantize_model(m, QuantConfig())


def test_quantconfig_scale_layout_rules():
    """QuantConfig follows the layout rules of TrainConfig (one resolve_grouping) with the paper's defaults: one
    clip per matrix unless a group size is given; the embedding follows the weights unless told; a group size
    with another granularity, or group without a size, is an error."""
    c = QuantConfig()
    assert (c.granularity, c.group_size, c.embedding_granularity, c.embedding_group_size) == ("tensor", None, None, None)
    c = QuantConfig(group_size=32, embedding_group_size=16)
    assert (c.granularity, c.group_size, c.embedding_granularity, c.embedding_group_size) == ("group", 32, "group", 16)
    assert QuantConfig(granularity="channel").group_size is None
    assert QuantConfig.from_dict(QuantConfig(group_size=64).to_dict()).group_size == 64
    for kw, message in ((dict(granularity="channel", group_size=32), "weight group size applies to group"),
                        (dict(granularity="group"), r"needs a group size \(--group-size G\)"),
                        (dict(embedding_granularity="group"), r"needs a group size \(--embedding-group-size G\)"),
                        (dict(embedding_granularity="tensor", embedding_group_size=8), "embedding group size applies"),
                        (dict(group_size=0), "bad weight group size 0"),
                        (dict(granularity="row"), "unknown weight granularity 'row'")):
        with pytest.raises(QuantGPTError, match=message):
            QuantConfig(**kw)
