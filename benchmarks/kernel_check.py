"""The packed-weight Triton kernel (kernels.packed_linear) on a packed model's own matrices, one of each shape (the
tied head included), against the two paths it replaces: the packed path (the matrix dequantized at every product,
then F.linear) and the unpacked one (F.linear on a float copy made once). For each compute dtype and number of
input rows (one token of generation to a 2048-token window): the largest difference from the packed path's
output relative to its largest value, and on CUDA the median time of one product (CUDA events, alternating) and
the kernel's rate over the bytes a product must move (the packed matrix, its input and output: against the GPU's
memory bandwidth, how far from bound by it the kernel is).
``--logits TEXT`` also compares the whole model's logits on TEXT, loaded with and without kernel=True, with its
activation quantizers and without them (a float difference in one layer can move a quantized activation across a
rounding step, which no tolerance on one product shows).

    python benchmarks/kernel_check.py .devcache/models/kd_2-2-8-tb-seed2-s37 --device cuda --json $OUT/kernel.json
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

import quantgpt
from quantgpt import kernels, packed
from quantgpt.device import pick_device

p = argparse.ArgumentParser()
p.add_argument("model", help="a packed model folder")
p.add_argument("--device", default="auto")
p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 256, 2048], help="input rows a product")
p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"])
p.add_argument("--repeats", type=int, default=50, help="timed products of each path (CUDA)")
p.add_argument("--json", help="also write the rows to this file")
p.add_argument("--logits", metavar="TEXT", help="also compare the whole model's logits on this text")
args = p.parse_args()
device = pick_device(args.device)
kernels.check_device(device)
model = quantgpt.load(args.model).to(device).eval()
layers, seen = [], set()
for name, m in model.named_modules():
    if isinstance(m, packed.PackedLinear) and m.packed_source() is not None:
        pw = m.packed_source()
        key = (pw.shape, pw.bits, pw.granularity, pw.group_size, m.row_scale is not None, m.bias is not None)
        if key not in seen:
            seen.add(key)
            layers.append((name, m, pw))


def median_us(fn) -> float | None:
    if device.type != "cuda":
        return None
    for _ in range(3):
        fn()
    times = []
    for _ in range(args.repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000)
    return statistics.median(times)


rows = []
g = torch.Generator(device=device).manual_seed(0)
with torch.no_grad():
    for name, m, pw in layers:
        for dtype in (getattr(torch, d) for d in args.dtypes):
            w_float = m.dequantized_weight(dtype)  # the unpacked path's copy
            for n in args.rows:
                x = torch.randn(n, pw.shape[1], generator=g, device=device).to(dtype)

                def packed_path():
                    return F.linear(x, m.dequantized_weight(dtype), m.bias)

                def kernel_path():
                    return kernels.packed_linear(x, pw, m.bias, m.row_scale, dtype)

                def float_path():
                    return F.linear(x, w_float, m.bias)

                want, got = packed_path().float(), kernel_path().float()
                err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
                t = {}
                for _ in range(2):  # alternating: each path timed twice, the better median kept
                    for k, fn in (("kernel", kernel_path), ("packed", packed_path), ("float", float_path)):
                        us = median_us(fn)
                        t[k] = us if k not in t or us is None else min(t[k], us)
                # the bytes one product must move at least: the packed matrix, the input and the output
                moved = pw.nbytes() + x.numel() * x.element_size() + n * pw.shape[0] * x.element_size()
                rows.append(dict(module=name, shape=list(pw.shape), bits=pw.bits, dtype=str(dtype).replace("torch.", ""),
                                 rows=n, rel_err=err, us_kernel=t["kernel"], us_packed=t["packed"], us_float=t["float"],
                                 kernel_gb_s=moved / t["kernel"] / 1e3 if t["kernel"] else None))

print(f"{'module':34} {'shape':>12} {'dtype':>8} {'rows':>5} {'rel. err':>9} {'kernel us':>10} {'packed us':>10} "
      f"{'float us':>10} {'kernel/float':>12} {'kernel GB/s':>11}")
for r in rows:
    cells = [f"{r[k]:{w}.{d}f}" if r[k] is not None else f"{'-':>{w}}"
             for k, w, d in (("us_kernel", 10, 1), ("us_packed", 10, 1), ("us_float", 10, 1), ("kernel_gb_s", 11, 0))]
    ratio = f"{r['us_kernel'] / r['us_float']:12.2f}" if r["us_kernel"] else f"{'-':>12}"
    print(f"{r['module'][-34:]:34} {'x'.join(map(str, r['shape'])):>12} {r['dtype']:>8} {r['rows']:5d} {r['rel_err']:9.2e} "
          f"{cells[0]} {cells[1]} {cells[2]} {ratio} {cells[3]}")
print(f"largest relative difference: {max(r['rel_err'] for r in rows):.2e} over {len(rows)} products; device {device}"
      + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else " (Triton's interpreter)"))
result = {"products": rows}
if args.logits:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(args.model)(args.logits, return_tensors="pt").input_ids.to(device)
    fast = quantgpt.load(args.model, kernel=True).to(device).eval()
    for acts in (True, False):
        if not acts:  # the same models with every activation quantizer off
            for net in (model, fast):
                for m in net.modules():
                    if isinstance(m, packed.PackedLinear):
                        m.act_quantizer = None
        with torch.no_grad():
            want, got = model(input_ids=ids).logits.float(), fast(input_ids=ids).logits.float()
        key = "logits" if acts else "logits_no_act_quant"
        result[key] = dict(tokens=ids.shape[1], rel_err=((got - want).abs().max() / want.abs().max()).item(),
                           argmax_agree=(got.argmax(-1) == want.argmax(-1)).float().mean().item())
        print(f"{key}: {ids.shape[1]} tokens, largest relative difference {result[key]['rel_err']:.2e}, "
              f"the same top token at {result[key]['argmax_agree']:.1%} of positions")
if args.json:
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
