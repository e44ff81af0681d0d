"""Training throughput of compress variants measured side by side in one process (same model, data, GPU).

    python benchmarks/train_speed.py --model smollm2-135m --data $QG_DATA/corpora --steps 20
    python benchmarks/train_speed.py ... --variants compiled --batch-size 16 32 64   # tokens/s against batch

Variants: 'plain' (fake-quant student, full logits materialised, KL in float32: the loop most people
write), 'fused' (our fused chunked KD + contrastive, eager), 'compiled' (the same with torch.compile) and
'run-like' (compiled, after the forwards at other shapes a real run makes first: its step-0 homogeneity
probe and held-out evaluation, so the blocks may be recompiled with a dynamic batch dimension) and 'cached'
(compiled, with teacher_cache: the teacher's last hidden states of the training text computed once, no
teacher forward in the step; its row gives the cache's setup time and size).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import torch
import torch.nn.functional as F

from quantgpt.data import tokenize_files
from quantgpt.device import autocast_for
from quantgpt.models import load_float
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer


def plain_losses(tr):
    def losses(x, h_t=None):  # the trainer passes cached teacher states (unused: this loop runs the teacher)
        with autocast_for(tr.device, tr.dtype):
            with torch.no_grad():
                t = tr.teacher(input_ids=x, use_cache=False).logits
            s = tr.student(input_ids=x, use_cache=False).logits
        kd = F.kl_div(torch.log_softmax(s.float(), -1), torch.log_softmax(t.float(), -1), log_target=True,
                      reduction="batchmean") / x.shape[1]
        return {"loss": kd, "kd": kd.detach()}
    return losses


def breakdown(tr, n=5):
    """Milliseconds per part of one training step, timed with CUDA events."""
    from quantgpt.lm import Head
    from quantgpt.losses import fused_kd_loss

    parts = ["teacher_fwd", "student_fwd", "kd_loss", "contrastive", "backward", "optimizer"]
    acc = dict.fromkeys(parts, 0.0)
    for _ in range(n):
        x = tr.batch(tr.step, 0).cuda()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(parts) + 1)]
        ev[0].record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                t_out = tr._t_base(input_ids=x, use_cache=False)
            ev[1].record()
            s_out = tr.student.base_model(input_ids=x, use_cache=False)
            ev[2].record()
            head = Head(tr.student)
            d = s_out.last_hidden_state.shape[-1]
            loss, _, _ = fused_kd_loss(head.act(s_out.last_hidden_state).reshape(-1, d), head.weight,
                                       t_out.last_hidden_state.reshape(-1, d), tr.teacher.lm_head.weight)
            ev[3].record()
            if tr.contrastive is not None:
                loss = loss + 0.1 * tr.contrastive(s_out.last_hidden_state.reshape(-1, d),
                                                   t_out.last_hidden_state.reshape(-1, d), x.reshape(-1), tr.gen)
            ev[4].record()
        loss.backward()
        ev[5].record()
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        ev[6].record()
        torch.cuda.synchronize()
        for i, p in enumerate(parts):
            acc[p] += ev[i].elapsed_time(ev[i + 1]) / n
    return acc


CUDA = torch.cuda.is_available()  # on a CPU every variant runs eager (a smoke test of the variants): no timings to keep


def sync():
    if CUDA:
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, nargs="+", default=[16], help="one or more micro-batch sizes (sequences)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--variants", nargs="+", default=["plain", "fused", "compiled"],
                   choices=["plain", "fused", "compiled", "run-like", "cached"])
    p.add_argument("--bits", default="2-2-8")
    p.add_argument("--out", default=None)
    p.add_argument("--breakdown", action="store_true", help="also time each part of the step (CUDA events)")
    args = p.parse_args()
    teacher, tok = load_float(args.model)
    ids = tokenize_files(args.data, tok)
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    rows = []
    for batch, v in [(b, v) for b in args.batch_size for v in args.variants]:
        cfg = TrainConfig(model=args.model, bits=args.bits, steps=10_000, seq_len=args.seq_len, batch_size=batch,
                          out=f"/tmp/speed_{v}_{time.time_ns()}", progress=False,
                          compile=CUDA and v in ("compiled", "run-like", "cached"), teacher_cache=v == "cached")
        torch._dynamo.reset()  # each setting compiles afresh: no shape-generalised (dynamic) graph from the last one
        try:
            t_setup = time.time()
            tr = Trainer(cfg, teacher=teacher, tokenizer=tok, train_ids=ids)
            setup_s = time.time() - t_setup
            if v == "plain":
                tr.losses = plain_losses(tr)
            if v == "run-like":
                tr.homogeneity()
                tr.eval_ids = ids[: 8 * args.seq_len]
                tr.evaluate()
            sync()
            t_first = time.time()
            tr.train_step()
            sync()
            first_step_s = time.time() - t_first  # includes compilation for 'compiled'
            for _ in range(args.warmup - 1):
                tr.train_step()
            sync()
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            for _ in range(args.steps):
                tr.train_step()
            sync()
            dt = time.time() - t0
            row = {"variant": v, "tok_per_s": args.steps * batch * args.seq_len / dt,
                   "step_ms": 1000 * dt / args.steps, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if CUDA else 0.0,
                   "first_step_s": round(first_step_s, 1), "setup_s": round(setup_s, 1)}
            if tr._t_cache is not None:
                row["teacher_cache_gib"] = round(tr._t_cache.numel() * tr._t_cache.element_size() / 2**30, 2)
            if args.breakdown and v != "plain" and CUDA:
                row["breakdown_ms"] = {k: round(t, 2) for k, t in breakdown(tr).items()}
        except Exception as e:  # report and go on with the other variants
            row = {"variant": v, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        row.update(bits=args.bits, batch=batch, seq_len=args.seq_len, device=torch.cuda.get_device_name() if CUDA else "cpu",
                   commit=commit, date=time.strftime("%Y-%m-%d"))
        rows.append(row)
        print(json.dumps(row), flush=True)
        tr = None
        if CUDA:
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    base = next((r["tok_per_s"] for r in rows if r["variant"] == "plain" and "tok_per_s" in r), None)
    print(f"{'variant':10s} {'batch':>5s} {'tok/s':>10s} {'ms/step':>8s} {'GiB':>6s} {'x plain':>8s} {'1st step s':>10s}")
    for r in rows:
        if "tok_per_s" in r:
            ratio = f"{r['tok_per_s'] / base:.2f}" if base else "-"
            print(f"{r['variant']:10s} {r['batch']:5d} {r['tok_per_s']:10.0f} {r['step_ms']:8.1f} {r['peak_gib']:6.1f} {ratio:>8s} "
                  f"{r['first_step_s']:10.1f}")
        else:
            print(f"{r['variant']:10s} {r['batch']:5d} {r['error']}")


if __name__ == "__main__":
    main()
