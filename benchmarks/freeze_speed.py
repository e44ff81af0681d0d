"""The oscillation freezer's cost per training step on the GPU (freeze.py), eager, compiled and CUDA-graphed, on a
randomly initialised model of SmolLM2-135M's shapes quantized with compress's 2-2-8 defaults (no download, no
staging). Each variant runs the same steps from the same start (an optimizer-like nudge of every weight between
steps, timed apart), with a check every CHECK_EVERY steps; it prints the mean ms of a tracking step and of a check
step, and whether the variant froze the same weights at the same codes as the eager one.

    PYTHONPATH=src python benchmarks/freeze_speed.py [--steps 60] [--variants eager compiled graph compiled+graph]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def main():
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantgpt import QuantConfig, quantize_model
    from quantgpt.flips import latent_weight
    from quantgpt.freeze import CHECK_EVERY, OscillationFreezer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--variants", nargs="+", default=["eager", "compiled", "graph", "compiled+graph"])
    p.add_argument("--out")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    base = LlamaForCausalLM(cfg)
    quantize_model(base, QuantConfig(bits="2-2-8", grid="asym", group_size=16, embedding_group_size=8, scale_bits=8))
    base = base.cuda()
    ref, rows = None, []
    for variant in args.variants:
        model = copy.deepcopy(base)
        fz = OscillationFreezer(model, compile="compiled" in variant, graph="graph" in variant)
        weights = [latent_weight(m) for m, _ in fz.pairs]
        g = torch.Generator(device="cuda").manual_seed(1)
        times = {False: [], True: []}
        for step in range(1, args.steps + 1):
            for w in weights:  # about an Adam step of lr 1e-3 on weights of std 0.02
                w.add_(torch.randn(w.shape, device="cuda", generator=g), alpha=1e-3)
            torch.cuda.synchronize()
            t = time.perf_counter()
            fz.step(step, 0.03)
            torch.cuda.synchronize()
            times[step % CHECK_EVERY == 0].append(time.perf_counter() - t)
        state = fz.state_dict()
        same = None
        if ref is None:
            ref = state
        else:
            same = all(torch.equal(ref[k], state[k]) for k in ref if k.split(".")[1] in ("frozen", "code"))
        skip = 2 * CHECK_EVERY  # compiling, warming and capturing
        track = [x for i, x in enumerate(times[False]) if i >= skip]
        check = times[True][2:]
        rows.append({"variant": variant, "track_ms": 1e3 * sum(track) / len(track),
                     "check_ms": 1e3 * sum(check) / max(1, len(check)), "first_s": times[False][0],
                     "frozen": fz.frozen_share(), "same_as_first": same, "device": torch.cuda.get_device_name()})
        print(json.dumps(rows[-1]), flush=True)
        del model, fz, weights, state
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
