"""GPTQ on SmolLM2, block by block on cached inputs against the model run up to every layer group (the path
kept for encoder-decoder models), side by side in one process: seconds and the largest weight difference.

    python benchmarks/gptq_speed.py --bits 4-16-16 --samples 8 --seq-len 256 --device cpu
"""
import argparse
import copy
import os
import time

import torch

from quantgpt import load_float
from quantgpt.data import blocks, tokenize_files
from quantgpt.device import pick_device
from quantgpt.ptq import gptq_quantize, rtn_quantize
from quantgpt.ptq.rtn import rtn_config

p = argparse.ArgumentParser()
p.add_argument("--bits", default="4-16-16")
p.add_argument("--group-size", type=int, default=32)
p.add_argument("--samples", type=int, default=8)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--device", default="auto")
args = p.parse_args()
device = pick_device(args.device)
base, tok = load_float("smollm2-135m")
calib = blocks(tokenize_files(os.environ.get("QG_DATA", "../shared/data") + "/corpora", tok), args.seq_len)[: args.samples]
solved = {}
for path in ("blocks", "whole model"):
    m = rtn_quantize(copy.deepcopy(base).to(device), rtn_config(args.bits, args.group_size, ragged_groups=True))
    t = time.time()
    gptq_quantize(m, calib, progress=False, by_block=path == "blocks")
    if device.type == "cuda":
        torch.cuda.synchronize()
    solved[path] = (time.time() - t, {n: q.detach() for n, q in m.named_parameters()})
(tb, wb), (tw, ww) = solved["blocks"], solved["whole model"]
diff = max((wb[n] - ww[n]).abs().max().item() for n in wb)
print(f"{args.bits} g{args.group_size}, {args.samples} x {args.seq_len} tokens on {device}: block by block {tb:.1f} s, "
      f"whole model {tw:.1f} s ({tw / tb:.1f}x); largest weight difference {diff:.2e}")
