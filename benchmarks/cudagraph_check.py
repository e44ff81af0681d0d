"""Does torch.compile's ``reduce-overhead`` mode (CUDA graphs) survive a training step of a stock transformers
Llama? BENCHMARKS.md section 43: on torch 2.11 every form below failed with "accessing tensor output of CUDAGraphs
that has been overwritten by a subsequent run", so quantgpt's ``--cudagraphs`` (its blocks compiled so) was
removed. Rerun this on a newer torch before trying again: a variant that passes is the way back in.

Each variant trains a randomly initialised Llama (4 layers, hidden 256) for ``--steps`` steps of forward and
backward, with ``torch.compiler.cudagraph_mark_step_begin()`` before each, and prints one JSON line: ok, or the
error. Variants: ``blocks`` (each decoder layer compiled alone, as quantgpt compiles its blocks), ``whole`` (the
model compiled whole), ``clone`` (as blocks, each layer's input cloned first by a pre-hook, so no layer reads the
last one's graph output), ``eager`` (no compile: checks the script itself). ``--no-autocast`` runs in float32;
``--no-trees`` sets ``torch._inductor.config.triton.cudagraph_trees = False``.

    python benchmarks/cudagraph_check.py [--variants blocks whole clone] [--no-autocast] [--no-trees]
"""
from __future__ import annotations

import argparse
import json

import torch


def clone_input(module, args, kwargs):
    """A decoder layer's pre-hook: its hidden states cloned, positional or keyword."""
    if args:
        return (args[0].clone(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].clone()}


def check(variant: str, device: str, steps: int, autocast: bool) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.compiler.reset()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2)).to(device)
    if variant in ("blocks", "clone"):
        for layer in model.model.layers:
            if variant == "clone":
                layer.register_forward_pre_hook(clone_input, with_kwargs=True)
            layer.compile(mode="reduce-overhead")
    elif variant == "whole":
        model.compile(mode="reduce-overhead")
    elif variant != "eager":
        raise SystemExit(f"unknown variant {variant!r}: blocks, whole, clone or eager")
    x = torch.randint(0, 1000, (2, 128), device=device)
    row = {"variant": variant, "autocast": autocast, "torch": torch.__version__, "device": device}
    try:
        for _ in range(steps):
            torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device, torch.bfloat16, enabled=autocast):
                logits = model(input_ids=x, use_cache=False).logits
            logits.float().logsumexp(-1).mean().backward()
        return {**row, "ok": True}
    except Exception as e:
        return {**row, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["blocks", "whole", "clone"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--no-autocast", action="store_true")
    p.add_argument("--no-trees", action="store_true")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    if args.no_trees:
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraph_trees = False
    for v in args.variants:
        row = check(v, args.device, args.steps, not args.no_autocast)
        print(json.dumps({**row, "cudagraph_trees": not args.no_trees}), flush=True)


if __name__ == "__main__":
    main()
