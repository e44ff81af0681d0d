"""Block-wise reconstruction start (``init: blockwise``), after the block-wise stage of EfficientQAT (Chen et
al. 2024): before end-to-end distillation, each decoder block of the quantized student is trained alone, in
order, to reproduce the float teacher's output of that block, with its weights and its quantizers' parameters.

Block i reads the student's own hidden states (what the quantized embedding and blocks 0..i-1 produce) and
is trained towards the teacher's block i applied to the teacher's hidden states, so that each block also
learns to correct the error that reaches it. A 2-bit student starts far from its teacher (perplexity about
1e5 on SmolLM2), and end-to-end training spends its first steps getting back; one block at a time the same
recovery is a small least-squares problem per block.

The blocks' call arguments (rotary embeddings, masks) are caught from each model's own forward at its first
block, so any decoder-only model whose blocks sit in one ``nn.ModuleList`` works.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .convert import split_quant_parameters
from .device import autocast_for
from .errors import QuantGPTError


class StopForward(Exception):
    """Raised by a hook to end a forward pass once it has what it came for."""


def block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """Every list of two or more modules of one class (a model's transformer blocks: one list in a decoder-only
    model, the encoder's and the decoder's in BART), in module order; lists inside a found block are skipped."""
    found, inside = [], set()
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(c) for c in m}) == 1:
            found.append(m)
            inside.update(id(c) for c in m.modules())
    return found


def identical_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The first list of transformer blocks (block_lists), or None."""
    lists = block_lists(model)
    return lists[0] if lists else None


def is_encoder_decoder(model: nn.Module) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder-only model's list of identical transformer blocks."""
    if is_encoder_decoder(model):
        raise QuantGPTError("init 'blockwise' needs a decoder-only model (this one is an encoder-decoder)")
    blocks = identical_blocks(model)
    if blocks is None:
        raise QuantGPTError("init 'blockwise': the model has no list of identical transformer blocks")
    return blocks


def with_hidden(args, kwargs, h):
    """A block call's ``(args, kwargs)`` with ``h`` as its hidden states."""
    return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})


def block_output(out):
    """The hidden states a block returns (a tensor, or the first item of a tuple in older transformers)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def block_inputs(model: nn.Module, blocks: nn.ModuleList, batches: list[torch.Tensor]) -> list[tuple]:
    """``(args, kwargs)`` of the first block's call, one per batch of token ids (the forward stops there)."""
    caught = []

    def hook(mod, args, kwargs):
        caught.append((args, kwargs))
        raise StopForward

    h = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for x in batches:
            try:
                model(input_ids=x, use_cache=False)
            except StopForward:
                pass
    finally:
        h.remove()
    return caught


def _run(block, calls):
    return [block_output(block(*a, **k)) for a, k in calls]


def blockwise_reconstruct(student: nn.Module, teacher: nn.Module, calib: torch.Tensor, *, steps: int, batch_size: int,
                          lr: float, quant_lr: float, max_grad_norm: float = 1.0, dtype=torch.float32,
                          progress: bool = True) -> list[dict]:
    """Train each block of ``student`` (a model made by ``quantize_model`` from ``teacher``) for ``steps``
    AdamW steps on the MSE to the teacher's block output, over the ``(n, seq_len)`` token ids ``calib`` in
    batches of ``batch_size``, at cosine-decayed ``lr`` (weights, asym centres) and ``quant_lr`` (clips).
    Returns per block the relative squared error ``||out - target||^2 / ||target||^2`` over the whole
    calibration set, before and after."""
    s_blocks, t_blocks = decoder_blocks(student), decoder_blocks(teacher)
    if len(s_blocks) != len(t_blocks):
        raise QuantGPTError("init 'blockwise': the student and the teacher have different numbers of blocks")
    device = next(student.parameters()).device
    batches = [calib[i:i + batch_size].to(device) for i in range(0, calib.shape[0], batch_size)]
    with autocast_for(device, dtype):
        s_calls = block_inputs(student, s_blocks, batches)
        t_calls = block_inputs(teacher, t_blocks, batches)
    stats = []
    bar = tqdm(range(len(s_blocks)), desc="blockwise init", unit="block", disable=not progress)
    for i in bar:
        sb, tb = s_blocks[i], t_blocks[i]
        with torch.no_grad(), autocast_for(device, dtype):
            targets = [o.float() for o in _run(tb, t_calls)]

        def outputs():
            with torch.no_grad(), autocast_for(device, dtype):
                return _run(sb, s_calls)

        def rel_error(outs):  # ||out - target||^2 / ||target||^2 over the calibration set
            return (sum((o.float() - t).pow(2).sum().item() for o, t in zip(outs, targets))
                    / max(sum(t.pow(2).sum().item() for t in targets), 1e-30))

        before = rel_error(outputs())
        weights, quant = split_quant_parameters(sb)
        groups = [{"params": weights, "lr": lr}] + ([{"params": quant, "lr": quant_lr}] if quant else [])
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        params = weights + quant
        for step in range(steps):
            j = step % len(s_calls)
            a, k = s_calls[j]
            with autocast_for(device, dtype):
                out = block_output(sb(*a, **k))
            loss = F.mse_loss(out.float(), targets[j])
            if not math.isfinite(loss.item()):
                raise QuantGPTError(f"init 'blockwise': the loss of block {i} is {loss.item()} at step {step + 1}; "
                                    f"lower --lr / --quant-lr")
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        s_out = outputs()  # the trained block's output: its error, and the next block's input
        after = rel_error(s_out)
        stats.append({"block": i, "rel_error_before": before, "rel_error_after": after})
        bar.set_postfix(rel_error=f"{before:.3g} -> {after:.3g}")
        # the next block reads this block's trained output; the teacher's stream moves on with its own
        s_calls = [with_hidden(a, k, h.detach()) for (a, k), h in zip(s_calls, s_out)]
        t_calls = [with_hidden(a, k, h) for (a, k), h in zip(t_calls, targets)]
    bar.close()
    return stats
