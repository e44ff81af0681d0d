"""Perplexity and next-token accuracy on a token stream, GPTQ-style: non-overlapping windows of
``seq_len`` (remainder dropped), mean token NLL over every predicted position; or sliding windows with
``stride`` where each window scores only the tokens the previous one did not. The perplexity of each half
of the window (targets at positions below ``seq_len // 2`` and from there on) is reported beside the whole's:
a model trained on shorter blocks than the evaluation's windows shows it in the second half. ``per_window``
adds each window's mean NLL: two models scored on the same text can then be compared window by window (report.py's
paired comparison), which tells a real difference from the noise of one text. ``token_groups`` adds the mean NLL of
the targets of each group of token ids, e.g. ``frequency_groups``'s by how often the training text has them: where a
compressed model's loss sits, on common tokens or on rare ones."""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .device import autocast_for
from .errors import QuantGPTError
from .lm import hidden_states_and_head, supports_chunked_head
from .modules import quant_embeddings


# the default groups of frequency_groups in words, for help texts and reports
FREQUENCY_GROUPS = ("the ids that make up its first 50% of tokens, then 50-90%, 90-99%, the rest, and ids it never "
                    "has")


def frequency_groups(train_ids: torch.Tensor, vocab_size: int, shares=(0.5, 0.9, 0.99)) -> tuple[torch.Tensor, list[str]]:
    """Token ids grouped by how often ``train_ids`` has them: the most frequent ids that together make up the first
    ``shares[0]`` of the training tokens, the next ones up to ``shares[1]``, and so on, then the rest of the ids the
    text has, then those it never has. Returns each id's group (``(vocab_size,)``, long) and the groups' names."""
    counts = torch.bincount(train_ids.flatten().long(), minlength=vocab_size)[:vocab_size].double()
    order = counts.argsort(descending=True, stable=True)
    before = counts[order].cumsum(0) - counts[order]  # the training tokens of the more frequent ids
    cut = torch.bucketize(before / counts.sum(), torch.tensor(shares, dtype=torch.float64), right=True)
    groups = torch.empty(vocab_size, dtype=torch.long)
    groups[order] = cut
    groups[counts == 0] = len(shares) + 1
    bounds = [0, *shares, 1]
    names = [f"{100 * a:g}-{100 * b:g}%" for a, b in zip(bounds, bounds[1:])] + ["unseen"]
    return groups, names


@torch.no_grad()
def _window_scores(model, x, scored_from: torch.Tensor, chunk: int = 4096, groups: torch.Tensor | None = None,
                   n_groups: int = 0, tables: list | None = None):
    """Sums over positions t >= scored_from[b] of each row: NLL of each half of the window (targets at
    positions 1 .. L/2 - 1, then L/2 .. L - 1) and correct argmax predictions; the scored count of each half;
    each row's NLL sum and scored count (2, B); and with ``groups`` (each token id's group, below ``n_groups``) each
    group's NLL sum and scored count (2, n_groups), else None. ``tables``: the model's quant_embeddings, found once
    by evaluate for all its windows."""
    targets = x[:, 1:]
    pos = torch.arange(1, x.shape[1], device=x.device).expand_as(targets)  # the target's position in the window
    mask = pos >= scored_from[:, None]
    late = pos[mask] >= x.shape[1] // 2
    row = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(targets)[mask]  # each scored token's window
    if supports_chunked_head(model):
        out, head = hidden_states_and_head(model, x, tables=tables)
        h = out.last_hidden_state[:, :-1]
        h, lt = h[mask], targets[mask]
        tok, correct = [], torch.zeros((), device=x.device, dtype=torch.long)
        for i in range(0, lt.numel(), chunk):
            logits = head(h[i:i + chunk]).float()
            tok.append(F.cross_entropy(logits, lt[i:i + chunk], reduction="none"))
            correct += (logits.argmax(-1) == lt[i:i + chunk]).sum()
        tok = torch.cat(tok)
    else:
        if getattr(model.config, "is_encoder_decoder", False):
            # Encoder-decoder models are scored on reconstructing the text from itself (teacher forcing).
            logits = model(input_ids=x, labels=x).logits.float()
            lt = x
            mask = torch.ones_like(x, dtype=torch.bool)
            mask[:, 0] = False  # keep the same number of scored tokens as a causal model
            late = torch.arange(x.shape[1], device=x.device).expand_as(x)[mask] >= x.shape[1] // 2
            row = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(x)[mask]
        else:
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            lt = targets
        logits, lt = logits[mask], lt[mask]
        tok, correct = F.cross_entropy(logits, lt, reduction="none"), (logits.argmax(-1) == lt).sum()
    tok = tok.double()
    nll = torch.stack([tok[~late].sum(), tok[late].sum()])
    n_late = late.sum()
    per_row = _sums(tok, row, x.shape[0])
    per_group = None if groups is None else _sums(tok, groups[lt], n_groups)
    return nll, correct, torch.stack([late.numel() - n_late, n_late]), per_row, per_group


def _sums(tok: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(2, n): the sum of ``tok`` and the count of its entries at each ``index`` value."""
    out = torch.zeros(2, n, dtype=tok.dtype, device=tok.device)
    out[0].index_add_(0, index, tok)
    out[1].index_add_(0, index, torch.ones_like(tok))
    return out


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, seq_len: int = 2048, stride: int | None = None, batch_size: int = 4,
             limit_tokens: int | None = None, dtype: torch.dtype | None = None, progress: bool = True,
             per_window: bool = False, token_groups: torch.Tensor | None = None) -> dict:
    """Perplexity and next-token accuracy of ``model`` on the 1-D token tensor ``ids``; ``per_window``: also
    ``window_nll``, each window's mean NLL over the tokens it scores, in the windows' order; ``token_groups`` (each
    token id's group, e.g. frequency_groups'): also ``group_nll`` and ``group_tokens``, each group's mean NLL over
    the scored targets in it (None for a group with none) and their count."""
    device = next(model.parameters()).device
    if limit_tokens:
        ids = ids[:limit_tokens]
    n = ids.numel()
    if n < seq_len:
        raise QuantGPTError(f"the evaluation text has {n} tokens, fewer than one window of {seq_len}: "
                            f"give more text or a smaller --seq-len")
    if stride is None or stride >= seq_len:
        starts = list(range(0, n - seq_len + 1, seq_len))
        first_scored = [1] * len(starts)
    else:
        if stride <= 0:
            raise QuantGPTError(f"--stride must be positive, got {stride}")
        starts = list(range(0, n - seq_len + 1, stride))
        first_scored = [1] + [seq_len - stride] * (len(starts) - 1)
    was_training = model.training
    model.eval()
    nll = torch.zeros(2, dtype=torch.float64, device=device)  # first half, second half of the window
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = torch.zeros(2, dtype=torch.long, device=device)
    windows = []  # each batch's per-window NLL sums (on the device until the end: no sync a batch)
    groups = None if token_groups is None else token_groups.to(device)
    n_groups = 0 if groups is None else int(token_groups.max()) + 1
    by_group = torch.zeros(2, n_groups, dtype=torch.float64, device=device)  # each group's NLL sum and count
    tables = quant_embeddings(model)  # once, not a walk over every module a window
    with autocast_for(device, dtype):
        for i in tqdm(range(0, len(starts), batch_size), desc="eval", unit="batch", disable=not progress):
            s = starts[i:i + batch_size]
            x = torch.stack([ids[a:a + seq_len] for a in s]).to(device)
            sf = torch.tensor(first_scored[i:i + batch_size], device=device)
            a, b, c, w, g = _window_scores(model, x, sf, groups=groups, n_groups=n_groups, tables=tables)
            nll += a
            correct += b
            count += c
            windows.append(w)
            if g is not None:
                by_group += g
    model.train(was_training)
    n_scored = int(count.sum())
    mean = (nll.sum() / n_scored).item()
    halves = [_ppl((nll[k] / count[k]).item()) if count[k] else None for k in range(2)]
    r = {"perplexity": _ppl(mean), "nll": mean, "accuracy": correct.item() / n_scored, "tokens": n_scored,
         "windows": len(starts), "seq_len": seq_len, "stride": stride, "perplexity_halves": halves}
    if per_window:
        w = torch.cat(windows, 1).cpu()
        r["window_nll"] = [round(v, 6) for v in (w[0] / w[1].clamp_min(1)).tolist()]
    if groups is not None:
        sums, counts = by_group.cpu().tolist()
        r["group_nll"] = [round(t / k, 6) if k else None for t, k in zip(sums, counts)]
        r["group_tokens"] = [int(k) for k in counts]
    return r


def _ppl(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")
