"""Perplexity and next-token accuracy on a token stream, GPTQ-style: non-overlapping windows of
``seq_len`` (remainder dropped), mean token NLL over every predicted position; or sliding windows with
``stride`` where each window scores only the tokens the previous one did not."""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .device import autocast_for
from .errors import QuantGPTError
from .lm import Head, hidden_states, supports_chunked_head


@torch.no_grad()
def _window_scores(model, x, scored_from: torch.Tensor, chunk: int = 4096):
    """Sum of NLL and of correct argmax predictions over positions t >= scored_from[b] of each row."""
    targets = x[:, 1:]
    pos = torch.arange(targets.shape[1], device=x.device).expand_as(targets)
    mask = pos >= (scored_from[:, None] - 1)
    if supports_chunked_head(model):
        h = hidden_states(model, x).last_hidden_state[:, :-1]
        head = Head(model)
        h, t = h[mask], targets[mask]
        nll = torch.zeros((), device=x.device, dtype=torch.float64)
        correct = torch.zeros((), device=x.device, dtype=torch.long)
        for i in range(0, t.numel(), chunk):
            logits = head(h[i:i + chunk]).float()
            nll += F.cross_entropy(logits, t[i:i + chunk], reduction="sum").double()
            correct += (logits.argmax(-1) == t[i:i + chunk]).sum()
        return nll, correct, t.numel()
    if getattr(model.config, "is_encoder_decoder", False):
        # Encoder-decoder models are scored on reconstructing the text from itself (teacher forcing).
        logits = model(input_ids=x, labels=x).logits.float()
        lt = x
        mask = torch.ones_like(x, dtype=torch.bool)
        mask[:, 0] = False  # keep the same number of scored tokens as a causal model
    else:
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        lt = targets
    nll = F.cross_entropy(logits[mask], lt[mask], reduction="sum").double()
    correct = (logits[mask].argmax(-1) == lt[mask]).sum()
    return nll, correct, int(mask.sum())


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, seq_len: int = 2048, stride: int | None = None, batch_size: int = 4,
             limit_tokens: int | None = None, dtype: torch.dtype | None = None, progress: bool = True) -> dict:
    """Perplexity and next-token accuracy of ``model`` on the 1-D token tensor ``ids``."""
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
    nll = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    with autocast_for(device, dtype):
        for i in tqdm(range(0, len(starts), batch_size), desc="eval", unit="batch", disable=not progress):
            s = starts[i:i + batch_size]
            x = torch.stack([ids[a:a + seq_len] for a in s]).to(device)
            sf = torch.tensor(first_scored[i:i + batch_size], device=device)
            a, b, c = _window_scores(model, x, sf)
            nll += a
            correct += b
            count += c
    model.train(was_training)
    mean = (nll / count).item()
    return {"perplexity": math.exp(mean) if mean < 700 else float("inf"), "nll": mean,
            "accuracy": correct.item() / count, "tokens": count, "windows": len(starts),
            "seq_len": seq_len, "stride": stride}
