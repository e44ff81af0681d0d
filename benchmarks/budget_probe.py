"""How a time-budgeted run spends its budget, on the GPU, with no staging: compress's own Trainer.run to a
``--budget`` of seconds on a randomly initialised model of SmolLM2-135M's shapes (random Zipf-like tokens for
training and for the held-out text), every fit of the step count read from its train log. Three questions of BENCHMARKS.md
section 35, whose real run's first fit gave 3305 steps and its refits 3083:

  drift      the steps' time in each window of the log against the probe's rate (steps 5-25), which the first
             fit uses: whether the later steps are slower on a random model too (then not the text's doing)
  pause      the slowest windows, and the slowest of the 30 steps from the first freezing check (a quarter into
             the run), where the freezer's check used to compile (9 s on an H100) before it compiled when it was built
  evals      what each evaluation costs (eval_seconds), which the first fit leaves out

    PYTHONPATH=src python benchmarks/budget_probe.py [--budget 200] [--out rows.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import torch

from contrastive_speed import zipf_ids
from smollm2_shaped import VOCAB, smollm2_shaped


def windows(log: list[dict]) -> list[tuple[int, float]]:
    """(last step, ms a step) of each stretch between two training rows of a train log, from their train_seconds
    (the steps' own time: evaluations and checkpoints are outside it)."""
    rows = [r for r in log if "train_seconds" in r]
    return [(b["step"], 1000 * (b["train_seconds"] - a["train_seconds"]) / (b["step"] - a["step"]))
            for a, b in zip(rows, rows[1:]) if b["step"] > a["step"]]


def summary(log: list[dict]) -> dict:
    """The row's findings from the run's train log, its fits of the step count included (the trainer logs each)."""
    fits = [{"step": r["step"], "seconds": r["budget_seconds"], "total_steps": r["budget_fit"],
             "ms_per_step": r["ms_per_step"]} for r in log if "budget_fit" in r]
    freeze_begin = next((r["freeze_begin"] for r in reversed(log) if "freeze_begin" in r), None)  # the last fit's
    w = windows(log)
    later = [ms for step, ms in w if step > 100]
    median = statistics.median(later or [ms for _, ms in w]) if w else None  # None: fewer than two training rows
    slow = sorted(w, key=lambda x: -x[1])[:3]
    # the first check comes at the first multiple of CHECK_EVERY from freeze_begin, and the check's graph is
    # captured at the second: the slowest window of the 30 steps from it
    near = [(s, ms) for s, ms in w if freeze_begin is not None and freeze_begin <= s <= freeze_begin + 30]
    at_freeze = max(near, key=lambda x: x[1]) if near else None
    steps = max((r["step"] for r in log), default=0)
    return {"steps": steps, "fits": fits, "first_fit_over": round(fits[0]["total_steps"] / steps - 1, 4) if fits and steps else None,
            "probe_ms": fits[0]["ms_per_step"] if fits else None, "median_ms_after_100": None if median is None else round(median, 1),
            "windows_ms": [[s, round(ms, 1)] for s, ms in w], "slowest": [[s, round(ms, 1)] for s, ms in slow],
            "freeze_begin": freeze_begin, "slowest_at_first_check": [at_freeze[0], round(at_freeze[1], 1)] if at_freeze else None,
            "eval_seconds": [[r["step"], r["eval_seconds"]] for r in log if "eval_seconds" in r]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=200.0, help="the run's time_budget in seconds")
    p.add_argument("--method", default="quantgpt")
    p.add_argument("--bits", default="2-2-8")
    p.add_argument("--layers", type=int, default=30, help="decoder layers (30: SmolLM2-135M's)")
    p.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary (49152: SmolLM2's; smaller for a quick check)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--blocks", type=int, default=512, help="blocks of random training text")
    p.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens (the study's 65536)")
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the script")
    p.add_argument("--out")
    args = p.parse_args()
    from quantgpt.plots import read_log
    from quantgpt.train_config import TrainConfig
    from quantgpt.trainer import Trainer

    cuda = args.device == "cuda"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    torch.manual_seed(0)
    teacher = smollm2_shaped(args.layers, args.vocab)
    gen = torch.Generator().manual_seed(1)
    ids = zipf_ids(args.blocks * args.seq_len, args.vocab, gen)
    held = zipf_ids(args.eval_tokens, args.vocab, gen)
    out = f"/tmp/budget_probe_{time.time_ns()}"
    tc = TrainConfig(model="random", bits=args.bits, method=args.method, steps=100_000, time_budget=args.budget,
                     seq_len=args.seq_len, batch_size=args.batch_size, eval_tokens=args.eval_tokens, save_every=10**9,
                     out=out, progress=False, device=args.device)
    tr = Trainer(tc, teacher=teacher, train_ids=ids, eval_ids=held)
    result = tr.run()
    log = read_log(tr.out / "train_log.jsonl")
    row = {"method": args.method, "bits": args.bits, "budget": args.budget, **summary(log),
           "train_seconds": result.get("train_seconds"), "run_seconds": result.get("run_seconds"),
           "device": name, "commit": commit, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"steps {row['steps']} (first fit {row['fits'][0]['total_steps'] if row['fits'] else '-'}, over by {row['first_fit_over']}); "
          f"probe {row['probe_ms']} ms, median after step 100 {row['median_ms_after_100']} ms; slowest {row['slowest']}; "
          f"slowest at the first check {row['slowest_at_first_check']}; evals {row['eval_seconds']}")


if __name__ == "__main__":
    main()
