"""Does torch.compile change the training gradients? One step, eager against compiled, same student and batch.

    python benchmarks/compile_check.py --model smollm2-135m --data $QG_DATA/corpora/wiki_excerpt.txt --bits 2-2-8

Prints, per kind of parameter (weights, quantizer parameters), the cosine similarity between the eager and
the compiled gradient and their norm ratio. bf16 rounding and rounding ties make them differ a little
(cosine > 0.99 is normal); a silent compile bug shows as a much lower cosine (the activation-quantizer bug of
docs/BENCHMARKS.md section 6 trained to 10x worse perplexity).
"""
from __future__ import annotations

import argparse
import json

import torch

from quantgpt.convert import scale_clips
from quantgpt.data import tokenize_files
from quantgpt.models import load_float
from quantgpt.errors import QuantGPTError
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer


def grads(cfg, teacher, tok, ids, x, clip_scale=1.0):
    import copy

    tr = Trainer(cfg, teacher=copy.deepcopy(teacher), tokenizer=tok, train_ids=ids)
    scale_clips(tr.student, clip_scale)  # off the start's ties (see --clip-scale)
    tr.losses(x.to(tr.device))["loss"].backward()
    return {n: p.grad.detach().float().flatten() for n, p in tr.student.named_parameters() if p.grad is not None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", nargs="+", default=["sample"])
    p.add_argument("--bits", default="2-2-8")
    p.add_argument("--method", default="quantgpt")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--clip-scale", type=float, default=0.97,
                   help="multiply every learned clip (gamma, alpha) after the start by this: where the clip search keeps "
                        "a group's whole range, its extreme weights sit at |u| = 1 to the last bit, and eager and compiled "
                        "code put them on different sides of the clip (1 keeps the start as it is)")
    args = p.parse_args()
    try:
        extra = TrainConfig.parse_assignments(args.set)
    except QuantGPTError as e:
        raise SystemExit(f"compile_check: {e}")
    teacher, tok = load_float(args.model)
    ids = tokenize_files(args.data, tok)
    x = ids[: args.batch_size * args.seq_len].reshape(args.batch_size, args.seq_len)
    out = {}
    for mode in (False, True):
        cfg = TrainConfig(model=args.model, bits=args.bits, method=args.method, batch_size=args.batch_size,
                          seq_len=args.seq_len, steps=1, compile=mode, device=args.device, progress=False,
                          out=f"/tmp/compile_check_{mode}", **extra)
        out[mode] = grads(cfg, teacher, tok, ids, x, args.clip_scale)
    rows = {}
    for kind in ("weight", "quantizer"):
        names = [n for n in out[False] if ("quantizer." in n) == (kind == "quantizer")]
        if not names:
            continue
        a = torch.cat([out[False][n] for n in names])
        b = torch.cat([out[True][n] for n in names])
        worst = min(names, key=lambda n: torch.nn.functional.cosine_similarity(out[False][n], out[True][n], dim=0).item())
        rows[kind] = {"cosine": torch.nn.functional.cosine_similarity(a, b, dim=0).item(),
                      "norm_ratio": (b.norm() / a.norm()).item(), "worst_param": worst,
                      "worst_cosine": torch.nn.functional.cosine_similarity(out[False][worst], out[True][worst], dim=0).item()}
    print(json.dumps({"bits": args.bits, "method": args.method, "clip_scale": args.clip_scale, **rows}))


if __name__ == "__main__":
    main()
