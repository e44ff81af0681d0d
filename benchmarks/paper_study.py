"""The paper's study on one model: every method at 8-8-8 / 4-4-8 / 2-2-8, the 2-2-8 ablations, and 2-16-8 /
2-4-8, all with the same training budget. Runs any subset (shell patterns over run names) and appends one
JSON line per run; `quantgpt report RESULTS --out DIR` turns the file into tables and plots.

    python benchmarks/paper_study.py --list
    python benchmarks/paper_study.py --only 'quantgpt@2-2-8' '*@4-4-8' --steps 1400 \
        --train-data $QG_DATA/corpora --eval-data $QG_DATA/wikitext2/valid.tokens.txt \
        --test-data $QG_DATA/wikitext2/test.raw.txt --out results/study.jsonl
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import subprocess
import time
from pathlib import Path

import torch
import yaml

from quantgpt import evaluate, gptq_quantize, load, rtn_quantize
from quantgpt.data import blocks, tokenize_files
from quantgpt.device import autocast_for
from quantgpt.losses import pairwise_cosine_histogram
from quantgpt.models import load_float
from quantgpt.ptq.rtn import rtn_config
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer

MAIN_BITS = ("8-8-8", "4-4-8", "2-2-8")
METHODS = ("float", "rtn", "gptq", "pact", "lsq", "laq", "kd", "quantgpt")


def grid() -> dict[str, dict]:
    runs = {f"{m}@{b}": {"method": m, "bits": b} for b in MAIN_BITS for m in METHODS if m != "float"}
    runs["float"] = {"method": "float", "bits": "16-16-16"}
    q = {"method": "quantgpt", "bits": "2-2-8"}
    ablations = {
        "fixed-alpha": {"quantizer": "pact"},  # a learned but static clip instead of dynamic scaling
        "no-bank": {"negative_source": "batch"},
        "student-negatives": {"negative_source": "student"},
        "tau0.05": {"tau": 0.05}, "tau0.3": {"tau": 0.3},
        "lambda0.01": {"cont_weight": 0.01}, "lambda0.5": {"cont_weight": 0.5}, "lambda1": {"cont_weight": 1.0},
        "layer-mid": {"layer": 14},
        "init-gptq": {"init": "gptq"},
        # scaling choices the paper leaves open; quantgpt's defaults are 64-column groups, four codes at 2 bits,
        # 32-feature activation groups, 64-feature embedding groups
        "per-tensor": {"granularity": "tensor"},  # the paper's module-wise clip
        "per-channel": {"granularity": "channel"},  # one clip per output row
        "ternary": {"grid": "sym"},
        "token-acts": {"act_granularity": "token"},
        "embedding-per-channel": {"embedding_granularity": "channel"},
        "paper-scaling": {"granularity": "tensor", "grid": "sym", "act_granularity": "token",
                          "embedding_granularity": "tensor"},
    }
    for name, kw in ablations.items():
        runs[f"quantgpt-{name}@2-2-8"] = {**q, **kw, "ablation": name}
    for b in ("2-16-8", "2-4-8"):
        runs[f"quantgpt@{b}"] = {"method": "quantgpt", "bits": b, "ablation": "embedding bits"}
    return runs


def parse_overrides(items: list[str]) -> dict:
    known = set(TrainConfig.__dataclass_fields__)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in known:
            raise SystemExit(f"--set {item!r}: write KEY=VALUE with KEY a TrainConfig field")
        out[key] = yaml.safe_load(value)
    return out


@torch.no_grad()
def cos_hist(model, window, device, dtype):
    with autocast_for(device, dtype):
        h = model.base_model(input_ids=window.to(device), use_cache=False).last_hidden_state[0]
    return pairwise_cosine_histogram(h)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--only", nargs="+", default=["*"], help="shell patterns over run names (see --list)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--train-data", nargs="+", default=["sample"])
    p.add_argument("--eval-data", nargs="+", default=None, help="held-out text for the best checkpoint")
    p.add_argument("--test-data", nargs="+", default=["sample-eval"])
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides for every training run (YAML values), e.g. grid=full lr=1e-3")
    p.add_argument("--tag", default="", help="appended to the run names (e.g. to tell --set sweeps apart)")
    p.add_argument("--resume", action="store_true",
                   help="continue a training run whose folder holds a checkpoint (one stopped by a time limit: send "
                        "SIGTERM or SIGINT, e.g. `timeout -s INT 540 ...`, and the run saves its state first)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--eval-seq-len", type=int, default=2048)
    p.add_argument("--ptq-group-size", type=int, default=64)
    p.add_argument("--ptq-act-group-size", type=int, default=None,
                   help="activation groups of the rtn / gptq rows (default: quantgpt's)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default="runs/study")
    p.add_argument("--out", default="results/study.jsonl")
    args = p.parse_args()
    runs = {k: v for k, v in grid().items() if any(fnmatch.fnmatchcase(k, pat) for pat in args.only)}
    overrides = parse_overrides(args.set)
    if args.list or not runs:
        print("\n".join(grid() if args.list else ["no run matches --only"]))
        return
    from quantgpt.device import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    teacher, tok = load_float(args.model)
    train_ids = tokenize_files(args.train_data, tok)
    eval_ids = tokenize_files(args.eval_data, tok) if args.eval_data else None
    test_ids = tokenize_files(args.test_data, tok)
    window = test_ids[: args.eval_seq_len].reshape(1, -1)
    teacher_hist = cos_hist(teacher.to(device), window, device, dtype)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for name, spec in runs.items():
        t0 = time.time()
        method, bits = spec["method"], spec["bits"]
        row = {"name": name + (f"+{args.tag}" if args.tag else ""), "method": method, "bits": bits,
               "ablation": spec.get("ablation")}
        if method in ("float", "rtn", "gptq"):
            model = teacher if method == "float" else rtn_quantize(copy.deepcopy(teacher).to(device),
                                                                 rtn_config(bits, args.ptq_group_size, ragged_groups=True,
                                                                            act_group_size=args.ptq_act_group_size))
            if method == "gptq":
                calib = blocks(train_ids, args.eval_seq_len)
                calib = calib[torch.randperm(calib.shape[0], generator=torch.Generator().manual_seed(0))[: args.calib_samples]]
                gptq_quantize(model, calib, autocast_dtype=dtype if dtype != torch.float32 else None, progress=False)
            row["tokens_trained"] = 0
        else:
            settings = {**{k: v for k, v in spec.items() if k not in ("ablation",)}, **overrides}
            out = Path(args.runs_dir) / (name.replace("@", "_") + args.tag)
            resume = args.resume and (out / "checkpoint" / "state.json").is_file()
            cfg = TrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                              out=str(out), device=args.device, calib_samples=args.calib_samples, resume=resume,
                              **settings)
            tr = Trainer(cfg, teacher=teacher, tokenizer=tok, train_ids=train_ids, eval_ids=eval_ids)
            r = tr.run()
            if "interrupted" in r:  # stopped by a signal (e.g. a time limit): its checkpoint can be resumed
                print(json.dumps({"name": row["name"], "interrupted": r}), flush=True)
                break
            model = load(cfg.out, device=device)  # the kept (best) model, as a user gets it
            row.update(bits=cfg.bits, method=cfg.method, resumed=resume)  # as run, after any --set override
            row.update(tokens_trained=r["tokens"], train_tok_per_s=r["tok_per_s"], train_log=str(Path(cfg.out) / "train_log.jsonl"),
                       train_seconds=r["train_seconds"], settings={k: getattr(cfg, k) for k in settings},
                       config=cfg.to_dict())
            del tr
        ev = evaluate(model, test_ids, seq_len=args.eval_seq_len, batch_size=8, dtype=dtype, progress=False)
        row.update(perplexity=ev["perplexity"], accuracy=ev["accuracy"], tokens_scored=ev["tokens"],
                   wall_seconds=round(time.time() - t0, 1), cos_hist=cos_hist(model, window, device, dtype),
                   teacher_cos_hist=teacher_hist,
                   device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", commit=commit,
                   date=time.strftime("%Y-%m-%d"))
        print(json.dumps({k: v for k, v in row.items() if "hist" not in k}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        if model is not teacher:
            del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
