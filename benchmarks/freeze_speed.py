"""The oscillation freezer's cost per training step on the GPU (freeze.py), eager, compiled and CUDA-graphed, on a
randomly initialised model of SmolLM2-135M's shapes quantized with compress's 2-2-8 defaults (no download, no
staging). Each variant runs the same steps from the same start (an optimizer-like nudge of every weight between
steps, timed apart), with a check every CHECK_EVERY steps; it prints the mean ms of a tracking step and of a check
step, and the share of the frozen flags and codes in which the variant ends unlike the first (the eager one:
compiled code may round a tie at a threshold the other way; a graph replays the compiled kernels, so it should end
exactly like the compiled variant).

    PYTHONPATH=src python benchmarks/freeze_speed.py [--steps 60] [--variants eager compiled graph compiled+graph]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from smollm2_shaped import smollm2_shaped


def main():
    from quantgpt import QuantConfig, quantize_model
    from quantgpt.flips import latent_weight
    from quantgpt.freeze import CHECK_EVERY, OscillationFreezer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--variants", nargs="+", default=["eager", "compiled", "graph", "compiled+graph"])
    p.add_argument("--layers", type=int, default=30, help="decoder layers (30: SmolLM2-135M's)")
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the script (no graph variants)")
    p.add_argument("--out")
    args = p.parse_args()
    torch.manual_seed(0)
    base = smollm2_shaped(args.layers)
    quantize_model(base, QuantConfig(bits="2-2-8", grid="asym", group_size=16, embedding_group_size=8, scale_bits=8))
    dev = torch.device(args.device)
    base = base.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ref, rows = None, []
    for variant in args.variants:
        if "graph" in variant and dev.type != "cuda":
            continue
        model = copy.deepcopy(base)
        fz = OscillationFreezer(model, compile="compiled" in variant, graph="graph" in variant)
        weights = [latent_weight(m) for m, _ in fz.pairs]
        g = torch.Generator(device=dev).manual_seed(1)
        times = {False: [], True: []}
        for step in range(1, args.steps + 1):
            for w in weights:  # about an Adam step of lr 1e-3 on weights of std 0.02
                w.add_(torch.randn(w.shape, device=dev, generator=g), alpha=1e-3)
            sync()
            t = time.perf_counter()
            fz.step(step, 0.03)
            sync()
            times[step % CHECK_EVERY == 0].append(time.perf_counter() - t)
        state = fz.state_dict()
        if ref is None:
            ref = state
        keys = [k for k in ref if k.split(".")[1] in ("frozen", "code")]  # what was frozen, at which codes
        differ = sum(int((ref[k] != state[k]).sum()) for k in keys) / sum(ref[k].numel() for k in keys)
        track, check = times[False][2:], times[True][2:]  # the first two of each kind compile, warm and capture
        rows.append({"variant": variant, "track_ms": 1e3 * sum(track) / max(1, len(track)),
                     "check_ms": 1e3 * sum(check) / max(1, len(check)), "first_s": times[False][0],
                     "frozen": fz.frozen_share(), "differ_from_first": differ,
                     "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"})
        print(json.dumps(rows[-1]), flush=True)
        del model, fz, weights, state
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
