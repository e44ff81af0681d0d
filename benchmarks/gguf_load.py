"""Reading a GGUF file into a float model, transformers' way: as it is (the file parsed for the config, the
tokenizer and the weights, gguf's tensor-name map built for every module) against load_float's (each parsed and
built once: models._gguf_parsed_once), alternating in one process after a first load that warms the imports and
the page cache. Nothing is cached on disk (use_cache=False); the two loads must give the same weights and
vocabulary.

    python benchmarks/gguf_load.py smollm2-135m --rounds 3
"""
import argparse
import contextlib
import json
import statistics
import time

import torch

from quantgpt import models

p = argparse.ArgumentParser()
p.add_argument("model", nargs="?", default="smollm2-135m", help="a .gguf file or smollm2-135m")
p.add_argument("--rounds", type=int, default=3, help="loads of each way, alternating")
p.add_argument("--json", action="store_true")
args = p.parse_args()
kind, path = models.resolve(args.model)
if kind != "gguf":
    raise SystemExit(f"{args.model}: not a GGUF file")
ways = {"as transformers": contextlib.nullcontext, "parsed once": models._gguf_parsed_once}


def load(way):
    with ways[way]():
        return models._from_pretrained(path.parent, torch.float32, gguf_file=path.name)


first = {w: load(w) for w in ways}  # the imports and the file's pages warm; the results compared
(a, ta), (b, tb) = first.values()
same = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
same_vocab = ta.get_vocab() == tb.get_vocab()
times = {w: [] for w in ways}
for _ in range(args.rounds):
    for w in ways:
        t = time.perf_counter()
        load(w)
        times[w].append(time.perf_counter() - t)
rows = {w: {"median_s": statistics.median(ts), "seconds": ts} for w, ts in times.items()}
if args.json:
    print(json.dumps({"model": str(path), "rows": rows, "same_weights": same, "same_vocab": same_vocab}))
else:
    for w, r in rows.items():
        print(f"{w:16s} median {r['median_s']:6.2f} s  ({', '.join(f'{t:.2f}' for t in r['seconds'])})")
    print(f"same weights: {same}; same vocabulary: {same_vocab}; "
          f"{rows['as transformers']['median_s'] / rows['parsed once']['median_s']:.2f}x")
