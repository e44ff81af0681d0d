"""Distillation losses against hand computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from quantgpt.losses import (TokenContrastive, fused_kd_loss, info_nce, info_nce_reference, kd_loss_reference,
                             mean_pairwise_cosine)


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("lm_weight", [0.0, 0.5])
def test_fused_kd_equals_plain_formula_and_its_gradients(T, lm_weight):
    torch.manual_seed(0)
    N, d, V = 37, 8, 50
    hs = torch.randn(N, d, requires_grad=True)
    ws = torch.randn(V, d, requires_grad=True)
    ht, wt = torch.randn(N, d), torch.randn(V, d)
    y = torch.randint(0, V, (N,))
    y[3] = -100  # ignored label
    total, kd, lm = fused_kd_loss(hs, ws, ht, wt, T, labels=y, lm_weight=lm_weight, chunk=10)
    total.backward()
    hs2, ws2 = hs.detach().clone().requires_grad_(), ws.detach().clone().requires_grad_()
    s = hs2 @ ws2.t()
    ref_kd = kd_loss_reference(s, ht @ wt.t(), T)
    ref_lm = F.cross_entropy(s, y, ignore_index=-100)  # the mean over the 36 labelled rows
    (ref_kd + lm_weight * ref_lm).backward()
    assert kd.item() == pytest.approx(ref_kd.item(), rel=1e-5)
    assert lm.item() == pytest.approx(ref_lm.item(), rel=1e-5)
    assert torch.allclose(hs.grad, hs2.grad, atol=1e-5)
    assert torch.allclose(ws.grad, ws2.grad, atol=1e-5)


def test_kd_is_zero_iff_student_equals_teacher():
    h, w = torch.randn(5, 4), torch.randn(9, 4)
    assert fused_kd_loss(h, w, h, w)[1].item() == pytest.approx(0, abs=1e-6)
    assert fused_kd_loss(h + 0.5, w, h, w)[1].item() > 1e-3


def _hand_infonce(s, t, neg, ids, neg_ids, tau):
    out = []
    for i in range(s.shape[0]):
        zs = s[i] / s[i].norm()
        pos = math.exp(float(zs @ (t[i] / t[i].norm())) / tau)
        den = pos
        for j in range(neg.shape[0]):
            if neg_ids[j] != ids[i]:
                den += math.exp(float(zs @ (neg[j] / neg[j].norm())) / tau)
        out.append(-math.log(pos / den))
    return sum(out) / len(out)


def test_contrastive_equals_hand_infonce():
    torch.manual_seed(0)
    V, d = 10, 4
    ids = torch.tensor([1, 2, 2, 5, 7])
    s, t = torch.randn(5, d), torch.randn(5, d)
    c = TokenContrastive(V, d, d, tau=0.5, negatives=100, momentum=0.9)
    loss = c(s, t, ids)
    # first batch: the bank holds the normalised mean teacher vector of each distinct id; negatives are those
    zt = F.normalize(t, dim=-1)
    uniq = [1, 2, 5, 7]
    table = torch.stack([F.normalize(zt[ids == u].mean(0), dim=0) for u in uniq])
    assert loss.item() == pytest.approx(_hand_infonce(s, t, table, ids.tolist(), uniq, 0.5), rel=1e-5)


@pytest.mark.parametrize("chunk", [None, 7, 64])
def test_fused_info_nce_matches_reference(chunk):
    """The chunked loss with its gradients formed in the forward pass equals the materialised formula, in
    value and in the gradients of anchors, positives and negatives (float64), whatever the chunking; negatives of
    the anchor's own id (ids drawn from few values, so many) are left out in both."""
    torch.manual_seed(0)
    N, K, d, tau = 50, 12, 6, 0.2
    zs = F.normalize(torch.randn(N, d, dtype=torch.float64), dim=-1).requires_grad_()
    zt = F.normalize(torch.randn(N, d, dtype=torch.float64), dim=-1).requires_grad_()
    neg = F.normalize(torch.randn(K, d, dtype=torch.float64), dim=-1).requires_grad_()
    ids, neg_ids = torch.randint(0, 8, (N,)), torch.randint(0, 8, (K,))
    assert (ids.unsqueeze(1) == neg_ids.unsqueeze(0)).any()
    w = torch.randn(())  # an upstream gradient other than 1
    ref = info_nce_reference(zs, zt, neg, neg_ids, ids, tau)
    g_ref = torch.autograd.grad(ref * w, (zs, zt, neg))
    out = info_nce(zs, zt, neg, neg_ids, ids, tau, chunk=chunk)
    g_out = torch.autograd.grad(out * w, (zs, zt, neg))
    torch.testing.assert_close(out, ref.to(out.dtype), rtol=1e-12, atol=1e-12)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_info_nce_skips_gradients_not_asked_for():
    torch.manual_seed(0)
    zs = torch.randn(9, 4, requires_grad=True)
    zt, neg = torch.randn(9, 4), torch.randn(5, 4)
    info_nce(zs, zt, neg, torch.arange(5), torch.randint(0, 5, (9,)), 0.1).backward()
    assert zs.grad is not None and zt.grad is None and neg.grad is None


def test_fused_info_nce_in_bfloat16_autocast_is_close():
    """Under autocast the products run in bfloat16 (as on the GPU), the sums in float32: close to the float32
    formula, not equal."""
    torch.manual_seed(0)
    zs = F.normalize(torch.randn(64, 32), dim=-1)
    zt = F.normalize(zs + 0.3 * torch.randn(64, 32), dim=-1)
    neg, neg_ids, ids = F.normalize(torch.randn(40, 32), dim=-1), torch.arange(40), torch.randint(0, 60, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = info_nce(zs, zt, neg, neg_ids, ids, 0.1)
    ref = info_nce_reference(zs, zt, neg, neg_ids, ids, 0.1)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=1e-2)
    assert low.item() != ref.item()


def test_memory_bank_momentum_update_is_exact():
    torch.manual_seed(0)
    c = TokenContrastive(6, 3, 3, momentum=0.75)
    t1 = torch.randn(3, 3)
    c.update_bank(torch.tensor([0, 4, 4]), F.normalize(t1, dim=-1))
    z = F.normalize(t1, dim=-1)
    b4 = F.normalize(z[1:].mean(0), dim=0)
    assert torch.allclose(c.bank[4], b4) and torch.allclose(c.bank[0], z[0])
    assert c.seen.tolist() == [True, False, False, False, True, False]
    t2 = F.normalize(torch.randn(1, 3), dim=-1)
    c.update_bank(torch.tensor([4]), t2)
    assert torch.allclose(c.bank[4], F.normalize(0.75 * b4 + 0.25 * t2[0], dim=0))
    assert torch.allclose(c.bank[0], z[0])  # untouched


@pytest.mark.parametrize("source", ["bank", "batch", "student"])
def test_negatives_never_share_the_anchor_id(source):
    torch.manual_seed(0)
    V, d = 50, 8
    c = TokenContrastive(V, d, d, negatives=16, negative_source=source)
    for _ in range(3):
        c(torch.randn(40, d), torch.randn(40, d), torch.randint(0, V, (40,)))
    ids = torch.randint(0, V, (30,))
    uniq = torch.unique(ids)
    neg = c._draw_negatives(uniq, torch.Generator().manual_seed(0))
    assert neg.numel() == (16 if source == "bank" or uniq.numel() >= 16 else uniq.numel())
    assert neg.unique().numel() == neg.numel()
    # a loss whose only negatives share the anchor's id is exactly zero-free: -log(1) = 0
    same = torch.full((5,), 3)
    s = torch.randn(5, d)
    c2 = TokenContrastive(V, d, d, negatives=16, negative_source="batch")
    assert c2(s, s, same).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("source", ["bank", "batch", "student"])
def test_prepared_teacher_side_gives_the_same_loss_and_gradients(source):
    """prepare (the bank's update and the negatives' draw, run by the trainer before the student's forward) then
    forward(prepared=...) is the one-call forward: the same loss, student gradient, bank and generator state."""
    V, d, N = 50, 8, 40
    torch.manual_seed(0)
    a = TokenContrastive(V, d, d, negatives=16, negative_source=source, proj_dim=6)
    b = TokenContrastive(V, d, d, negatives=16, negative_source=source, proj_dim=6)
    b.load_state_dict(a.state_dict())
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(3):
        s, t, ids = torch.randn(N, d), torch.randn(N, d), torch.randint(0, V, (N,))
        sa, sb = s.clone().requires_grad_(), s.clone().requires_grad_()
        la = a(sa, t, ids, ga)
        lb = b(sb, None, ids, prepared=b.prepare(t, ids, gb))
        (la + a.proj_t.weight.sum()).backward()
        (lb + b.proj_t.weight.sum()).backward()
        assert torch.equal(la, lb) and torch.equal(sa.grad, sb.grad)
        assert torch.equal(a.proj_t.weight.grad, b.proj_t.weight.grad)
    assert torch.equal(a.bank, b.bank) and torch.equal(a.seen, b.seen)
    assert torch.equal(ga.get_state(), gb.get_state())


def test_contrastive_lowest_when_student_equals_teacher():
    torch.manual_seed(0)
    V, d, N = 40, 16, 64
    ids = torch.randint(0, V, (N,))
    t = torch.randn(N, d)
    losses = []
    for noise in (0.0, 0.5, 2.0):
        c = TokenContrastive(V, d, d, tau=0.1, negatives=64)
        losses.append(c(t + noise * torch.randn(N, d), t, ids).item())
    assert losses[0] < losses[1] < losses[2]


def test_contrastive_gradient_reaches_student_only():
    V, d = 20, 6
    s = torch.randn(12, d, requires_grad=True)
    t = torch.randn(12, d, requires_grad=True)
    c = TokenContrastive(V, d, d, negatives=8)
    c(s, t.detach(), torch.randint(0, V, (12,))).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_mean_pairwise_cosine():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_cosine(z) == pytest.approx(1 / 3)
