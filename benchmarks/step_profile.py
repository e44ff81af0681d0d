"""Where a training step's time goes, on the GPU, with no download and no staging: compress's own train_step on a
randomly initialised model of SmolLM2-135M's shapes (random Zipf-like tokens; the teacher cache, compilation and
the 2-bit freezer on, as in a run), its parts timed with CUDA events placed around the trainer's own calls:

  forward    the student's forward and the losses (Trainer.losses: the teacher is cached, so no teacher forward)
  backward   from the losses to the gradient clipping (autograd runs on the same stream, in order)
  clip       the gradients' norm and clipping
  sync       the step's one host sync (the NaN guard) until the optimizer's first kernel: the GPU waits on the host
  optimizer  fused AdamW
  freezer    the oscillation freezer's update (2 bits: one CUDA graph replay)
  gap        from the end of one step's last kernel to the next step's first: the host launching

and two more, of the forward: ``prepare``, the GPU's span from the forward's start to the end of the contrastive
term's teacher side (TokenContrastive.prepare, whose ``unique`` waits for the GPU; absent for kd), and on the
host's clock ``host_forward`` (the host's ms inside the forward) and ``host_prepare`` (its ms inside prepare,
the wait for the GPU included). After prepare's sync the GPU's queue is empty, so where the host's time after it
(host_forward - host_prepare) comes near the GPU's (forward - prepare), the forward runs at the host's pace, not
the GPU's: a slower host CPU makes a slower step with the GPU's clock unchanged (sections 38-41's flat clocks).

Variants, side by side in one process: quantgpt and kd at 2-2-8 (the defaults), and kd with a float student
(16-16-16: no fake quantization, no freezer), the floor a quantized step sits on. A variant's ``+eager_embed``
leaves the embedding's quantizer eager, as before compile_blocks compiled it; ``+unshared`` quantizes the tied table
twice a step, for the lookup and again for the head, as before ``modules.shared_tables``; ``+synced`` copies the
step's blocks and their numbers to the GPU with blocking copies, which synchronize the stream before the forward,
as indexing the teacher cache with a Python list did before ``Trainer._to_device``; ``+evals`` runs the trainer's
step-0 evaluation (the representation statistics at batch 1, the held-out text at batch 4) before the steps, as a
real run does: the blocks then see three batch sizes before the training step's, and torch.compile gives the
training graph a symbolic batch size (the other variants' graphs are static: BENCHMARKS.md section 40); ``+static``
runs each training step with torch.compile's automatic dynamic shapes off, so that with ``+evals`` the training
graph is compiled for its own batch again (the fix, should the symbol cost). ``--inductor KEY=VALUE``
sets torch._inductor.config for every variant (``combo_kernels=True``: horizontal fusion of small kernels).

``--kernels N`` then runs two more steps of each variant under torch.profiler and writes its N longest kernels
(their GPU time summed over the two steps; operators on the CPU) to ``kernels_<variant>.txt`` beside ``--out``
(``@`` and ``+`` written ``_``: the device brings back only such names):
which of the compiled blocks' fused kernels hold the fake quantization's time.

    PYTHONPATH=src python benchmarks/step_profile.py [--steps 10] [--kernels 40] [--out rows.jsonl]
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import gc
import json
import os
import subprocess
import time

import torch

from contrastive_speed import zipf_ids
from host import host_info
from smollm2_shaped import VOCAB, smollm2_shaped

PARTS = ("forward", "backward", "clip", "sync", "optimizer", "freezer", "gap")


class Marks:
    """Named points on the GPU's timeline (CUDA events), or on the host's clock on the CPU (which checks the script)."""

    def __init__(self, cuda: bool):
        self.cuda, self.points = cuda, []
        self.host = {"host_forward": 0.0}  # seconds on the host's clock, summed over the steps (host_prepare too)

    def mark(self, name: str) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.points.append((name, ev))
        else:
            self.points.append((name, time.perf_counter()))

    def spans(self) -> list[tuple[str, float]]:
        """(name of the span's start, ms until the next point), in order."""
        if self.cuda:
            torch.cuda.synchronize()
            ms = lambda a, b: a.elapsed_time(b)  # noqa: E731
        else:
            ms = lambda a, b: 1000 * (b - a)  # noqa: E731
        return [(n, ms(a, b)) for (n, a), (_, b) in zip(self.points, self.points[1:])]


def instrument(tr, marks: Marks) -> None:
    """Wrap the calls train_step makes so that each part's start is marked: losses (forward; its end starts the
    backward), clip_grad_norm_ (clip), the optimizer's step (its start ends the sync), the freezer's step."""
    losses, opt_step = tr.losses, tr.optimizer.step

    def timed_losses(*a, **k):
        marks.mark("forward")  # the span before, from the last step's end: the gap
        t0 = time.perf_counter()
        out = losses(*a, **k)
        marks.host["host_forward"] += time.perf_counter() - t0
        marks.mark("backward")
        return out

    if tr.contrastive is not None:
        prepare = tr.contrastive.prepare
        marks.host["host_prepare"] = 0.0

        def timed_prepare(*a, **k):
            t0 = time.perf_counter()
            out = prepare(*a, **k)
            marks.host["host_prepare"] += time.perf_counter() - t0
            marks.mark("student")  # the rest of the forward: the student's forward and the losses
            return out
        tr.contrastive.prepare = timed_prepare

    def timed_opt_step(*a, **k):
        marks.mark("optimizer")
        out = opt_step(*a, **k)
        marks.mark("freezer" if tr.freezer is not None else "gap")
        return out

    tr.losses, tr.optimizer.step = timed_losses, timed_opt_step
    if tr.freezer is not None:
        fr_step = tr.freezer.step

        def timed_freezer(*a, **k):
            out = fr_step(*a, **k)
            marks.mark("gap")
            return out
        tr.freezer.step = timed_freezer


def static_shapes(step):
    """``step`` run with torch.compile's automatic dynamic shapes off (``+static``): a graph compiled inside it is for
    its call's own shapes, whatever batch sizes the same code saw before."""
    def static_step():
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
            return step()
    return static_step


def clip_marker(marks: Marks):
    clip = torch.nn.utils.clip_grad_norm_

    def timed_clip(*a, **k):
        marks.mark("clip")
        out = clip(*a, **k)
        marks.mark("sync")
        return out
    return clip, timed_clip


def profile(tr, steps: int, cuda: bool, gc_off: bool = False) -> dict:
    """The parts' mean ms over ``steps`` steps; ``gc_off``: Python's garbage collector collected first and kept
    off while they run (do its pauses on the host starve the GPU?)."""
    marks = Marks(cuda)
    instrument(tr, marks)
    plain, timed_clip = clip_marker(marks)
    torch.nn.utils.clip_grad_norm_ = timed_clip
    if gc_off:
        gc.collect()
        gc.disable()
    try:
        marks.mark("gap")
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    finally:
        torch.nn.utils.clip_grad_norm_ = plain
        gc.enable()
    sums = dict.fromkeys(PARTS, 0.0)
    prepare = 0.0
    for name, ms in marks.spans():
        if name == "student":  # the forward's second span (after prepare); its first, "forward", is the prepare
            sums["forward"] += ms
        elif name in sums:
            sums[name] += ms
        if name == "forward":
            prepare += ms
    row = {k: round(v / steps, 2) for k, v in sums.items()}
    if tr.contrastive is not None:
        row["prepare"] = round(prepare / steps, 2)
    row.update({k: round(1000 * v / steps, 2) for k, v in marks.host.items()})
    row["step_ms"] = round(1000 * wall / steps, 1)
    row["parts_ms"] = round(sum(row[k] for k in PARTS), 1)
    return row


def kernel_table(tr, steps: int, top: int, cuda: bool) -> str:
    """The ``top`` kernels (CUDA; operators on the CPU) by their total time over ``steps`` profiled steps, in ms a
    step, as torch.profiler's table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with torch_profile(activities=acts) as prof:
        for _ in range(steps):
            tr.train_step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return f"{steps} steps profiled; times are totals over them\n" + prof.key_averages().table(
        sort_by=key, row_limit=top, max_name_column_width=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant, after --warmup")
    p.add_argument("--warmup", type=int, default=3, help="steps before the timing (the first compiles)")
    p.add_argument("--layers", type=int, default=30, help="decoder layers (30: SmolLM2-135M's)")
    p.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary (49152: SmolLM2's; smaller for a quick check)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--blocks", type=int, default=256, help="blocks of random training text")
    p.add_argument("--variants", nargs="+", default=["quantgpt@2-2-8", "kd@2-2-8", "kd@16-16-16"],
                   help="METHOD@BITS[+eager_embed][+unshared][+synced] each (+eager_embed: the embedding's quantizer left "
                        "eager; +unshared: the tied table quantized for the lookup and again for the head; +synced: the "
                        "step's data copied to the GPU with blocking copies, a stream sync before the forward; +evals: the step-0 "
                        "evaluation first, as run() does, so that the training graph compiles after its batch sizes; +static: the "
                        "training step compiled with automatic dynamic shapes off)")
    p.add_argument("--gc-off", action="store_true", help="collect, then keep Python's garbage collector off while timing")
    p.add_argument("--kernels", type=int, default=0, metavar="N",
                   help="after the timing, profile 2 steps and write the N longest kernels to kernels_<variant>.txt")
    p.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                   help="torch._inductor.config settings for every variant (e.g. combo_kernels=True)")
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the script")
    p.add_argument("--out")
    args = p.parse_args()
    from quantgpt.device import free_memory
    from quantgpt.train_config import TrainConfig
    from quantgpt.trainer import Trainer

    import torch._inductor.config as inductor_config

    for kv in args.inductor:
        key, value = kv.split("=", 1)
        setattr(inductor_config, key, ast.literal_eval(value))
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    commit = os.environ.get("QG_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                           text=True).stdout.strip()
    torch.manual_seed(0)
    teacher = smollm2_shaped(args.layers, args.vocab).to(dev)
    ids = zipf_ids(args.blocks * args.seq_len, args.vocab, torch.Generator().manual_seed(1))
    rows = []
    from quantgpt import lm
    from quantgpt import trainer as trainer_mod

    plain_compile, plain_shared = trainer_mod.compile_blocks, lm.shared_tables
    plain_to_device = Trainer._to_device
    for variant in args.variants:
        method, bits = variant.split("@")
        bits, *flags = bits.split("+")
        # +eager_embed: the embedding's quantizer not compiled (it runs outside the blocks, on the whole table)
        trainer_mod.compile_blocks = (functools.partial(plain_compile, embeddings=False) if "eager_embed" in flags
                                      else plain_compile)
        # +unshared: the tied table quantized twice a step (for the lookup, then for the head), as before shared_tables
        lm.shared_tables = (lambda model, tables=None: contextlib.nullcontext()) if "unshared" in flags else plain_shared
        # +synced: blocking host-to-device copies of the step's data (a stream sync each), as before _to_device
        Trainer._to_device = (lambda self, t: t.to(self.device)) if "synced" in flags else plain_to_device
        try:  # a variant that fails (a new flag on its first GPU) leaves the others' timings
            tc = TrainConfig(model="random", bits=bits, method=method, steps=10_000, seq_len=args.seq_len,
                             batch_size=args.batch_size, out=f"/tmp/sprofile_{time.time_ns()}", progress=False,
                             device=dev.type)
            evals = "evals" in flags
            tr = Trainer(tc, teacher=teacher, train_ids=ids, eval_ids=ids[: 4 * args.seq_len] if evals else None)
            t_evals = time.perf_counter()
            if evals:  # +evals: run()'s step-0 evaluation first, its batches of 1 and 4 compiled before the training step's
                tr.homogeneity()  # of 32, whose graph then compiles with a symbolic batch size, as in a real run
                tr.evaluate()
            if "static" in flags:  # +static: the training step compiled for its own shapes, whatever batch sizes came before
                tr.train_step = static_shapes(tr.train_step)
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                tr.train_step()
            row = {"variant": variant, "inductor": args.inductor, "warmup_s": round(time.perf_counter() - t0, 1), **profile(tr, args.steps, cuda, args.gc_off),
                   "gc_off": args.gc_off}
            if evals:
                row["evals_s"] = round(t0 - t_evals, 2)
            row["tok_per_s"] = round(args.batch_size * args.seq_len / (row["step_ms"] / 1000))
        except Exception as e:
            row = {"variant": variant, "error": f"{type(e).__name__}: {e}"[:1000]}
        row.update(device=name, commit=commit, date=time.strftime("%Y-%m-%d"), **host_info())
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        if args.kernels and "error" not in row:
            table = kernel_table(tr, 2, args.kernels, cuda)
            path = os.path.join(os.path.dirname(os.path.abspath(args.out)) if args.out else ".",
                                f"kernels_{variant.replace('@', '_').replace('+', '_')}.txt")
            with open(path, "a") as f:
                f.write(f"{variant} {name} commit {commit}\n{table}\n")
            print(f"kernels: {path}", flush=True)
        tr = None
        free_memory()  # the wrapped calls hold the trainer in a cycle: free it before the next variant's
    cols = (*PARTS, "parts_ms", "step_ms", "prepare", "host_forward", "host_prepare")
    print(f"{'variant':16s} " + " ".join(f"{k:>12s}" for k in cols))
    for r in rows:
        print(f"{r['variant']:16s} " + " ".join(f"{r[k]:12.1f}" if k in r else f"{'-':>12s}" for k in cols))


if __name__ == "__main__":
    main()
