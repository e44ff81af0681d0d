"""Rounding error of the quantizer's start on SmolLM2's own weights, per scale layout at the same or other storage:
how much shorter groups buy when their scales are stored as 8-bit codes (scale_bits 8) instead of fp16.

    python benchmarks/scale_bits_probe.py --bits 2 --layouts 32:16 16:8 16:16 8:8 8:16

Each layout is GROUP:SCALE_BITS on the asym grid (every decoder matrix in groups of GROUP input columns, the token
table in groups of GROUP features), started as the trainer starts it (MDSQuantizer.initialize: centre at the
mid-range, clip factor searched). Reported per layout: stored bits per weight (codes, scales and centres, the
per-row factors of 8-bit scales), and the relative squared error sum (w_q - w)^2 / sum w^2 over all decoder
matrices together and over the token table. No training: a start's error, not a trained model's quality.
"""
import argparse
import json
import time

import torch

from quantgpt import load_float
from quantgpt.quantizers.mds import MDSQuantizer

p = argparse.ArgumentParser()
p.add_argument("--bits", type=int, default=2)
p.add_argument("--layouts", nargs="+", default=["32:16", "16:8", "16:16", "8:8", "8:16"])
p.add_argument("--out", default="scale_bits_probe.json")
args = p.parse_args()
teacher, _ = load_float("smollm2-135m")
mats = {n: w.detach() for n, w in teacher.named_parameters() if w.ndim == 2}


def stored_bits(shape, group, scale_bits):
    out_f, in_f = shape
    groups = out_f * -(-in_f // group)
    per_group = 32 if scale_bits == 16 else 16  # scale and centre
    factors = 0 if scale_bits == 16 else out_f * 32  # two fp16 factors a row
    return args.bits * out_f * in_f + per_group * groups + factors


rows = []
for layout in args.layouts:
    group, scale_bits = map(int, layout.split(":"))
    t = time.time()
    acc = {"decoder": [0.0, 0.0, 0, 0], "embedding": [0.0, 0.0, 0, 0]}  # error, norm, bits, weights
    for name, w in mats.items():
        q = MDSQuantizer(args.bits, tuple(w.shape), "group", group, grid="asym", ragged=True, scale_bits=scale_bits)
        q.initialize(w)
        with torch.no_grad():
            err = (q(w.float()) - w.float()).square().sum().item()
        a = acc["embedding" if "embed" in name else "decoder"]
        a[0] += err
        a[1] += w.float().square().sum().item()
        a[2] += stored_bits(w.shape, group, scale_bits)
        a[3] += w.numel()
    row = {"layout": layout, "group": group, "scale_bits": scale_bits, "seconds": round(time.time() - t, 1)}
    for part, (err, norm, bits, n) in acc.items():
        row[part] = {"rel_sq_error": err / norm, "bits_per_weight": bits / n}
    rows.append(row)
    print(f"g{group:<3d} scales {scale_bits:2d}-bit  decoder: {row['decoder']['bits_per_weight']:.3f} bits, error "
          f"{row['decoder']['rel_sq_error']:.4f}  table: {row['embedding']['bits_per_weight']:.3f} bits, error "
          f"{row['embedding']['rel_sq_error']:.4f}", flush=True)
with open(args.out, "w") as f:
    json.dump({"bits": args.bits, "rows": rows}, f, indent=1)
