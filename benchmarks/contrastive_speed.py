"""The token contrastive term's cost on the GPU: the materialised formula (info_nce_reference, the loss before
FusedInfoNCE) against the fused chunked one (info_nce), side by side in one process, with no download and no
staging.

1. The loss alone, forward and backward under bf16 autocast, at a training batch's shape (32 x 1024 anchors of
   SmolLM2's width 576, 4096 negatives, token ids drawn from a Zipf-like law as in text).
2. With --steps N: whole training steps of compress's 2-2-8 defaults on a randomly initialised model of SmolLM2's
   shapes (random Zipf-like tokens, the teacher cache and compilation on as in a run): kd (no contrastive term),
   quantgpt with the reference loss, quantgpt with the fused loss. The kd row is the floor the term's cost sits on.

    PYTHONPATH=src python benchmarks/contrastive_speed.py [--steps 20] [--out rows.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import torch
import torch.nn.functional as F

from smollm2_shaped import HIDDEN, VOCAB, smollm2_shaped


def zipf_ids(n: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    p = 1.0 / (torch.arange(vocab, dtype=torch.float64) + 10.0) ** 1.1
    return torch.multinomial(p, n, replacement=True, generator=gen)


def timed(fn, reps: int, cuda: bool) -> float:
    """Mean seconds of ``fn()`` over ``reps`` calls after two warm ones."""
    for _ in range(2):
        fn()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def loss_rows(args, dev):
    from quantgpt import losses

    gen = torch.Generator().manual_seed(0)
    n, d, k = args.tokens, HIDDEN, 4096
    ids = zipf_ids(n, VOCAB, gen).to(dev)
    neg_ids = torch.randperm(VOCAB, generator=gen)[:k].to(dev)
    zs = F.normalize(torch.randn(n, d, generator=gen), dim=-1).to(dev).requires_grad_()
    zt = F.normalize(torch.randn(n, d, generator=gen), dim=-1).to(dev)
    neg = F.normalize(torch.randn(k, d, generator=gen), dim=-1).to(dev)
    rows, values = [], {}
    for name, fn in (("reference", losses.info_nce_reference), ("fused", losses.info_nce)):
        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = fn(zs, zt, neg, neg_ids, ids, 0.1)
            loss.backward()
            return loss
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        s = timed(step, args.reps, dev.type == "cuda")
        zs.grad = None
        values[name] = (step().item(), zs.grad.clone())
        zs.grad = None
        rows.append({"part": "loss", "variant": name, "ms": round(1000 * s, 2),
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else 0.0})
    (a, ga), (b, gb) = values["reference"], values["fused"]
    rows[-1]["rel_diff_loss"] = abs(a - b) / abs(a)
    rows[-1]["rel_diff_grad"] = ((ga - gb).norm() / ga.norm()).item()
    return rows


def step_rows(args, dev):
    from quantgpt import losses
    from quantgpt.train_config import TrainConfig
    from quantgpt.trainer import Trainer

    torch.manual_seed(0)
    teacher = smollm2_shaped(args.layers).to(dev)
    ids = zipf_ids(args.blocks * args.seq_len, VOCAB, torch.Generator().manual_seed(1))
    fused = losses.info_nce
    for name, method, fn in (("kd", "kd", fused), ("quantgpt reference", "quantgpt", losses.info_nce_reference),
                             ("quantgpt fused", "quantgpt", fused)):
        losses.info_nce = fn  # TokenContrastive.forward reads the module's name at each call
        try:
            tc = TrainConfig(model="random", bits="2-2-8", method=method, steps=10_000, seq_len=args.seq_len,
                             batch_size=args.batch_size, out=f"/tmp/cspeed_{time.time_ns()}", progress=False,
                             device=dev.type)
            tr = Trainer(tc, teacher=teacher, train_ids=ids)
            t0 = time.perf_counter()
            tr.train_step()
            first = time.perf_counter() - t0
            s = timed(tr.train_step, args.steps, dev.type == "cuda")
            yield {"part": "step", "variant": name, "ms": round(1000 * s, 1),
                   "tok_per_s": round(args.batch_size * args.seq_len / s), "first_step_s": round(first, 1)}
        finally:
            losses.info_nce = fused
        tr = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32 * 1024, help="anchors of the loss part (a batch's tokens)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--steps", type=int, default=0, help="also time this many training steps per variant (0: none)")
    p.add_argument("--layers", type=int, default=30, help="decoder layers of the step part (30: SmolLM2-135M's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--blocks", type=int, default=256, help="blocks of random training text for the step part")
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the script")
    p.add_argument("--out")
    args = p.parse_args()
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    rows = []
    for r in [*loss_rows(args, dev), *(step_rows(args, dev) if args.steps else [])]:  # each as it is measured
        r.update(device=name, commit=commit, date=time.strftime("%Y-%m-%d"))
        print(json.dumps(r), flush=True)
        rows.append(r)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    print(f"{'part':5s} {'variant':20s} {'ms':>8s}")
    for r in rows:
        print(f"{r['part']:5s} {r['variant']:20s} {r['ms']:8.1f}")


if __name__ == "__main__":
    main()
