"""Compile the packed-weight kernel (kernels.py) with Triton's GPU compiler for an NVIDIA target without a GPU
(Triton's wheel ships ptxas): every code width, scale format and zero-point kind, in bf16, fp16 and fp32, at both
tile shapes (generation's 16 x 32 and a window's 64 x 64). A kernel that Triton's interpreter runs can still fail
to compile for a GPU; this finds that before a device session, for the Triton installed. One line a variant.

    python benchmarks/kernel_compile.py              # 120 variants for sm_90 (an H100), about a minute
    python benchmarks/kernel_compile.py --quick      # 5 layouts, each in one dtype, at both tile shapes
"""
import argparse
import itertools
import sys
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from quantgpt import kernels

p = argparse.ArgumentParser()
p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100, H200), 80 (A100)")
p.add_argument("--quick", action="store_true", help="five layouts, each in one dtype")
args = p.parse_args()
if kernels.INTERPRET:  # Triton was imported for its interpreter: the kernel is not a compilable JITFunction
    sys.exit("run without TRITON_INTERPRET=1: the compiler, not the interpreter, is what this checks")

# (bits, 8-bit scale codes, zero kind: 0 none, 1 stored, 2 centre codes)
LAYOUTS = [(b, c, z) for b in (2, 3, 4, 8) for c, z in ((True, 2), (True, 1), (True, 0), (False, 1), (False, 0))]
QUICK = [("bf16", 2, True, 2), ("fp16", 3, False, 1), ("fp32", 4, False, 0), ("bf16", 8, True, 1), ("fp32", 2, True, 2)]
variants = QUICK if args.quick else [(d, *lay) for d, lay in itertools.product(("bf16", "fp16", "fp32"), LAYOUTS)]
fn = kernels._packed_matmul
done = 0
print(f"triton {triton.__version__}, target sm_{args.arch}")
for (dtype, bits, codes, zero), (block_m, block_n) in itertools.product(variants, ((16, 32), (64, 64))):
    ptrs = dict(x_ptr=f"*{dtype}", q_ptr="*u8", scale_ptr="*u8" if codes else "*fp16",
                zero_ptr="*i8" if zero == 2 else "*fp16", factor_ptr="*fp16", zfactor_ptr="*fp16",
                row_scale_ptr="*fp32", bias_ptr="*fp32", y_ptr=f"*{dtype}")
    const = dict(BITS=bits, QMIN=-(2 ** (bits - 1)), SCALE_CODES=codes, ZERO=zero, HAS_ROW_SCALE=True, HAS_BIAS=True,
                 PRECISION="ieee" if dtype == "fp32" else None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=64)
    sig = {n: ptrs.get(n, "constexpr" if n in const else "i32") for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    t = time.perf_counter()
    try:
        size = len(triton.compile(src, target=GPUTarget("cuda", args.arch, 32)).asm["cubin"])
    except Exception as e:
        print(f"sm_{args.arch} {dtype} bits={bits} codes={codes} zero={zero} tile={block_m}x{block_n} FAILED: "
              f"{str(e).splitlines()[0][:200]}")
        continue
    done += 1
    print(f"sm_{args.arch} {dtype} bits={bits} codes={codes} zero={zero} tile={block_m}x{block_n} "
          f"{time.perf_counter() - t:5.2f}s {size} bytes")
total = len(variants) * 2
print(f"{done} of {total} compiled")
sys.exit(0 if done == total else 1)
