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
from conftest import VOCAB, make_model  # noqa: E402  (the test suite's tiny models)


def tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text[:100_000]], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


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
    if distributed.is_main() and not (model_dir / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        tok = tokenizer(data_files("sample")[0].read_text())
        make_model("llama").save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    distributed.setup("auto")
    distributed.barrier()
    for bits, method in (("2-2-8", "quantgpt"), ("4-4-8", "kd")):
        run = out / f"{method}_{bits}"
        shutil.rmtree(run, ignore_errors=True) if distributed.is_main() else None
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
