"""How much do a model's 8-bit activations cost, and how spread are the inputs they quantize?

    python benchmarks/act_probe.py RUN_DIR [RUN_DIR ...] --data $QG_DATA/wikitext2/test.raw.txt

For each model (a packed / fake-quant folder, or a float source): perplexity on the first --tokens tokens with
its activation quantizers on and off, and, per linear-layer kind, the median and maximum over tokens of
max|x| / rms(x) at the quantizer's input (per-token 8-bit rounding error grows with this ratio).
"""
from __future__ import annotations

import argparse
import collections
import json

import torch

from quantgpt import evaluate, load
from quantgpt.data import tokenize_files
from quantgpt.device import autocast_for, pick_device, pick_dtype


def act_modules(model):
    return [(n, m) for n, m in model.named_modules() if getattr(m, "act_quantizer", None) is not None]


@torch.no_grad()
def spread(model, ids, device, dtype):
    stats = collections.defaultdict(list)
    hooks = []
    for name, m in act_modules(model):
        def hook(mod, inp, kind=name.split(".")[-1]):
            x = inp[0].float().reshape(-1, inp[0].shape[-1])
            stats[kind].append(x.abs().amax(-1) / x.square().mean(-1).sqrt().clamp_min(1e-12))
        hooks.append(m.register_forward_pre_hook(hook))
    with autocast_for(device, dtype):
        model(input_ids=ids[:2048].reshape(1, -1).to(device))
    for h in hooks:
        h.remove()
    return {k: {"median": torch.cat(v).median().item(), "max": torch.cat(v).max().item()} for k, v in stats.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--data", required=True)
    p.add_argument("--tokens", type=int, default=65536)
    args = p.parse_args()
    device = pick_device("auto")
    dtype = pick_dtype("auto", device)
    for src in args.models:
        model, tok = load(src, device=device, return_tokenizer=True)
        ids = tokenize_files([args.data], tok)[: args.tokens]
        on = evaluate(model, ids, seq_len=2048, batch_size=8, dtype=dtype, progress=False)["perplexity"]
        sp = spread(model, ids, device, dtype)
        saved = [(m, m.act_quantizer) for _, m in act_modules(model)]
        for m, _ in saved:
            m.act_quantizer = None
        off = evaluate(model, ids, seq_len=2048, batch_size=8, dtype=dtype, progress=False)["perplexity"]
        print(json.dumps({"model": src, "ppl_act_on": on, "ppl_act_off": off, "spread": sp}), flush=True)


if __name__ == "__main__":
    main()
