"""A tiny random Llama through ``compress`` on the GPU in about a minute: the CUDA path (bf16 autocast,
torch.compile, the teacher cache, the fused losses, the packed export and reload) before a long device sweep
spends its time. Prints one JSON line per run. Under ``torchrun --nproc-per-node N`` it runs data parallel.

    PYTHONPATH=src python benchmarks/gpu_smoke.py [--steps 40] [--out /tmp/smoke]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_model, make_tokenizer  # noqa: E402  (the test suite's tiny models)


def main():
    from quantgpt import distributed
    from quantgpt.data import data_files, tokenize_files
    from quantgpt.evaluate import evaluate
    from quantgpt.models import load_any
    from quantgpt.train_config import TrainConfig
    from quantgpt.trainer import compress

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--out", default="/tmp/quantgpt-smoke")
    args = p.parse_args()
    out = Path(args.out)
    model_dir = out / "model"
    distributed.setup("auto")  # first: is_main() means rank 0 only inside the process group
    if distributed.is_main() and not (model_dir / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        make_model("llama").save_pretrained(model_dir)
        make_tokenizer(data_files("sample")[0].read_text()).save_pretrained(model_dir)
    distributed.barrier()
    for bits, method in (("2-2-8", "quantgpt"), ("4-4-8", "kd")):
        run = out / f"{method}_{bits}"
        if distributed.is_main():
            shutil.rmtree(run, ignore_errors=True)
        distributed.barrier()
        cfg = TrainConfig(model=str(model_dir), bits=bits, method=method, steps=args.steps, seq_len=64, batch_size=8,
                          train_data=["sample"], eval_data=["sample-eval"], eval_tokens=4096, adapt_steps=4,
                          negatives=256, progress=False, out=str(run))
        r = compress(cfg)
        if not distributed.is_main():
            continue
        model, tok = load_any(str(run), device="cuda" if torch.cuda.is_available() else "cpu")[:2]
        ev = evaluate(model, tokenize_files("sample-eval", tok)[:4096], seq_len=64, batch_size=8, progress=False)
        print(json.dumps({"bits": bits, "method": method, "steps": r["steps"], "tok_per_s": round(r["tok_per_s"]),
                          "held_out": (r.get("best") or {}).get("eval_ppl"), "reloaded_ppl": ev["perplexity"],
                          "processes": distributed.world(),
                          "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}), flush=True)


if __name__ == "__main__":
    main()
