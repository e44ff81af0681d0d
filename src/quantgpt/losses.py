"""Distillation losses: fused chunked logit distillation, and token-level contrastive distillation with a
memory bank of teacher token representations (Tao et al. 2022, Sec. 3.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import QuantGPTError


def _chunk_for(vocab: int, device: torch.device) -> int:
    """Tokens per chunk: a power of two with ~256M (GPU) or ~64M (CPU) logits elements."""
    budget = (1 << 28) if device.type == "cuda" else (1 << 26)
    return 1 << max(0, (budget // vocab).bit_length() - 1)


def _kd_chunk(s, t, y, T: float, kd_scale: float, lm_weight: float, lm_scale: float, need_grad: bool):
    """Loss sums and d loss / d s for one chunk of student / teacher logits ``s``, ``t`` and labels ``y``.
    Written as one function so that torch.compile fuses it into a few passes over the logits."""
    out_dtype = s.dtype
    s, t = s.float(), t.float()
    log_ps = torch.log_softmax(s / T, -1)
    log_pt = torch.log_softmax(t / T, -1)
    p_t = log_pt.exp()
    kd = (p_t * (log_pt - log_ps)).sum()
    log_p1 = log_ps if T == 1.0 else torch.log_softmax(s, -1)
    valid = (y >= 0).unsqueeze(1)
    yc = y.clamp_min(0).unsqueeze(1)
    nll = -(log_p1.gather(1, yc) * valid).sum()
    if not need_grad:
        return kd, nll, None
    grad = (log_ps.exp() - p_t) * kd_scale
    if lm_weight:
        onehot = torch.zeros_like(s).scatter_(1, yc, 1.0)
        grad = grad + (log_p1.exp() - onehot) * valid * lm_scale
    return kd, nll, grad.to(out_dtype)


_compiled: dict = {}


def _on(device: torch.device, fn, **compile_args):
    """A chunk function for ``device``: compiled once per process on CUDA (its passes fused), as it is on the CPU."""
    if device.type != "cuda":
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, **compile_args)
    return _compiled[fn]


class FusedLinearKD(torch.autograd.Function):
    """Soft cross-entropy (KL) between teacher and student next-token distributions, computed from hidden
    states and head weights chunk by chunk: the full (tokens x vocab) logits never exist, and the gradients
    for the student's hidden states and head weight are formed in the same pass (on GPU the per-chunk
    arithmetic is one compiled, fused function).

    kd = T^2 / N * sum_i KL(softmax(t_i / T) || softmax(s_i / T)),  lm = 1 / M * sum_{i: y_i >= 0} CE(s_i, y_i)
    with s = h_s W_s^T, t = h_t W_t^T, M the number of labelled rows (a sequence's last token has none);
    total = kd + lm_weight * lm and d total / d s_i = T (p_s - p_t) / N + lm_weight (softmax(s_i) - onehot(y_i)) / M.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, temperature: float, labels, lm_weight: float, compute_dtype, chunk: int):
        n = h_s.shape[0]
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        hs, ws = h_s.to(compute_dtype), w_s.to(compute_dtype)
        ht, wt = h_t.to(compute_dtype), w_t.to(compute_dtype)
        if labels is None:
            labels = torch.full((n,), -100, dtype=torch.long, device=h_s.device)
        dh = torch.empty_like(h_s) if need_grad else None
        dw = torch.zeros(w_s.shape, dtype=torch.float32, device=w_s.device) if need_grad else None
        kd = torch.zeros((), dtype=torch.float32, device=h_s.device)
        lm = torch.zeros((), dtype=torch.float32, device=h_s.device)
        T = float(temperature)
        m = (labels >= 0).sum().clamp_min(1).float()  # lm is the mean over labelled rows (a tensor: no host sync)
        fn = _on(h_s.device, _kd_chunk, dynamic=False)
        for i in range(0, n, chunk):
            hc = hs[i:i + chunk]
            s = hc @ ws.t()
            with torch.no_grad():
                t = ht[i:i + chunk] @ wt.t()
            kd_c, nll_c, g = fn(s, t, labels[i:i + chunk], T, T / n, float(lm_weight), lm_weight / m, need_grad)
            kd += kd_c
            lm += nll_c
            if need_grad:
                dh[i:i + chunk] = (g @ ws).to(h_s.dtype)
                dw.addmm_(g.t().float(), hc.float()) if g.dtype == torch.float32 else dw.add_((g.t() @ hc).float())
        ctx.save_for_backward(dh, dw)
        ctx.w_dtype = w_s.dtype
        kd, lm = kd * (T * T / n), lm / m
        total = kd + lm_weight * lm
        ctx.mark_non_differentiable(kd, lm)
        return total, kd, lm

    @staticmethod
    def backward(ctx, g_total, g_kd, g_lm):
        dh, dw = ctx.saved_tensors  # the gradient of ``total``, formed in the forward pass
        return dh * g_total, (dw * g_total).to(ctx.w_dtype), None, None, None, None, None, None, None


def fused_kd_loss(h_s, w_s, h_t, w_t, temperature=1.0, labels=None, lm_weight=0.0, chunk=None):
    """``(total, kd, lm)`` from flattened hidden states ``(N, d)`` and head weights ``(V, d)``:
    ``total = kd + lm_weight * lm`` carries the gradient; ``kd`` and ``lm`` are detached, for logging."""
    dtype = torch.get_autocast_dtype(h_s.device.type) if torch.is_autocast_enabled(h_s.device.type) else h_s.dtype
    with torch.autocast(h_s.device.type, enabled=False):
        return FusedLinearKD.apply(h_s, w_s, h_t, w_t, float(temperature), labels, float(lm_weight), dtype,
                                   chunk or _chunk_for(w_s.shape[0], h_s.device))


def kd_loss_reference(s_logits, t_logits, temperature=1.0):
    """The plain formula on materialised logits (for tests): T^2 * mean_i KL(p_t || p_s)."""
    T = temperature
    log_ps = torch.log_softmax(s_logits.float() / T, -1)
    log_pt = torch.log_softmax(t_logits.float() / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * T * T


class TokenContrastive(nn.Module):
    """Token-level contrastive distillation (InfoNCE over cosine similarity).

    For every token position i the anchor is the student's representation s_i, the positive the teacher's
    representation t_i of the same token in the same context, and the negatives representations of *other*
    token ids: by default the momentum-averaged teacher representation (memory bank) of every other distinct
    token id of the batch, topped up with random bank entries up to ``negatives``.

    loss_i = -log( exp(cos(s_i, t_i)/tau) / (exp(cos(s_i, t_i)/tau) + sum_{j: id_j != id_i} exp(cos(s_i, n_j)/tau)) )

    ``negative_source``: ``bank`` (memory bank, default), ``batch`` (teacher representations of the batch's
    distinct tokens only, no bank) or ``student`` (the student's own representations of the other tokens).
    """

    def __init__(self, vocab_size: int, dim_s: int, dim_t: int, proj_dim: int | None = None, tau: float = 0.1,
                 negatives: int = 4096, momentum: float = 0.9, negative_source: str = "bank"):
        super().__init__()
        if negative_source not in ("bank", "batch", "student"):
            raise ValueError(f"negative_source must be bank, batch or student, got {negative_source!r}")
        self.tau, self.negatives, self.momentum, self.negative_source = tau, negatives, momentum, negative_source
        self.proj_s = nn.Linear(dim_s, proj_dim, bias=False) if proj_dim else nn.Identity()
        self.proj_t = nn.Linear(dim_t, proj_dim, bias=False) if proj_dim else nn.Identity()
        d = proj_dim or dim_t
        self.register_buffer("bank", torch.zeros(vocab_size, d))
        self.register_buffer("seen", torch.zeros(vocab_size, dtype=torch.bool))

    @torch.no_grad()
    def update_bank(self, ids: torch.Tensor, zt: torch.Tensor):
        """bank[v] <- normalize(m * bank[v] + (1 - m) * mean of this batch's teacher vectors of token v)
        (the first sighting of v just takes the batch mean). Returns the batch's distinct ids and means."""
        uniq, inv = torch.unique(ids, return_inverse=True)
        sums = torch.zeros(uniq.numel(), zt.shape[1], device=zt.device, dtype=torch.float32).index_add_(0, inv, zt.float())
        counts = torch.bincount(inv, minlength=uniq.numel()).clamp_min(1).unsqueeze(1)
        mean = sums / counts
        old = self.bank[uniq]
        new = torch.where(self.seen[uniq].unsqueeze(1), self.momentum * old + (1 - self.momentum) * mean, mean)
        self.bank[uniq] = F.normalize(new, dim=-1)
        self.seen[uniq] = True
        return uniq, inv, mean

    def _draw_negatives(self, uniq: torch.Tensor, generator: torch.Generator | None):
        k = self.negatives
        if uniq.numel() >= k:
            pick = torch.randperm(uniq.numel(), generator=generator, device="cpu")[:k].to(uniq.device)
            return uniq[pick]
        if self.negative_source != "bank":
            return uniq
        pool = self.seen.clone()
        pool[uniq] = False
        extra = pool.nonzero().squeeze(1)
        if extra.numel() > k - uniq.numel():
            pick = torch.randperm(extra.numel(), generator=generator, device="cpu")[: k - uniq.numel()].to(extra.device)
            extra = extra[pick]
        return torch.cat([uniq, extra])

    def prepare(self, t: torch.Tensor, ids: torch.Tensor, generator: torch.Generator | None = None,
                gather=None) -> tuple:
        """The teacher's side of the loss, which needs no student: its normalised vectors ``zt``, the bank updated
        with them and the negatives drawn, as ``(zt, neg, neg_ids, uniq, inv)`` (``neg`` None for the student's
        own negatives, made in forward). It holds every host sync of the loss (``unique``, the negatives' draw), so
        the trainer runs it before the student's forward: the GPU's queue stays full through the rest of the step.
        ``gather``: with data parallelism, a function that concatenates every rank's tensor (distributed.gather):
        the bank and the negatives are then the whole batch's, the same on every rank."""
        zt = F.normalize(self.proj_t(t).float(), dim=-1)
        if gather is None:
            uniq, inv, mean_t = self.update_bank(ids, zt.detach())
        elif self.negative_source == "student":
            raise QuantGPTError("--negative-source student needs every token's student vector with its gradient: it "
                                "runs in one process only")
        else:
            uniq, inv, mean_t = self.update_bank(gather(ids), gather(zt.detach()))
        chosen = self._draw_negatives(uniq, generator)
        if self.negative_source == "bank":
            return zt, self.bank[chosen], chosen, uniq, inv
        if self.negative_source == "batch":
            return zt, F.normalize(mean_t, dim=-1)[torch.searchsorted(uniq, chosen)], chosen, uniq, inv
        return zt, None, chosen, uniq, inv

    def forward(self, s: torch.Tensor, t: torch.Tensor | None, ids: torch.Tensor,
                generator: torch.Generator | None = None, gather=None, prepared: tuple | None = None):
        """``s``, ``t``: ``(N, d)`` student / teacher representations, ``ids``: ``(N,)`` their token ids;
        ``prepared``: prepare's result for ``t`` and ``ids``, made earlier (``t`` is then not read). With ``gather``
        the loss is this rank's anchors' share of the one-process loss."""
        zt, neg, neg_ids, uniq, inv = prepared if prepared is not None else self.prepare(t, ids, generator, gather)
        zs = F.normalize(self.proj_s(s).float(), dim=-1)
        if neg is None:  # the student's own per-token mean representations (with gradient)
            sums = torch.zeros(uniq.numel(), zs.shape[1], device=zs.device, dtype=zs.dtype).index_add(0, inv, zs)
            neg = F.normalize(sums, dim=-1)[torch.searchsorted(uniq, neg_ids)]
        return info_nce(zs, zt, neg, neg_ids, ids, self.tau)


def info_nce_reference(zs, zt, neg, neg_ids, ids, tau: float) -> torch.Tensor:
    """The InfoNCE of TokenContrastive on materialised logits (for tests): anchors ``zs``, positives ``zt`` (N, d),
    negatives ``neg`` (K, d) of token ids ``neg_ids``; a negative of the anchor's own id is left out."""
    pos = (zs * zt).sum(-1, keepdim=True) / tau
    logits = (zs @ neg.t() / tau).masked_fill(neg_ids.unsqueeze(0) == ids.unsqueeze(1), float("-inf"))
    return (torch.logsumexp(torch.cat([pos, logits], 1), 1, keepdim=True) - pos).mean()


def _nce_chunk(zs, zt, neg, neg_ids, ids, tau: float, scale: float, compute_dtype: torch.dtype, need_zt: bool,
               need_neg: bool):
    """The loss sum of one chunk of anchors and the gradients of ``scale`` times it for ``zs``, ``zt`` and ``neg``
    (the last two None unless ``need_zt``, ``need_neg``), with the (rows x negatives) similarities made once and
    read in a few fused passes (compiled on the GPU).
    With p_ij = softmax over (pos_i, l_i1..l_iK): d/d pos_i = p_i0 - 1 and d/d l_ij = p_ij, where pos_i = zs_i.zt_i/tau
    and l_ij = zs_i.neg_j/tau (-inf for a negative of the anchor's own id)."""
    acc = torch.promote_types(zs.dtype, torch.float32)
    pos = (zs * zt).sum(-1) / tau
    sims = (zs.to(compute_dtype) @ neg.to(compute_dtype).t()).to(acc) / tau
    sims = sims.masked_fill(ids.unsqueeze(1) == neg_ids.unsqueeze(0), float("-inf"))
    m = torch.maximum(sims.amax(1), pos)
    e = torch.exp(sims - m.unsqueeze(1))
    e_pos = torch.exp(pos - m)
    z = e.sum(1) + e_pos
    loss = (m + torch.log(z) - pos).sum()
    g_pos = (e_pos / z - 1) * (scale / tau)
    g_sims = (e * (scale / tau) / z.unsqueeze(1)).to(compute_dtype)
    d_zs = (g_sims @ neg.to(compute_dtype)).to(acc) + g_pos.unsqueeze(1) * zt
    d_zt = g_pos.unsqueeze(1) * zs if need_zt else None
    d_neg = (g_sims.t() @ zs.to(compute_dtype)).to(acc) if need_neg else None
    return loss, d_zs, d_zt, d_neg


class FusedInfoNCE(torch.autograd.Function):
    """info_nce_reference chunk by chunk over the anchors, with the gradients formed in the same pass (as
    FusedLinearKD): the (N x K) similarities exist one chunk at a time, and on the GPU each chunk's arithmetic
    is one compiled function, instead of the reference's dozen passes over N x K floats and its copy for the
    concatenation. The matrix products run in ``compute_dtype`` (autocast's, else the inputs')."""

    @staticmethod
    def forward(ctx, zs, zt, neg, neg_ids, ids, tau: float, compute_dtype, chunk: int):
        n = zs.shape[0]
        fn = _on(zs.device, _nce_chunk)
        loss = torch.zeros((), dtype=torch.float32, device=zs.device)
        need_zt, need_neg = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        d_zs = torch.empty_like(zs)
        d_zt = torch.empty_like(zt) if need_zt else None
        d_neg = torch.zeros_like(neg) if need_neg else None
        for i in range(0, n, chunk):
            j = slice(i, i + chunk)
            l_c, d_zs[j], dt, dn = fn(zs[j], zt[j], neg, neg_ids, ids[j], tau, 1.0 / n, compute_dtype, need_zt, need_neg)
            loss += l_c
            if need_zt:
                d_zt[j] = dt
            if need_neg:
                d_neg += dn
        ctx.save_for_backward(d_zs, d_zt, d_neg)
        return loss / n

    @staticmethod
    def backward(ctx, g):
        d_zs, d_zt, d_neg = ctx.saved_tensors
        return (d_zs * g, None if d_zt is None else d_zt * g, None if d_neg is None else d_neg * g,
                None, None, None, None, None)


def info_nce(zs, zt, neg, neg_ids, ids, tau: float, chunk: int | None = None) -> torch.Tensor:
    """The token contrastive loss (see TokenContrastive) of anchors ``zs`` (N, d), positives ``zt`` and negatives
    ``neg`` (K, d) of ids ``neg_ids``: FusedInfoNCE, in chunks of about 2^25 (GPU) or 2^23 (CPU) similarities."""
    dtype = torch.get_autocast_dtype(zs.device.type) if torch.is_autocast_enabled(zs.device.type) else zs.dtype
    chunk = chunk or _chunk_for(max(1, neg.shape[0]) * 8, zs.device)
    with torch.autocast(zs.device.type, enabled=False):
        return FusedInfoNCE.apply(zs, zt, neg, neg_ids, ids, float(tau), dtype, chunk)


def mean_pairwise_cosine(h: torch.Tensor, max_tokens: int = 2048) -> float:
    """Mean cosine similarity between distinct token representations (the paper's homogeneity measure)."""
    z = F.normalize(h.reshape(-1, h.shape[-1])[:max_tokens].float(), dim=-1)
    n = z.shape[0]
    sim = z @ z.t()
    return ((sim.sum() - sim.diagonal().sum()) / (n * (n - 1))).item()


def pairwise_cosine_histogram(h: torch.Tensor, bins: int = 50, max_tokens: int = 2048) -> list[int]:
    """Counts of pairwise cosine similarities between distinct token representations in ``bins`` equal bins
    over [-1, 1] (the distribution behind the paper's homogeneity figure)."""
    z = F.normalize(h.reshape(-1, h.shape[-1])[:max_tokens].float(), dim=-1)
    sim = z @ z.t()
    iu = torch.triu_indices(sim.shape[0], sim.shape[0], offset=1, device=sim.device)
    return torch.histc(sim[iu[0], iu[1]], bins=bins, min=-1.0, max=1.0).long().tolist()
