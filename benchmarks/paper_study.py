"""The paper's study on one model: every method at 8-8-8 / 4-4-8 / 2-2-8, the 2-2-8 ablations, and 2-16-8 /
2-4-8, all with the same training budget. Runs any subset (shell patterns over run names) and appends one
JSON line per run; `quantgpt report RESULTS --out DIR` turns the file into tables and plots.

    python benchmarks/paper_study.py --list
    python benchmarks/paper_study.py --only 'quantgpt@2-2-8' '*@4-4-8' --steps 1400 \
        --train-data $QG_DATA/corpora --eval-data $QG_DATA/wikitext2/valid.tokens.txt \
        --test-data $QG_DATA/wikitext2/test.raw.txt --out results/study.jsonl --jobs 4

``--jobs 4`` runs four at a time on the one GPU, each in its own process (logs in RUNS_DIR/logs). Each training
row runs through ``compress`` as a user runs it, so a quantized row first adapts its teacher to the training text
(300 float steps into RUNS_DIR/<run>/teacher when --steps is 300 or more; ``--set adapt_steps=0`` distils from the model as
given) unless ``--model`` names a folder quantgpt adapted (``finetune@16-16-16``'s, or a run's ``teacher``), which
is how a sweep shares one adapted teacher among its rows. The row's ``adapt`` holds that stage's steps and times.

Each row's ``perplexity`` is the test text's, in ``--eval-seq-len`` windows, of the model as saved and loaded
again. With ``--eval-data``, ``held_out_perplexity`` is the whole held-out text's in the same windows and from the
same model. Training chose its checkpoint on that text in its own ``--seq-len`` windows over ``eval_tokens``
tokens, so this row field separates the text from the window length when the two measures disagree
(BENCHMARKS.md section 34). Both texts' mean NLL is also given per group of target tokens by how often the
training text has them (``freq_groups``, as quantgpt.evaluate.frequency_groups cuts them by default;
``group_nll`` / ``held_out_group_nll`` and their token counts).
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from host import host_info
from quantgpt import evaluate, gptq_quantize, rtn_quantize
from quantgpt.evaluate import frequency_groups
from quantgpt.data import blocks, tokenize_files
from quantgpt.device import autocast_for
from quantgpt.errors import QuantGPTError
from quantgpt.losses import pairwise_cosine_histogram
from quantgpt.models import load_any, load_float
from quantgpt.ptq.rtn import rtn_config
from quantgpt.train_config import TrainConfig
from quantgpt.adapt import has_run
from quantgpt.trainer import compress

MAIN_BITS = ("8-8-8", "4-4-8", "2-2-8")
METHODS = ("float", "rtn", "gptq", "pact", "lsq", "laq", "kd", "quantgpt")


def grid() -> dict[str, dict]:
    runs = {f"{m}@{b}": {"method": m, "bits": b} for b in MAIN_BITS for m in METHODS if m != "float"}
    runs["float"] = {"method": "float", "bits": "16-16-16"}
    q = {"method": "quantgpt", "bits": "2-2-8"}
    ablations = {
        # a learned but static clip instead of dynamic scaling: mds with mean|w - b| frozen at the start, on the
        # default asym grid, so only the clip rule differs from quantgpt
        "fixed-alpha": {"dynamic_scale": False},
        # the same with PACT's clip: pact has no asym grid, so it runs on the full grid (compare full-grid below)
        "pact-clip": {"quantizer": "pact"},
        "no-bank": {"negative_source": "batch"},
        "student-negatives": {"negative_source": "student"},
        "tau0.05": {"tau": 0.05}, "tau0.3": {"tau": 0.3},
        "lambda0.01": {"cont_weight": 0.01}, "lambda0.1": {"cont_weight": 0.1},  # 0.03: the default (section 24)
        "lambda0.5": {"cont_weight": 0.5},
        "lambda1": {"cont_weight": 1.0},
        "layer-mid": {"layer": 14},
        "init-gptq": {"init": "gptq"},
        "init-blockwise": {"init": "blockwise"},  # each block first trained alone towards the teacher's
        "head-scale": {"head_scale": True},  # the tied 2-bit head's own scale per token
        # scaling choices the paper leaves open; quantgpt's 2-bit defaults are 16-column groups on the asym grid (all
        # 2^b codes about a learned centre) with 8-bit scales, 32-feature activation groups, 8-feature embedding
        # groups (32 / 16 / fp16 at 4 bits, 32 / 32 / fp16 at 8)
        "per-tensor": {"granularity": "tensor"},  # the paper's module-wise clip
        "per-channel": {"granularity": "channel"},  # one clip per output row
        "ternary": {"grid": "sym"},
        "full-grid": {"grid": "full"},  # four codes about zero: 2.5 bits a weight (an 8-bit scale per 16, no centre)
        # the layouts of earlier sections, with their fp16 scales
        "asym-g64": {"scale_bits": 16, "group_size": 64, "embedding_group_size": 64},  # 2.5 bits a weight
        "full-g64": {"grid": "full", "scale_bits": 16, "group_size": 64, "embedding_group_size": 64},  # 2.25 bits
        "token-acts": {"act_granularity": "token"},
        "embedding-per-channel": {"embedding_granularity": "channel"},
        "embedding-g32": {"scale_bits": 16, "group_size": 32, "embedding_group_size": 32},  # the 2-bit default before section 12
        # 8-bit scales and centres (one fp16 factor each per row): groups half as long at the defaults' storage
        # (3.06 bits a decoder weight, 4.06 a table weight), and each half of that alone, the other part cheaper
        # (s8-g16-e8, the storage-matched one, has been the 2-bit default since section 22; its rows keep the name)
        "fp16-g32-e16": {"scale_bits": 16, "group_size": 32, "embedding_group_size": 16},  # the default before it
        "s8-g32-e8": {"scale_bits": 8, "group_size": 32, "embedding_group_size": 8},  # decoder at 2.5 bits, table at 4.06
        "s8-g16-e16": {"scale_bits": 8, "group_size": 16, "embedding_group_size": 16},  # decoder at 3.06 bits, table at 3.06
        "paper-scaling": {"granularity": "tensor", "grid": "sym", "act_granularity": "token",
                          "embedding_granularity": "tensor"},
    }
    for name, kw in ablations.items():
        runs[f"quantgpt-{name}@2-2-8"] = {**q, **kw, "ablation": name}
    for b in ("2-16-8", "2-4-8"):
        runs[f"quantgpt@{b}"] = {"method": "quantgpt", "bits": b, "ablation": "embedding bits"}
    # the float model fine-tuned on the training text (KD + LM term), written as a transformers folder: compress's
    # first stage run alone, so that rows given --model on it share one adapted teacher
    runs["finetune@16-16-16"] = {"method": "kd", "bits": "16-16-16", "ablation": "teacher adaptation"}
    return runs


@torch.no_grad()
def cos_hist(model, window, device, dtype):
    with autocast_for(device, dtype):
        h = model.base_model(input_ids=window.to(device), use_cache=False).last_hidden_state[0]
    return pairwise_cosine_histogram(h)


def row_name(name: str, tag: str) -> str:
    """The name a run's row carries (``quantgpt@2-2-8+tag``): --skip-done matches on it."""
    return name + (f"+{tag}" if tag else "")


def run_slug(name: str, tag: str) -> str:
    """A run's folder (under --runs-dir) and log file name: ``quantgpt_2-2-8tag``."""
    return name.replace("@", "_") + tag


def without_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` less the given options and their values (``--only a b``, ``--jobs=4``)."""
    out, dropping = [], False
    for a in argv:
        if a.startswith("--"):
            dropping = a.split("=", 1)[0] in flags
            if dropping:
                continue
        elif dropping:
            continue
        out.append(a)
    return out


def run_parallel(names: list[str], jobs: int, runs_dir: str, tag: str) -> int:
    """Each run in its own process of this script, ``jobs`` at a time on the one device. A 135M-parameter run
    leaves the H100 partly idle (one run: 112k tokens/s; five sharing it: about 34k each), so the study's
    many short runs finish sooner together. Rows get ``shared_gpu``: their seconds are not speed figures.
    SIGINT / SIGTERM go on to the running children (each saves a resumable checkpoint) and start no more."""
    argv = without_flags(sys.argv[1:], ("--only", "--jobs"))
    shared = min(jobs, len(names))
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")}
    logs = Path(runs_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, stop = list(names), {}, [], []
    handlers = {sig: signal.signal(sig, lambda signum, _f: stop.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            if stop:
                for proc in running.values():
                    if proc.poll() is None:
                        proc.send_signal(stop[0])
                pending.clear()
                stop.clear()
            while pending and len(running) < jobs:
                name = pending.pop(0)
                log = open(logs / f"{run_slug(name, tag)}.log", "w")
                cmd = [sys.executable, sys.argv[0], *argv, "--only", name, "--shared-gpu", str(shared)]
                running[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    print(f"{name}: {'done' if proc.returncode == 0 else f'failed (exit {proc.returncode})'}, log in {logs}",
                          flush=True)
                    if proc.returncode:
                        failed.append(name)
            time.sleep(0.5)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    if failed:
        print(f"{len(failed)} of {len(names)} runs failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def git_commit() -> str:
    """HEAD's short hash, with ``-dirty`` when the code (src/, benchmarks/) differs from it: a copy of a work tree
    sent to a GPU machine runs uncommitted code (set QG_COMMIT to name it)."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True)  # noqa: E731
    head = run("rev-parse", "--short", "HEAD").stdout.strip()
    dirty = head and run("diff", "--quiet", "HEAD", "--", "src", "benchmarks").returncode == 1
    return head + ("-dirty" if dirty else "")


def append_row(path: str, row: dict) -> None:
    """One write of one line: rows of runs made side by side (--jobs) do not interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--only", nargs="+", default=["*"], help="shell patterns over run names (see --list)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--train-data", nargs="+", default=["sample"])
    p.add_argument("--eval-data", nargs="+", default=None, help="held-out text for the best checkpoint")
    p.add_argument("--test-data", nargs="+", default=["sample-eval"])
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides for every training run (YAML values), e.g. grid=full lr=1e-3; given "
                        "twice, both apply (a later key wins), so a sweep script's own --set keeps its defaults")
    p.add_argument("--tag", default="", help="appended to the run names (e.g. to tell --set sweeps apart); write --tag=-x for a tag "
                        "that starts with '-'")
    p.add_argument("--resume", action="store_true",
                   help="continue a training run whose folder holds a checkpoint (one stopped by a time limit: send "
                        "SIGTERM or SIGINT, e.g. `timeout -s INT 540 ...`, and the run saves its state first)")
    p.add_argument("--skip-done", action="store_true",
                   help="leave out runs that already have a row in --out (to go on with a sweep cut short; with "
                        "--resume a cut run continues from its checkpoint)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: TrainConfig's, 32)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--eval-seq-len", type=int, default=2048)
    p.add_argument("--ptq-group-size", type=int, default=64)
    p.add_argument("--ptq-act-group-size", type=int, default=None,
                   help="activation groups of the rtn / gptq rows (default: quantgpt's)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default="runs/study")
    p.add_argument("--out", default="results/study.jsonl")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side on the one device, each in its own process (a SmolLM2 run needs about 22 GiB "
                        "of GPU memory at batch 32, 12 GiB at 16: 3 or 4 to an H100, with room for evaluation)")
    p.add_argument("--shared-gpu", type=int, default=int(os.environ.get("QG_SHARED_GPU", 1)),
                   help=argparse.SUPPRESS)  # set by --jobs for its children, or QG_SHARED_GPU by a script that starts several
    args = p.parse_args()
    runs = {k: v for k, v in grid().items() if any(fnmatch.fnmatchcase(k, pat) for pat in args.only)}
    try:
        overrides = TrainConfig.parse_assignments(args.set)
    except QuantGPTError as e:
        raise SystemExit(str(e)) from None
    if args.skip_done and Path(args.out).is_file():
        done = {json.loads(line).get("name") for line in Path(args.out).read_text().splitlines() if line.strip()}
        runs = {k: v for k, v in runs.items() if row_name(k, args.tag) not in done}
        if not runs:
            print(f"every run asked for already has a row in {args.out}")
            return
    if args.list or not runs:
        print("\n".join(grid() if args.list else ["no run matches --only"]))
        return
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    if args.jobs > 1 and len(runs) > 1:  # each child makes the --out folder and appends its row
        raise SystemExit(run_parallel(list(runs), args.jobs, args.runs_dir, args.tag))
    from quantgpt.device import pick_device, pick_dtype

    from quantgpt import distributed

    device = pick_device(distributed.setup(args.device))  # under torchrun: this rank's GPU; rank 0 tests and writes
    dtype = pick_dtype("auto", device)
    commit = os.environ.get("QG_COMMIT") or git_commit()
    teacher, tok = load_float(args.model)
    train_ids = tokenize_files(args.train_data, tok)
    eval_ids = tokenize_files(args.eval_data, tok) if args.eval_data else None
    test_ids = tokenize_files(args.test_data, tok)
    window = test_ids[: args.eval_seq_len].reshape(1, -1)
    # the targets grouped by how often the training text has them: each row's NLL per group says where its loss sits
    groups, group_names = frequency_groups(train_ids, teacher.config.vocab_size)
    teacher_hist = cos_hist(teacher.to(device), window, device, dtype)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for name, spec in runs.items():
        t0 = time.time()
        method, bits = spec["method"], spec["bits"]
        row = {"name": row_name(name, args.tag), "method": method, "bits": bits,
               "ablation": spec.get("ablation")}
        if method in ("float", "rtn", "gptq"):
            if not distributed.is_main():  # no training to share: rank 0 alone measures it
                continue
            model = teacher if method == "float" else rtn_quantize(copy.deepcopy(teacher).to(device),
                                                                 rtn_config(bits, args.ptq_group_size, ragged_groups=True,
                                                                            act_group_size=args.ptq_act_group_size))
            if method == "gptq":
                calib = blocks(train_ids, args.eval_seq_len)
                calib = calib[torch.randperm(calib.shape[0], generator=torch.Generator().manual_seed(0))[: args.calib_samples]]
                gptq_quantize(model, calib, autocast_dtype=dtype if dtype != torch.float32 else None, progress=False)
            row["tokens_trained"] = 0
            if method != "float":
                row["ptq_group_size"] = args.ptq_group_size
        else:
            settings = {**{k: v for k, v in spec.items() if k not in ("ablation",)}, **overrides}
            out = Path(args.runs_dir) / run_slug(name, args.tag)
            resume = args.resume and has_run(out)
            base = dict(model=args.model, steps=args.steps, seq_len=args.seq_len, out=str(out), device=args.device,
                        calib_samples=args.calib_samples, resume=resume, train_data=args.train_data,
                        eval_data=args.eval_data)  # the texts are tokenized above; the row's config records them
            if args.batch_size:
                base["batch_size"] = args.batch_size
            cfg = TrainConfig(**{**base, **settings})  # --set may override the flags' values too (batch_size=32)
            # compress as a user runs it: a quantized row adapts its teacher first unless --model is adapted
            r = compress(cfg, teacher=teacher, tokenizer=tok, train_ids=train_ids, eval_ids=eval_ids)
            if "interrupted" in r:  # stopped by a signal (e.g. a time limit): its checkpoint can be resumed
                print(json.dumps({"name": row["name"], "interrupted": r}), flush=True)
                break
            if "stop_signal" in r:  # the signal came while the model was written: stop before the test
                print(json.dumps({"name": row["name"], "finished_then_stopped": r["stop_signal"],
                                  "hint": "run it again with --resume to evaluate it"}), flush=True)
                break
            if not distributed.is_main():
                continue
            model = load_any(cfg.out, device=device)[0]  # the kept (best) model, as a user gets it (float at 16-16-16)
            row.update(bits=cfg.bits, method="finetune" if cfg.float_student else cfg.method,
                       resumed=resume)  # as run, after any --set override
            row.update(tokens_trained=r["tokens"], train_tok_per_s=r["tok_per_s"], train_log=str(Path(cfg.out) / "train_log.jsonl"),
                       train_seconds=r["train_seconds"], run_seconds=r["run_seconds"],
                       run_seconds_all=r["run_seconds_all"], best_eval=r.get("best"), adapt=r.get("adapt"),
                       settings={k: getattr(cfg, k) for k in settings},
                       config=cfg.to_dict())
        # each window's mean NLL too: report.py compares two settings window by window (a paired difference)
        ev = evaluate(model, test_ids, seq_len=args.eval_seq_len, batch_size=8, dtype=dtype, progress=False,
                      per_window=True, token_groups=groups)
        row.update(perplexity=ev["perplexity"], perplexity_halves=ev["perplexity_halves"], accuracy=ev["accuracy"],
                   tokens_scored=ev["tokens"], window_nll=ev["window_nll"], freq_groups=group_names,
                   group_nll=ev["group_nll"], group_tokens=ev["group_tokens"])
        if eval_ids is not None:  # the held-out text in the test's windows (the module docstring says why)
            held = evaluate(model, eval_ids, seq_len=min(args.eval_seq_len, eval_ids.numel()), batch_size=8,
                            dtype=dtype, progress=False, per_window=True, token_groups=groups)
            row.update(held_out_perplexity=held["perplexity"], held_out_tokens=held["tokens"],
                       held_out_window_nll=held["window_nll"], held_out_group_nll=held["group_nll"],
                       held_out_group_tokens=held["group_tokens"])
        row.update(wall_seconds=round(time.time() - t0, 1), cos_hist=cos_hist(model, window, device, dtype),
                   teacher_cos_hist=teacher_hist,
                   device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", commit=commit,
                   date=time.strftime("%Y-%m-%d"), shared_gpu=args.shared_gpu,
                   processes=distributed.world() if row["tokens_trained"] else 1,  # training's ranks (torchrun)
                   **host_info())
        print(json.dumps({k: v for k, v in row.items() if "hist" not in k and "window_nll" not in k}), flush=True)
        append_row(args.out, row)
        if model is not teacher:
            del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
