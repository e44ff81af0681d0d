"""What compiling costs a run's start with an empty compile cache and with the one a run before it filled: compress's
own Trainer.run, each run in its own process as on the device, all of them sharing one inductor cache folder that
starts empty (TORCHINDUCTOR_CACHE_DIR), on a randomly initialised model of SmolLM2-135M's widths (random Zipf-like
tokens). Each row: the Trainer's setup (the compile of the teacher cache's graphs in it), the step-0 evaluation and
the first step (where the student's graphs compile), the median of the later steps, the graphs compiled, and the
sizes that torch.compile made symbolic (a graph compiled after another batch size of the same blocks takes the
batch as a symbol: ``L['args'][0].size()[0]`` is the blocks' hidden states' batch).
BENCHMARKS.md section 40: the first 2-bit run on a fresh H100 spent about 47 s in its step-0 evaluation and first
step, the run after it 12 s.

    PYTHONPATH=src python benchmarks/compile_cold.py [--runs quantgpt kd] [--layers 2] [--out rows.jsonl]

On this CPU (2 cores), the defaults: quantgpt first 34.1 s setup, 20.9 s step-0 evaluation, 19.6 s first step; kd
after it 8.7, 2.9 and 6.7 s.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(a) -> dict:
    """The child: one run of ``a.method`` at 2-2-8 with compilation on, timed."""
    import torch
    from torch._dynamo.utils import counters

    from contrastive_speed import zipf_ids
    from quantgpt.plots import read_log
    from quantgpt.train_config import TrainConfig
    from quantgpt.trainer import Trainer
    from smollm2_shaped import smollm2_shaped
    from step_profile import static_shapes

    symbols = []  # torch.compile's symbolic sizes as it makes them (the graphs it made dynamic)

    class Symbols(logging.Handler):
        def emit(self, record):
            if "create_symbol" in record.getMessage():
                symbols.append(record.getMessage().split(" for ")[1].split(" [")[0])
    torch._logging.set_logs(dynamic=logging.INFO)
    log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    log.handlers, log.propagate = [Symbols()], False
    torch.manual_seed(0)
    teacher = smollm2_shaped(layers=a.layers, vocab=a.vocab)
    ids = zipf_ids(a.seq_len * a.batch_size * 4, a.vocab, torch.Generator().manual_seed(0))
    out = tempfile.mkdtemp()
    cfg = TrainConfig(model="random", bits="2-2-8", method=a.method, steps=a.steps, seq_len=a.seq_len,
                      batch_size=a.batch_size, out=out, log_every=1, save_every=10**6, eval_every=10**6,
                      eval_tokens=a.seq_len * 4, progress=False, device=a.device, compile=not a.eager, teacher_cache=True)
    t0 = time.time()
    tr = Trainer(cfg, teacher=teacher, train_ids=ids, eval_ids=ids[: a.seq_len * 4])
    setup = time.time() - t0
    step, times = tr.train_step, []

    def timed():
        s = time.time()
        row = step()
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - s)
        return row

    tr.train_step = static_shapes(timed) if a.static else timed  # --static: as step_profile's +static
    tr.run()
    eval0 = next(r["eval_seconds"] for r in read_log(f"{out}/train_log.jsonl") if "eval_seconds" in r)
    return {"method": a.method, "static": a.static, "setup_s": round(setup, 2), "eval0_s": eval0, "first_step_s": round(times[0], 2),
            "later_step_ms": round(1000 * statistics.median(times[1:]), 1),
            "graphs": counters["stats"].get("unique_graphs", 0), "symbolic": symbols, "device": str(tr.device)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=["quantgpt", "kd"], help="methods, run in this order on one cache")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--eager", action="store_true", help="no compilation (checks the script quickly)")
    p.add_argument("--static", action="store_true", help="training steps with automatic dynamic shapes off")
    p.add_argument("--out")
    p.add_argument("--method", help=argparse.SUPPRESS)  # the child's
    a = p.parse_args(argv)
    if a.method:
        print(json.dumps(one_run(a)))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    cache = tempfile.mkdtemp(prefix="inductor_")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    rows = []
    for i, method in enumerate(a.runs):
        args = [sys.executable, __file__, "--method", method, "--layers", str(a.layers), "--vocab", str(a.vocab),
                "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--steps", str(a.steps),
                "--device", a.device] + (["--eager"] if a.eager else []) + (["--static"] if a.static else [])
        r = subprocess.run(args, capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"the {method} run failed:\n{r.stderr[-3000:]}")
        row = {**json.loads(r.stdout.strip().splitlines()[-1]), "order": i, "cache": "empty" if i == 0 else "filled"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
