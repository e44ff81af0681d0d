"""Float, RTN and GPTQ perplexity of a model on WikiText-2 test (GPTQ protocol: 2048-token windows).

    python benchmarks/ptq_baselines.py --model smollm2-135m --data $QG_DATA --out results/ptq.jsonl

Loads the float model once and quantizes copies of it; appends one JSON line per setting.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time

import torch

from quantgpt import evaluate, gptq_quantize, rtn_quantize
from quantgpt.data import blocks, tokenize_files
from quantgpt.models import load_float
from quantgpt.ptq.rtn import rtn_config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=os.environ.get("QG_DATA", "../shared/data"))
    p.add_argument("--out", default="results/ptq.jsonl")
    p.add_argument("--settings", nargs="+", default=["4-16-16:128", "2-16-16:64"], help="BITS:GROUP")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--methods", nargs="+", default=["float", "rtn", "gptq"])
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    base, tok = load_float(args.model)
    test = tokenize_files(f"{args.data}/wikitext2/test.raw.txt", tok)
    calib = blocks(tokenize_files(f"{args.data}/corpora/wiki_excerpt.txt", tok), args.seq_len)
    calib = calib[torch.randperm(calib.shape[0], generator=torch.Generator().manual_seed(0))[: args.calib_samples]]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def record(method, bits, group, model, dtype, seconds):
        r = evaluate(model, test, seq_len=args.seq_len, batch_size=8, dtype=dtype, progress=False)
        row = {"model": args.model, "method": method, "bits": bits, "group_size": group, "perplexity": r["perplexity"],
               "accuracy": r["accuracy"], "tokens_scored": r["tokens"], "eval_dtype": str(dtype).split(".")[-1],
               "quantize_seconds": round(seconds, 1), "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
               "commit": commit, "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")

    base.to(dev)
    if "float" in args.methods:
        record("float", "16-16-16", None, base, torch.float32, 0)
        record("float", "16-16-16", None, base, torch.bfloat16, 0)
    for setting in args.settings:
        bits, group = setting.split(":")
        group = int(group)
        for method in [m for m in ("rtn", "gptq") if m in args.methods]:
            t0 = time.time()
            m = copy.deepcopy(base)
            rtn_quantize(m, rtn_config(bits, group, ragged_groups=True))
            if method == "gptq":
                # calibration forwards in bf16 on GPU (the Hessians and the GPTQ solve stay in float32)
                gptq_quantize(m, calib, autocast_dtype=torch.bfloat16 if dev.type == "cuda" else None, batch_size=16)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            record(method, bits, group, m, torch.float32, time.time() - t0)
            del m


if __name__ == "__main__":
    main()
