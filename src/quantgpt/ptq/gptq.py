"""GPTQ (Frantar et al. 2022): quantize columns one by one and push each column's rounding error onto the
columns not yet quantized, weighted by the inverse Hessian H = 2 X X^T of the layer's inputs.

Layers are processed in the order the model runs them, each from inputs that already went through the
quantized layers before it. Layers that read the same input tensor (q/k/v, gate/up) share one Hessian.
The result is written into the layer's min-max quantizer (scales, zero points) and its weight (the
dequantized GPTQ solution), so the module's forward reproduces it exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..blockwise import StopForward, block_inputs, block_output, identical_blocks, is_encoder_decoder, with_hidden
from ..convert import quantized_linears
from ..errors import QuantGPTError
from ..quantizers.minmax import MinMaxQuantizer, minmax_params


@torch.no_grad()
def gptq_layer(W: torch.Tensor, H: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = False,
               percdamp: float = 0.01, blocksize: int = 128, act_order: bool = False):
    """GPTQ for one ``(out, in)`` matrix. Returns ``(Q, scale, zero)``: the dequantized weights and
    per-row (``group_size=None``) or per-group scales / zero points, shape ``(rows, 1)`` in the row-major
    group layout of :mod:`quantgpt.quantizers.base`.

    With ``act_order`` and groups, group parameters come from the original weights ("static groups") so
    that groups stay contiguous input columns whatever the processing order.
    """
    W = W.detach().float().clone()
    H = H.detach().float().clone()
    rows, cols = W.shape
    gs = group_size or cols
    ngroups = -(-cols // gs)  # a ragged last group is shorter
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    scales = torch.zeros(rows, ngroups, device=W.device)
    zeros = torch.zeros(rows, ngroups, device=W.device)
    qmin, qmax = minmax_params(W[:1, :1], bits, symmetric)[2:]
    if group_size is None or act_order:
        for g in range(ngroups):
            s, z = minmax_params(W[:, g * gs:(g + 1) * gs], bits, symmetric)[:2]
            scales[:, g:g + 1], zeros[:, g:g + 1] = s, z

    perm = torch.arange(cols, device=W.device)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    invperm = torch.argsort(perm)
    perm_list = perm.tolist()  # host copy: indexing a device tensor per column would sync every time

    damp = percdamp * torch.mean(torch.diag(H))
    eye = torch.eye(cols, device=W.device)
    for attempt in range(6):
        try:
            L = torch.linalg.cholesky(H + damp * (10**attempt) * eye)
            Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
            break
        except torch.linalg.LinAlgError:
            continue
    else:
        raise QuantGPTError("GPTQ: the layer's Hessian is not positive definite even with damping; use more calibration data")

    Q = torch.zeros_like(W)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = perm_list[col]
            g = orig // gs
            if group_size is not None and not act_order and col % gs == 0:
                # dynamic groups: parameters from the group's current (error-updated) weights
                cur = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :gs]
                s, z = minmax_params(cur, bits, symmetric)[:2]
                scales[:, g:g + 1], zeros[:, g:g + 1] = s, z
            w = W1[:, i]
            s, z = scales[:, g], zeros[:, g]
            q = (torch.clamp(torch.round(w / s) + z, qmin, qmax) - z) * s
            Q[:, col] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Q = Q[:, invperm]
    return Q, scales.reshape(-1, 1), zeros.reshape(-1, 1)


def _input_groups(run, modules):
    """Call ``run()`` once and group the layers by the input tensor they read, in call order."""
    order, hooks = [], []
    for name, m in modules:
        hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: order.append((name, args[0]))))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    groups, seen = [], set()
    for name, x in order:  # the tensors themselves are kept alive, so `is` cannot confuse two inputs
        if name in seen:
            continue
        seen.add(name)
        if groups and groups[-1][0] is x:
            groups[-1][1].append(name)
        else:
            groups.append((x, [name]))
    return [names for _, names in groups]


def _solve_groups(groups, byname, runs, percdamp, blocksize, act_order, bar):
    """GPTQ each group of layers in order: the Hessian of a group's input comes from calling every function in
    ``runs`` (one per calibration batch) up to the group's first layer, after the groups before it are solved."""
    for names in groups:
        bar.set_postfix_str(names[0])
        first = byname[names[0]]
        device = first.weight.device
        H = torch.zeros(first.in_features, first.in_features, device=device)
        count = [0]

        def hook(mod, args):
            x = args[0]
            if mod.act_quantizer is not None:
                x = mod.act_quantizer(x)
            x = x.reshape(-1, x.shape[-1]).float()
            n = x.shape[0]
            H.mul_(count[0] / (count[0] + n))
            count[0] += n
            x = math.sqrt(2 / count[0]) * x
            H.addmm_(x.t(), x)
            raise StopForward

        h = first.register_forward_pre_hook(hook)
        try:
            for run in runs:
                try:
                    run()
                except StopForward:
                    pass
        finally:
            h.remove()
        for name in names:
            m = byname[name]
            wq = m.weight_quantizer
            Q, s, z = gptq_layer(m.weight_2d(), H, wq.bits, wq.group_size, wq.symmetric, percdamp, blocksize, act_order)
            wq.set_params(s, z)
            m.weight_2d().copy_(Q.to(m.weight.dtype))
        bar.update(1)


@torch.no_grad()
def gptq_quantize(model: nn.Module, calib: torch.Tensor, *, batch_size: int = 8, percdamp: float = 0.01,
                  act_order: bool = False, blocksize: int = 128, autocast_dtype=None, progress: bool = True,
                  by_block: bool = True) -> nn.Module:
    """Apply GPTQ to every min-max-quantized linear layer of a model made by ``quantize_model``.

    ``calib`` is a ``(n, seq_len)`` tensor of token ids. Run :func:`rtn_quantize` first: that creates
    the quantized layers (and quantizes the embedding, which GPTQ leaves as rounded to nearest).
    In a decoder-only model the first block's inputs are caught once and each block then runs on its own,
    on the outputs of the quantized blocks before it (the same inputs as running the model up to it, without
    running the prefix again for every layer); layers outside the blocks, and other models, run the model.
    ``by_block=False`` runs the whole model for every group in any model (the same solution, slower: for checks).
    """
    layers = [(n, m) for n, m in quantized_linears(model) if isinstance(m.weight_quantizer, MinMaxQuantizer)]
    if not layers:
        raise QuantGPTError("GPTQ needs a model quantized with min-max quantizers (run rtn first)")
    device = next(model.parameters()).device
    batches = [b.to(device) for b in calib.split(batch_size)]
    byname = dict(layers)
    was_training = model.training
    model.eval()
    ac = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(device.type, enabled=False)
    whole = [lambda b=b: model(b) for b in batches]
    with ac:
        groups = _input_groups(whole[0], layers)
        bar = tqdm(total=len(groups), desc="GPTQ", disable=not progress, unit="group")
        blocks = identical_blocks(model) if by_block and not is_encoder_decoder(model) else None
        done = set()
        if blocks is not None:
            ids = {id(m): n for n, m in layers}
            calls = block_inputs(model, blocks, batches)
            for block in blocks:
                inside = {ids[id(m)] for m in block.modules() if id(m) in ids}
                runs = [lambda a=a, k=k: block(*a, **k) for a, k in calls]
                _solve_groups([g for g in groups if g[0] in inside], byname, runs, percdamp, blocksize, act_order, bar)
                done |= inside
                outs = [block_output(r()) for r in runs]
                calls = [with_hidden(a, k, h) for (a, k), h in zip(calls, outs)]
        _solve_groups([g for g in groups if g[0] not in done], byname, whole, percdamp, blocksize, act_order, bar)
        bar.close()
    model.train(was_training)
    return model
