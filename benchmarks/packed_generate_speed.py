"""Greedy generation from a packed model with its embedding looked up row by row (PackedWeight.dequantize_rows,
the default) against the whole table unpacked at every lookup (the path before it), and the same folder loaded
with every matrix dequantized once (``load(..., unpack=True)``, ``--unpack``), alternating, in one process:
seconds for the same new tokens, the megabytes each model holds (parameters and buffers), and whether the texts
agree. ``--float`` also times the same model exported to
a plain float ``transformers`` folder (``quantgpt export --dequantize``), loaded in float32 as the packed one runs.
``--kernel`` also times the folder loaded with ``kernel=True`` (every linear layer multiplied by the Triton kernel
from the packed codes; CUDA).

    python benchmarks/packed_generate_speed.py .devcache/models/kd_2-2-8-tb-seed2-s37 --tokens 40 --device cpu
"""
import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

import quantgpt
from quantgpt import packed
from quantgpt.device import pick_device
from quantgpt.sizes import resident_bytes

p = argparse.ArgumentParser()
p.add_argument("model", help="a packed model folder")
p.add_argument("--device", default="auto")
p.add_argument("--prompt", default="The history of the Roman Empire")
p.add_argument("--tokens", type=int, default=40, help="new tokens a generation")
p.add_argument("--rounds", type=int, default=2, help="generations of each lookup, alternating")
p.add_argument("--float", action="store_true", help="also the model dequantized to a plain float folder")
p.add_argument("--kernel", action="store_true", help="also the model loaded with kernel=True (Triton, CUDA)")
args = p.parse_args()
device = pick_device(args.device)
model = quantgpt.load(args.model).to(device).eval()
unpacked = quantgpt.load(args.model, unpack=True).to(device).eval()
kernel = quantgpt.load(args.model, kernel=True).to(device).eval() if args.kernel else None
tok = AutoTokenizer.from_pretrained(args.model)
x = tok(args.prompt, return_tensors="pt").input_ids.to(device)
rows = packed.PackedEmbedding.forward


def whole(self, ids):
    return F.embedding(ids, self.packed.dequantize(), self.padding_idx)


def timed(m, name):
    t = time.perf_counter()
    with torch.no_grad():
        out = m.generate(x, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds.setdefault(name, []).append(time.perf_counter() - t)
    texts[name] = tok.decode(out[0, x.shape[1]:])


texts, seconds = {}, {}
for _ in range(args.rounds):
    for name, forward in (("whole", whole), ("rows", rows)):
        packed.PackedEmbedding.forward = forward
        timed(model, name)
    packed.PackedEmbedding.forward = rows
    timed(unpacked, "unpacked")
    if kernel is not None:
        try:
            timed(kernel, "kernel")
        except Exception as e:  # a kernel that fails on this GPU must not cost the other rows
            print(f"the kernel's generation failed: {type(e).__name__}: {str(e)[:300]}")
            kernel = None
if args.float:
    from transformers import AutoModelForCausalLM

    from quantgpt.cli import main

    with tempfile.TemporaryDirectory() as d:
        assert main(["export", args.model, "--dequantize", "--out", d]) == 0
        plain = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(device).eval()
    for _ in range(args.rounds):
        timed(plain, "float")
held = {"whole": model, "rows": model, "unpacked": unpacked, "kernel": kernel, "float": plain if args.float else None}
print(f"{'model':8} {'seconds':>20}  tokens/s  MB held")  # parameters and buffers: codes, scales, float copies
for name, s in seconds.items():
    mb = f"{resident_bytes(held[name]) / 2**20:8.1f}" if held[name] is not None else f"{'-':>8}"
    print(f"{name:8} {' '.join(f'{v:6.2f}' for v in s):>20}  {args.tokens / min(s):8.2f} {mb}")
print(f"rows / whole (best of {args.rounds}): {min(seconds['rows']) / min(seconds['whole']):.3f}; "
      f"the same text: {texts['rows'] == texts['whole']}")
print(f"unpacked / rows: {min(seconds['unpacked']) / min(seconds['rows']):.3f}; the same text: "
      f"{texts['unpacked'] == texts['rows']}")
if kernel is not None:
    print(f"kernel / unpacked: {min(seconds['kernel']) / min(seconds['unpacked']):.3f}; the same text: "
          f"{texts['kernel'] == texts['unpacked']}")
if args.float:
    print(f"float / rows: {min(seconds['float']) / min(seconds['rows']):.3f}; the same text: "
          f"{texts['float'] == texts['rows']}")
