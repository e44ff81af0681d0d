"""Quantizer grids and backward passes, each against the formula it implements."""
import math

import pytest
import torch

from quantgpt.config import Bits, QuantConfig
from quantgpt.errors import QuantGPTError
from quantgpt.quantizers import (ActQuantizer, LAQQuantizer, LSQQuantizer, MDSQuantizer, MinMaxQuantizer,
                                 PACTQuantizer)
from quantgpt.quantizers.activation import clipped_act_ste

torch.manual_seed(0)


def W(out=24, inp=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, inp, generator=g) * 0.05


@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_mds_two_bit_is_exactly_ternary(gran):
    w = W()
    q = MDSQuantizer(2, w.shape, gran, 8 if gran == "group" else None)
    q.initialize(w)
    wq = q(w).detach()
    alpha = q.alpha(q.to_rows(w))  # one alpha per scale row
    rows = q.to_rows(wq)
    for r in range(rows.shape[0]):
        levels = set(torch.unique(rows[r]).tolist())
        a = alpha[r].item()
        assert levels <= {-a, 0.0, a}, (levels, a)
    if gran == "tensor":
        assert len(torch.unique(wq)) == 3


def test_mds_four_bit_has_at_most_15_levels_and_clip_is_gamma_mean_abs():
    w = W()
    q = MDSQuantizer(4, w.shape, init_gamma=2.0)
    q.initialize(w)
    wq = q(w).detach()
    assert len(torch.unique(wq)) <= 15
    alpha = 2.0 * w.abs().mean()
    assert torch.allclose(wq.abs().max(), alpha)
    # the grid is alpha * j / 7
    assert torch.allclose(torch.round(wq / alpha * 7), wq / alpha * 7, atol=1e-5)


def _mds_surrogate(w, gamma, k, mean_grad):
    """The same forward written with a straight-through round; autograd of it is the issue's formula."""
    m = w.abs().mean(1, keepdim=True)
    alpha = gamma * (m if mean_grad else m.detach())
    v = k * torch.clamp(w / alpha, -1, 1)
    return alpha * (v + (torch.round(v) - v).detach()) / k


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("mean_grad", [False, True])
@pytest.mark.parametrize("gran", ["tensor", "channel"])
def test_mds_backward_matches_formula(bits, mean_grad, gran):
    w = W(seed=bits).requires_grad_()
    q = MDSQuantizer(bits, w.shape, gran, mean_grad=mean_grad)
    q.initialize(w.detach())
    with torch.no_grad():
        q.gamma.mul_(torch.linspace(0.6, 1.4, q.gamma.numel()).reshape(q.gamma.shape))  # some weights clipped
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()

    # hand-derived: STE for round; d wq/d alpha = Q(u) - u inside, sign(w) outside; d/d gamma = mean|w| * that
    w2, gamma = w.detach().reshape(q.rows, -1), q.gamma.detach()
    k = 2 ** (bits - 1) - 1
    m = w2.abs().mean(1, keepdim=True)
    alpha = gamma * m
    u = w2 / alpha
    inside = u.abs() <= 1
    Qu = torch.round(k * u.clamp(-1, 1)) / k
    g2 = g.reshape(q.rows, -1)
    dalpha = (g2 * torch.where(inside, Qu - u, torch.sign(w2))).sum(1, keepdim=True)
    dw = g2 * inside + (dalpha * gamma * torch.sign(w2) / w2.shape[1] if mean_grad else 0)
    assert torch.allclose(q.gamma.grad, m * dalpha, rtol=1e-4, atol=1e-7)
    assert torch.allclose(w.grad, dw.reshape(w.shape), rtol=1e-4, atol=1e-7)

    # and the same numbers from autograd through a straight-through surrogate of the forward
    w_s, gamma_s = w.detach().clone().requires_grad_(), gamma.clone().requires_grad_()
    (_mds_surrogate(w_s.reshape(q.rows, -1), gamma_s, k, mean_grad).reshape(w.shape) * g).sum().backward()
    assert torch.allclose(gamma_s.grad, q.gamma.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(w_s.grad, w.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gran", ["tensor", "group"])
def test_mds_full_grid_uses_all_four_two_bit_codes(gran):
    w = W()
    q = MDSQuantizer(2, w.shape, gran, 8 if gran == "group" else None, grid="full")
    q.initialize(w)
    rows, alpha = q.to_rows(q(w).detach()), q.alpha(q.to_rows(w))
    for r in range(rows.shape[0]):
        v = rows[r] / alpha[r] * 4  # in units of alpha / 4: the levels are -3, -1, 1, 3
        assert torch.allclose(v, torch.round(v), atol=1e-5) and set(torch.round(v).tolist()) <= {-3.0, -1.0, 1.0, 3.0}
    if gran == "tensor":
        assert len(torch.unique(rows)) == 4
        # nearest level: every weight inside the clip range is within a quarter alpha of its value
        inside = w.abs() <= alpha.item()
        assert ((w - q(w).detach()).abs()[inside] <= 0.25 * alpha.item() + 1e-7).all()


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("cls", [MDSQuantizer, PACTQuantizer])
def test_full_grid_backward_matches_formula(bits, cls):
    """dL/dalpha on the full grid is sum g * (Q(u) - u inside, Q(u) outside) for mds, PACT's edge rule for pact;
    check both against the hand formula and dL/dw against the straight-through mask."""
    w = W(16, 32, seed=bits).requires_grad_()
    q = cls(bits, w.shape, "channel", grid="full")
    q.initialize(w.detach())
    p = q.gamma if cls is MDSQuantizer else q.alpha
    with torch.no_grad():
        p.mul_(torch.linspace(0.6, 1.4, p.numel()).reshape(p.shape))
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    n = 2 ** (bits - 1)
    alpha = q.alpha(w.detach()) if cls is MDSQuantizer else q.alpha.detach()
    u = w.detach() / alpha
    inside = u.abs() <= 1
    Qu = (torch.floor(n * u.clamp(-1, 1)).clamp(-n, n - 1) + 0.5) / n
    assert torch.equal(w.grad, g * inside)
    if cls is MDSQuantizer:
        dalpha = (g * torch.where(inside, Qu - u, Qu)).sum(1, keepdim=True)
        assert torch.allclose(q.gamma.grad, w.detach().abs().mean(1, keepdim=True) * dalpha, rtol=1e-4, atol=1e-7)
    else:
        dalpha = (g * Qu * ~inside).sum(1, keepdim=True)
        assert torch.allclose(q.alpha.grad, dalpha, rtol=1e-4, atol=1e-7)
    # and from autograd through a straight-through surrogate: alpha * (v + (Q(v) - v).detach()), v = clip(w / alpha)
    if cls is MDSQuantizer:
        gamma_s = q.gamma.detach().clone().requires_grad_()
        a_s = gamma_s * w.detach().abs().mean(1, keepdim=True)
        v = (w.detach() / a_s).clamp(-1, 1)
        Qv = (torch.floor(n * v).clamp(-n, n - 1) + 0.5) / n
        ((a_s * (v + (Qv - v).detach())) * g).sum().backward()
        assert torch.allclose(gamma_s.grad, q.gamma.grad, rtol=1e-4, atol=1e-7)


def test_full_grid_rounds_gaussian_weights_better_than_ternary_at_two_bits():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    errs = {}
    for grid in ("sym", "full"):
        q = MDSQuantizer(2, w.shape, "channel", grid=grid)
        q.initialize(w)
        errs[grid] = (w - q(w).detach()).square().mean().item() / w.square().mean().item()
    assert 0.17 < errs["sym"] < 0.21  # the optimum of ternary on a Gaussian: 0.190
    assert 0.10 < errs["full"] < 0.13  # and of four uniform levels: 0.1175


def test_grid_applies_to_mds_and_pact_only():
    from quantgpt.quantizers import make_weight_quantizer

    with pytest.raises(QuantGPTError, match="grid"):
        make_weight_quantizer("lsq", 2, (8, 8), QuantConfig(quantizer="lsq", grid="full"))
    with pytest.raises(QuantGPTError, match="unknown grid"):
        QuantConfig(grid="nf4")


def test_mds_alpha_follows_the_weights():
    w = W()
    q = MDSQuantizer(2, w.shape, init_gamma=1.5)
    q.initialize(w)
    assert torch.allclose(q(2 * w), 2 * q(w))  # dynamic: doubling w doubles the clip value


def test_mds_init_search_minimises_rounding_error():
    w = W(64, 64)
    q = MDSQuantizer(2, w.shape)
    q.initialize(w)
    def err_at(gamma):
        qq = MDSQuantizer(2, w.shape, init_gamma=gamma)
        qq.initialize(w)
        return (w - qq(w).detach()).square().sum().item()

    best = err_at(q.gamma.item())
    assert all(best <= err_at(g) + 1e-9 for g in (0.5, 1.0, 2.0, 3.0))


def test_pact_only_clipped_weights_move_alpha():
    w = W().requires_grad_()
    q = PACTQuantizer(2, w.shape, init_gamma=1.0)
    q.initialize(w.detach())
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    alpha = q.alpha.detach()
    clipped = w.detach().abs() > alpha
    assert clipped.any() and (~clipped).any()
    assert torch.allclose(q.alpha.grad, (g * torch.sign(w.detach()) * clipped).sum().reshape(1, 1), rtol=1e-5)
    assert torch.equal(w.grad, g * ~clipped)
    assert set(torch.unique(q(w).detach()).tolist()) <= {-alpha.item(), 0.0, alpha.item()}


@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_init_grid_and_gradient(bits):
    w = W().requires_grad_()
    q = LSQQuantizer(bits, w.shape)
    q.initialize(w.detach())
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    assert torch.allclose(q.step, 2 * w.detach().abs().mean() / math.sqrt(qp) * torch.ones(1, 1))
    wq = q(w)
    codes = wq.detach() / q.step.detach()
    assert torch.allclose(codes, torch.round(codes), atol=1e-5)
    assert codes.min() >= -qn and codes.max() <= qp
    g = torch.randn_like(w)
    (wq * g).sum().backward()
    v = w.detach() / q.step.detach()
    lo, hi = v < -qn, v > qp
    inside = ~(lo | hi)
    ds = torch.where(inside, torch.round(v) - v, torch.where(lo, -float(qn), float(qp)))
    gscale = 1 / math.sqrt(w.numel() * qp)
    assert torch.allclose(q.step.grad, (g * ds).sum().reshape(1, 1) * gscale, rtol=1e-4)
    assert torch.equal(w.grad, g * inside)


def test_laq_alpha_is_weighted_least_squares_and_gradient_is_straight_through():
    w = W().requires_grad_()
    q = LAQQuantizer(2, w.shape)
    q.initialize(w.detach())
    d = torch.rand_like(w) + 0.5
    q.set_curvature(d.square() * (1 - 0.999), step=1, beta2=0.999, eps=0.0)  # v_hat = d^2, so curvature = d
    q.train()
    wq = q(w)
    alpha = q.alpha.item()
    b = torch.round((w.detach() / alpha).clamp(-1, 1))
    # alternating minimisation converges: alpha is optimal for its own b under the weighted error
    for _ in range(20):
        q(w)
    alpha = q.alpha.item()
    b = torch.round((w.detach() / alpha).clamp(-1, 1))
    assert alpha == pytest.approx(((d * w.detach() * b).sum() / (d * b * b).sum()).item(), rel=1e-4)
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    assert torch.equal(w.grad, g)
    assert len(torch.unique(wq.detach())) <= 3


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_minmax_grid(bits, symmetric):
    w = W(16, 64)
    q = MinMaxQuantizer(bits, w.shape, "group", 16, symmetric=symmetric)
    q.initialize(w)
    wq = q(w)
    enc = q.encode(w)
    assert torch.allclose(enc.dequantize(), wq, atol=1e-6)
    assert enc.codes.min() >= enc.qmin and enc.codes.max() <= enc.qmax
    assert enc.qmax - enc.qmin == (2**bits - 1 if not symmetric else 2 ** bits - 2)
    # round to nearest: error at most half a step everywhere (the range covers every weight)
    step = q.scale.reshape(16, 4).repeat_interleave(16, 1)  # (out, groups) -> (out, in)
    assert ((w - wq).abs() <= step / 2 + 1e-7).all()


@pytest.mark.parametrize("cls", [MDSQuantizer, PACTQuantizer, LSQQuantizer, LAQQuantizer,
                                 lambda *a: MDSQuantizer(*a, grid="full"), lambda *a: PACTQuantizer(*a, grid="full")])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_encode_dequantize_equals_forward(cls, bits):
    w = W(12, 48, seed=bits)
    q = cls(bits, w.shape, "group", 16)
    q.initialize(w)
    q.eval()
    enc = q.encode(w)
    assert torch.allclose(enc.dequantize(), q(w).detach(), atol=1e-6)
    assert enc.codes.min() >= enc.qmin and enc.codes.max() <= enc.qmax
    assert enc.qmax - enc.qmin + 1 <= 2**bits


def test_activation_quantizer_per_token():
    x = torch.randn(3, 5, 64, requires_grad=True)
    aq = ActQuantizer(8)
    y = aq(x)
    scale = x.detach().abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(torch.round(y.detach() / scale), y.detach() / scale, atol=1e-4)
    assert ((y - x).abs() <= scale / 2 + 1e-6).all()
    g = torch.randn_like(x)
    (y * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_activation_quantizer_per_token_group():
    x = torch.randn(3, 5, 64)
    x[..., 3] *= 50  # an outlier feature: under per-token scales it sets every feature's step
    aq = ActQuantizer(8, "group", group_size=16)
    y = aq(x)
    xg = x.reshape(3, 5, 4, 16)
    scale = xg.abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(y.reshape(3, 5, 4, 16), torch.round(xg / scale) * scale)
    err = lambda q: ((q(x) - x)[..., 16:].norm() / x[..., 16:].norm()).item()  # noqa: E731  (groups without it)
    assert err(aq) < 0.25 * err(ActQuantizer(8))
    with pytest.raises(QuantGPTError, match="does not divide"):
        ActQuantizer(8, "group", group_size=24)(x)


def test_activation_group_size_must_divide_every_layer(tiny):
    from quantgpt import quantize_model

    with pytest.raises(QuantGPTError, match="activation group size 24"):
        quantize_model(tiny("llama"), QuantConfig(bits="4-4-8", act_group_size=24))
    assert QuantConfig().act_group_size == 32 and QuantConfig(act_granularity="token").act_group_size is None
    with pytest.raises(QuantGPTError, match="applies to group"):
        QuantConfig(act_granularity="token", act_group_size=16)
    m = quantize_model(tiny("llama"), QuantConfig(bits="4-4-8", act_group_size=16))
    assert m.model.layers[0].mlp.down_proj.act_quantizer.group_size == 16


def test_activation_learned_clip_gradient():
    x = torch.randn(4, 32, requires_grad=True)
    alpha = torch.tensor([1.0], requires_grad=True)
    y = clipped_act_ste(x, alpha, 127)
    g = torch.randn_like(x)
    (y * g).sum().backward()
    out = x.detach().abs() > 1.0
    assert out.any()
    assert torch.allclose(alpha.grad, (g * torch.sign(x.detach()) * out).sum().reshape(1))
    assert torch.equal(x.grad, g * ~out)
    assert y.detach().abs().max() <= 1.0


@pytest.mark.parametrize("spec", ["5-2-8", "2-2", "a-b-c", "2-2-7", "16-16-8", "1-2-8", "16-16-16"])
def test_bad_bit_settings(spec):
    with pytest.raises(QuantGPTError):
        Bits.parse(spec)


def test_bit_settings():
    b = Bits.parse("2-16-8")
    assert (b.weight, b.embedding, b.activation) == (2, 16, 8)
    assert b.quantize_weights and not b.quantize_embedding and b.quantize_activations
    assert str(b) == "2-16-8"
    assert not Bits.parse("4-16-32").quantize_activations
    assert Bits.parse("16-16-16", allow_float=True).is_float and not Bits.parse("2-16-16").is_float
    with pytest.raises(QuantGPTError):
        QuantConfig(quantizer="nope")


@pytest.mark.parametrize("cls", [MDSQuantizer, PACTQuantizer, LSQQuantizer, LAQQuantizer, MinMaxQuantizer])
def test_ragged_last_group(cls):
    w = W(6, 40)  # groups of 16: 16 + 16 + 8
    with pytest.raises(QuantGPTError, match="does not divide"):
        cls(4, w.shape, "group", 16)
    q = cls(4, w.shape, "group", 16, ragged=True)
    assert q.rows == 6 * 3
    q.initialize(w)
    q.eval()
    wr = w.clone().requires_grad_()
    out = q(wr)
    assert out.shape == w.shape
    out.sum().backward()
    assert wr.grad.shape == w.shape
    enc = q.encode(w)
    assert enc.codes.shape == w.shape
    assert torch.allclose(enc.dequantize(), out.detach(), atol=1e-6)
    # the short group has its own scale: quantizing it alone gives the same numbers
    if cls is MinMaxQuantizer:
        tail = MinMaxQuantizer(4, (6, 8), "channel")
        tail.initialize(w[:, 32:])
        assert torch.allclose(tail(w[:, 32:]), out.detach()[:, 32:], atol=1e-6)


def test_gptq_ragged_groups():
    from quantgpt.ptq import gptq_layer

    w = W(8, 40)
    X = torch.randn(256, 40)
    Q, s, z = gptq_layer(w, X.t() @ X, 4, 16)
    q = MinMaxQuantizer(4, w.shape, "group", 16, ragged=True)
    q.set_params(s, z)
    assert s.shape == (8 * 3, 1)
    assert torch.allclose(q(Q), Q, atol=1e-6)


def _q4_1_blocks(out=8, inp=64, block=32, seed=0):
    """Weights as a dequantized Q4_1 file holds them: per block of 32 inputs, m + d * q with q in 0..15 (both
    ends used, as min-max quantization leaves them)."""
    g = torch.Generator().manual_seed(seed)
    rows = out * inp // block
    d = torch.rand(rows, 1, generator=g) * 0.01 + 1e-3
    m = -torch.rand(rows, 1, generator=g) * 0.08
    q = torch.randint(0, 16, (rows, block), generator=g).float()
    q[:, 0], q[:, -1] = 0, 15
    return (m + d * q).reshape(out, inp)


def test_asym_grid_reproduces_q4_1_blocks_exactly():
    """The SmolLM2 teacher's decoder weights are Q4_1 blocks of 32: 4-bit asym groups of 32 start at zero error,
    in the fake-quant forward and in the integer codes the packed checkpoint stores."""
    w = _q4_1_blocks()
    q = MDSQuantizer(4, w.shape, "group", 32, grid="asym")
    q.initialize(w)
    assert torch.allclose(q(w).detach(), w, atol=1e-6)
    enc = q.encode(w)
    assert (enc.qmin, enc.qmax) == (-8, 7) and enc.zero.shape == (q.rows, 1)
    assert torch.allclose(enc.dequantize(), w, atol=1e-6)
    # the symmetric grids and a misaligned group cannot
    for kw in (dict(group_size=32, grid="full"), dict(group_size=32, grid="sym"), dict(group_size=64, grid="asym")):
        other = MDSQuantizer(4, w.shape, "group", kw["group_size"], grid=kw["grid"])
        other.initialize(w)
        assert (other(w).detach() - w).abs().max() > 1e-4, kw


@pytest.mark.parametrize("bits", [2, 4])
def test_asym_grid_levels_are_the_centre_plus_the_full_grid(bits):
    w = W(8, 32, seed=3) + 0.03  # weights off centre
    q = MDSQuantizer(bits, w.shape, "channel", grid="asym")
    q.initialize(w)
    n = 2 ** (bits - 1)
    w2, wq = q.to_rows(w), q.to_rows(q(w).detach())
    assert torch.allclose(q.center.detach(), (w2.amax(1, keepdim=True) + w2.amin(1, keepdim=True)) / 2)
    alpha = q.alpha(w2)
    assert torch.allclose(alpha, q.gamma * (w2 - q.center).abs().mean(1, keepdim=True))
    v = (wq - q.center) / alpha * 2 * n  # odd integers -(2n-1)..(2n-1)
    assert torch.allclose(v, torch.round(v), atol=1e-4)
    assert set(torch.round(v).flatten().tolist()) <= set(range(-2 * n + 1, 2 * n, 2))
    # a better fit than the full grid about zero on shifted weights
    full = MDSQuantizer(bits, w.shape, "channel", grid="full")
    full.initialize(w)
    assert (w - q(w).detach()).square().sum() < (w - full(w).detach()).square().sum()


@pytest.mark.parametrize("mean_grad", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_asym_grid_backward_matches_formula(bits, mean_grad):
    """dL/dw = g inside, dL/dgamma = mean|w - b| sum g (Q(u) - u inside, Q(u) outside), dL/db = sum g outside
    (plus the mean's terms with mean_grad), checked against autograd through a straight-through surrogate."""
    w = (W(16, 32, seed=bits) + 0.02).requires_grad_()
    q = MDSQuantizer(bits, w.shape, "group", 16, grid="asym", mean_grad=mean_grad)
    q.initialize(w.detach())
    with torch.no_grad():
        q.gamma.mul_(torch.linspace(0.6, 1.4, q.gamma.numel()).reshape(q.gamma.shape))  # some weights clipped
        q.center.add_(torch.linspace(-0.01, 0.01, q.center.numel()).reshape(q.center.shape))
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    n = 2 ** (bits - 1)
    w2, g2 = w.detach().reshape(q.rows, -1), g.reshape(q.rows, -1)
    b, gamma = q.center.detach(), q.gamma.detach()
    m = (w2 - b).abs().mean(1, keepdim=True)
    u = (w2 - b) / (gamma * m)
    inside = u.abs() <= 1
    if not mean_grad:  # the hand formula
        Qu = (torch.floor(n * u.clamp(-1, 1)).clamp(-n, n - 1) + 0.5) / n
        assert torch.equal(w.grad, (g2 * inside).reshape(w.shape))
        assert torch.allclose(q.gamma.grad, m * (g2 * torch.where(inside, Qu - u, Qu)).sum(1, keepdim=True),
                              rtol=1e-4, atol=1e-7)
        assert torch.allclose(q.center.grad, (g2 * ~inside).sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    w_s, gamma_s, b_s = (t.clone().requires_grad_() for t in (w2, gamma, b))
    c = w_s - b_s
    m_s = c.abs().mean(1, keepdim=True)
    a_s = gamma_s * (m_s if mean_grad else m_s.detach())
    v = (c / a_s).clamp(-1, 1)
    Qv = (torch.floor(n * v).clamp(-n, n - 1) + 0.5) / n
    ((b_s + a_s * (v + (Qv - v).detach())) * g2).sum().backward()
    assert torch.allclose(gamma_s.grad, q.gamma.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(b_s.grad, q.center.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(w_s.grad.reshape(w.shape), w.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("grid", ["sym", "asym"])
@pytest.mark.parametrize("bits", [2, 4])
def test_static_mds_freezes_the_mean_and_its_gradients(grid, bits):
    """dynamic=False (the fixed-alpha ablation): the start is mds's, then alpha = gamma * m0 with m0 = the start's
    mean|w - b|, whatever w becomes. Backward: dL/dw = g inside (no mean term even with mean_grad), dL/dgamma = m0 *
    dL/dalpha, dL/db = sum g outside; checked against autograd through a straight-through surrogate. The frozen
    mean is in the state dict (training checkpoints resume it), and packing encodes with it."""
    w0 = W(16, 32, seed=bits) + 0.01
    dyn, q = (MDSQuantizer(bits, w0.shape, "group", 16, grid=grid, dynamic=d, mean_grad=True) for d in (True, False))
    dyn.initialize(w0)
    q.initialize(w0)
    assert torch.equal(q(w0), dyn(w0))  # the same start
    assert "m0" in q.state_dict() and "m0" not in dyn.state_dict()
    m0 = q.m0.clone()
    w = (1.5 * w0).requires_grad_()  # weights that moved: dynamic scaling would follow them, static does not
    assert not torch.allclose(q(w), dyn(w))
    with torch.no_grad():
        q.gamma.mul_(torch.linspace(0.6, 1.4, q.gamma.numel()).reshape(q.gamma.shape))
    g = torch.randn_like(w)
    (q(w) * g).sum().backward()
    w2, g2 = w.detach().reshape(q.rows, -1), g.reshape(q.rows, -1)
    b = torch.zeros(q.rows, 1) if q.center is None else q.center.detach()
    gamma = q.gamma.detach()
    w_s, gamma_s, b_s = (t.clone().requires_grad_() for t in (w2, gamma, b))
    a_s = gamma_s * m0
    v = ((w_s - b_s) / a_s).clamp(-1, 1)
    if grid == "asym":
        n = 2 ** (bits - 1)
        Qv = (torch.floor(n * v).clamp(-n, n - 1) + 0.5) / n
    else:
        k = 2 ** (bits - 1) - 1
        Qv = torch.round(k * v) / k
    ((b_s + a_s * (v + (Qv - v).detach())) * g2).sum().backward()
    inside = ((w2 - b) / (gamma * m0)).abs() <= 1
    assert (~inside).any() and inside.any()
    assert torch.equal(w.grad.reshape(q.rows, -1), g2 * inside)
    assert torch.allclose(q.gamma.grad, gamma_s.grad, rtol=1e-4, atol=1e-7)
    if q.center is not None:
        assert torch.allclose(q.center.grad, b_s.grad, rtol=1e-4, atol=1e-6)
    q.eval()
    assert torch.allclose(q.encode(w.detach()).dequantize(), q(w).detach(), atol=1e-6)
    restored = MDSQuantizer(bits, w0.shape, "group", 16, grid=grid, dynamic=False)
    restored.load_state_dict(q.state_dict())
    assert torch.equal(restored.m0, m0)


def test_static_scale_is_mds_only():
    from quantgpt.train_config import TrainConfig

    assert not TrainConfig(dynamic_scale=False).to_dict()["dynamic_scale"]
    with pytest.raises(QuantGPTError, match="dynamic-scale applies to the mds quantizer"):
        TrainConfig(method="pact", dynamic_scale=False)


def test_asym_grid_is_mds_only():
    from quantgpt.quantizers import make_weight_quantizer

    with pytest.raises(QuantGPTError, match="asym"):
        make_weight_quantizer("pact", 2, (8, 8), QuantConfig(quantizer="pact", grid="asym"))
    with pytest.raises(QuantGPTError, match="asym"):
        make_weight_quantizer("lsq", 2, (8, 8), QuantConfig(quantizer="lsq", grid="asym"))


def test_group_param_codes_are_8_bit_with_one_factor_per_row():
    """Unsigned codes 1..255 with each row's largest value exactly code 255 (no scale rounds to 0); signed codes
    -127..127; every value within half a step of code x factor."""
    from quantgpt.quantizers.base import group_param_codes, quantize_group_params

    x = torch.rand(6 * 4, 1) * torch.tensor([1e-6, 1.0, 3.0, 0.5, 2.0, 1e-3]).repeat_interleave(4)[:, None] + 1e-9
    code, factor = group_param_codes(x, 4, signed=False)
    assert code.shape == x.shape and factor.shape == (6, 1) and code.min() >= 1 and code.max() <= 255
    assert torch.equal(code.reshape(6, 4).amax(1), torch.full((6,), 255.0))
    err = (quantize_group_params(x, 4, signed=False) - x).abs().reshape(6, 4)
    lowest = code.reshape(6, 4) == 1  # a value under half a step still gets code 1, not 0
    assert (err <= factor / 2 * (1 + 1e-5)).logical_or(lowest & (x.reshape(6, 4) <= factor * 1.5)).all()
    s = torch.randn(24, 1)
    code, factor = group_param_codes(s, 6, signed=True)
    assert code.abs().max() <= 127 and torch.equal(code.reshape(4, 6).abs().amax(1), torch.full((4,), 127.0))
    assert ((quantize_group_params(s, 6, signed=True) - s).abs().reshape(4, 6) <= factor / 2 + 1e-7).all()


@pytest.mark.parametrize("grid", ["asym", "full"])
def test_eight_bit_scales_forward_encode_and_straight_through_gradients(grid):
    """scale_bits 8: each group's alpha (and asym centre) is its 8-bit code times the row's factor; the forward
    equals encode's dequantized codes; gradients are the fp16-scale formulas taken at the rounded alpha and
    centre, passed straight through the rounding (autograd through a detach surrogate)."""
    bits, n = 2, 2
    w = (W(8, 64, seed=3) + 0.01).requires_grad_()
    q = MDSQuantizer(bits, w.shape, "group", 16, grid=grid, scale_bits=8)
    q.initialize(w.detach())
    with torch.no_grad():
        q.gamma.mul_(torch.linspace(0.6, 1.4, q.gamma.numel()).reshape(q.gamma.shape))
    g = torch.randn_like(w)
    out = q(w)
    (out * g).sum().backward()
    enc = q.encode(w.detach())
    assert enc.group_codes["scale_code"].dtype == torch.uint8 and enc.group_codes["scale_factor"].shape == (8, 1)
    assert ("center_code" in enc.group_codes) == (grid == "asym")
    torch.testing.assert_close(enc.dequantize(), out.detach(), rtol=0, atol=1e-6)
    w2, g2 = w.detach().reshape(q.rows, -1), g.reshape(q.rows, -1)
    from quantgpt.quantizers.base import quantize_group_params

    w_s, gamma_s = w2.clone().requires_grad_(), q.gamma.detach().clone().requires_grad_()
    b_s = q.center.detach().clone().requires_grad_() if grid == "asym" else None
    b_q = 0 if b_s is None else b_s + (quantize_group_params(b_s.detach(), 4, True) - b_s).detach()
    c = w_s - b_q
    a = gamma_s * c.abs().mean(1, keepdim=True).detach()
    a_q = a + (quantize_group_params(a.detach(), 4, False) - a).detach()
    alphas = a_q.detach().reshape(8, 4)
    assert torch.allclose(alphas / (alphas.amax(1, keepdim=True) / 255), (alphas / (alphas.amax(1, keepdim=True) / 255)).round(), atol=1e-3)
    v = (c / a_q).clamp(-1, 1)
    Qv = (torch.floor(n * v).clamp(-n, n - 1) + 0.5) / n
    ref = b_q + a_q * (v + (Qv - v).detach())
    torch.testing.assert_close(ref.detach().reshape(w.shape), out.detach(), rtol=0, atol=1e-6)
    (ref * g2).sum().backward()
    assert torch.allclose(gamma_s.grad, q.gamma.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(w_s.grad.reshape(w.shape), w.grad, rtol=1e-4, atol=1e-6)
    if grid == "asym":
        assert torch.allclose(b_s.grad, q.center.grad, rtol=1e-4, atol=1e-6)


def test_eight_bit_scales_are_for_mds_group_scales():
    for kw in (dict(quantizer="pact", grid="sym", group_size=16), dict(granularity="channel"),
               dict(group_size=16, scale_bits=4)):
        with pytest.raises(QuantGPTError, match="scale"):
            QuantConfig(bits="2-2-8", **{"scale_bits": 8, **kw})
    from quantgpt.train_config import TrainConfig

    with pytest.raises(QuantGPTError, match="8-bit scales apply to the mds quantizer"):
        TrainConfig(method="pact", scale_bits=8)
    assert TrainConfig(scale_bits=8).scale_bits == 8 and TrainConfig(bits="16-16-16", scale_bits=8)
