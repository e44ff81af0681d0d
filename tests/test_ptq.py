"""Round-to-nearest and GPTQ."""
import pytest
import torch

from quantgpt.ptq import gptq_layer, gptq_quantize, rtn_quantize
from quantgpt.ptq.rtn import rtn_config
from quantgpt.quantizers.minmax import MinMaxQuantizer


def _correlated_inputs(n=2048, d=64, rank=16, seed=0):
    """Inputs mostly in a low-dimensional subspace, as transformer activations are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) + 0.3 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("bits,group", [(4, None), (3, 16), (2, 16)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output_error(bits, group, act_order):
    X = _correlated_inputs()
    g = torch.Generator().manual_seed(1)
    Wt = torch.randn(32, 64, generator=g) * 0.1
    H = 2 * X.t() @ X / X.shape[0]
    q = MinMaxQuantizer(bits, Wt.shape, "group" if group else "channel", group)
    q.initialize(Wt)
    rtn = q(Wt)
    Q, s, z = gptq_layer(Wt, H, bits, group, act_order=act_order)
    err = lambda A: (X @ (Wt - A).t()).square().sum().item()  # noqa: E731
    assert err(Q) < 0.5 * err(rtn)
    # Q lies on its own grid: re-quantizing it with the returned parameters gives it back
    q.set_params(s, z)
    assert torch.allclose(q(Q), Q, atol=1e-6)


def test_gptq_model_forward_reproduces_solution(tiny):
    torch.manual_seed(0)
    m = tiny("llama")
    rtn_quantize(m, rtn_config("4-16-16", group_size=16))
    calib = torch.randint(0, 300, (8, 32))
    before = m.model.layers[1].mlp.down_proj.weight.detach().clone()
    gptq_quantize(m, calib, progress=False)
    layer = m.model.layers[1].mlp.down_proj
    assert not torch.equal(layer.weight, before)  # GPTQ moved the weights
    assert torch.allclose(layer.quantized_weight(), layer.weight, atol=1e-6)  # and they are on the grid


def test_gptq_propagates_quantized_inputs_and_beats_rtn_on_model_output(tiny):
    torch.manual_seed(0)
    ref = tiny("gpt2")
    x = torch.randint(0, 300, (16, 48))
    with torch.no_grad():
        target = ref(x).logits
    errs = {}
    for method in ("rtn", "gptq"):
        m = tiny("gpt2")
        rtn_quantize(m, rtn_config("3-16-16", group_size=16))
        if method == "gptq":
            gptq_quantize(m, x, progress=False)
        with torch.no_grad():
            errs[method] = (m(x).logits - target).square().mean().item()
    assert errs["gptq"] < errs["rtn"]


def test_rtn_is_round_to_nearest(tiny):
    m = tiny("llama")
    w = m.model.layers[0].self_attn.q_proj.weight.detach().clone()
    rtn_quantize(m, rtn_config("4-16-16", group_size=8))
    q = m.model.layers[0].self_attn.q_proj.weight_quantizer
    wq = q(w)
    step = q.scale.reshape(w.shape[0], -1).repeat_interleave(8, 1)
    assert ((wq - w).abs() <= step / 2 + 1e-7).all()
    assert len(torch.unique(q.encode(w).codes[0, :8])) <= 16


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gptq_block_by_block_equals_running_the_model(tiny, arch):
    """Decoder blocks run on their cached inputs (the outputs of the quantized blocks before them) give the same
    GPTQ solution as running the whole model up to each layer group, which the code falls back to."""
    calib = torch.randint(0, 300, (6, 24))
    solved = []
    for by_block in (True, False):
        m = tiny(arch)
        rtn_quantize(m, rtn_config("3-16-8", group_size=16))
        gptq_quantize(m, calib, batch_size=4, progress=False, by_block=by_block)
        solved.append({n: p.detach().clone() for n, p in m.named_parameters()})
    assert solved[0].keys() == solved[1].keys()
    assert all(torch.allclose(solved[0][n], solved[1][n], atol=1e-6) for n in solved[0])
