"""The ``quantgpt`` command: a thin layer over the Python API. Bad input is one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from .device import pick_device, pick_dtype
from .errors import QuantGPTError

def _common(p, seed=True):
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="compute dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")
    if seed:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _packed_flags(p):
    how = p.add_mutually_exclusive_group()
    how.add_argument("--unpack", action="store_true",
                     help="a packed model's weights dequantized once at load, not at every forward: faster, with a "
                          "float model's memory (the same outputs)")
    how.add_argument("--kernel", action="store_true",
                     help="a packed model's linear layers multiply from the packed codes with the Triton kernel "
                          "(CUDA): packed memory, no float copies")


def _load_packed_for(args, device):
    """``load_any`` with the packed-model flags, the kernel's device checked first."""
    from .models import load_any

    if args.kernel:
        from .kernels import check_device

        check_device(device)
    return load_any(args.model, unpack=args.unpack, kernel=args.kernel)


def _emit(args, result: dict, text: str) -> None:
    print(json.dumps(result) if args.json else text)


def cmd_quantize(args) -> int:
    from .checkpoint import save_fakequant
    from .config import Bits
    from .packed import save_packed
    from .data import blocks, tokenize_files
    from .models import load_float
    from .ptq import gptq_quantize, rtn_quantize
    from .ptq.rtn import rtn_config

    bits = Bits.parse(args.bits)
    if args.method not in ("rtn", "gptq"):
        raise QuantGPTError(f"unknown method {args.method!r}: choose rtn or gptq (training methods: quantgpt compress)")
    cfg = rtn_config(bits, args.group_size, symmetric=args.symmetric, skip=tuple(args.skip or ()),
                     ragged_groups=args.ragged_groups, act_granularity=args.act_granularity or "group",
                     act_group_size=args.act_group_size)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    t0 = time.time()
    model, tok = load_float(args.model)
    calib = None
    if args.method == "gptq":  # read the data before the slow part, so bad data fails fast
        calib = blocks(tokenize_files(args.calib_data or ["sample"], tok), args.calib_seq_len, what="calibration data")
        g = torch.Generator().manual_seed(args.seed)
        calib = calib[torch.randperm(calib.shape[0], generator=g)[: args.calib_samples]]
    model.to(device)
    rtn_quantize(model, cfg)
    if calib is not None:
        gptq_quantize(model, calib, act_order=args.act_order, percdamp=args.damp,
                      autocast_dtype=dtype if dtype != torch.float32 else None, progress=not args.quiet)
    model.to("cpu")
    save = save_packed if args.format == "packed" else save_fakequant
    save(model, tok, args.out, extra={"method": args.method, "source": args.model})
    result = {"out": str(args.out), "method": args.method, "bits": str(bits), "group_size": args.group_size,
              "seconds": round(time.time() - t0, 2)}
    _emit(args, result, f"wrote {args.method} {bits} model to {args.out} ({result['seconds']} s)")
    return 0


def cmd_eval(args) -> int:
    from .data import tokenize_files
    from .evaluate import evaluate, frequency_groups

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    model, tok = _load_packed_for(args, device)
    ids = tokenize_files(args.data, tok)
    groups = names = None
    if args.by_frequency:  # the targets grouped by how often this (training) text has them
        groups, names = frequency_groups(tokenize_files(args.by_frequency, tok), model.config.vocab_size)
    model.to(device)
    r = evaluate(model, ids, seq_len=args.seq_len, stride=args.stride, batch_size=args.batch_size,
                 limit_tokens=args.limit_tokens, dtype=dtype, progress=not args.quiet, token_groups=groups)
    r.update(model=args.model, data=[str(d) for d in args.data], device=str(device), dtype=str(dtype).replace("torch.", ""))
    text = (f"perplexity {r['perplexity']:.3f}  accuracy {r['accuracy']:.4f}  "
            f"({r['tokens']} tokens, {r['windows']} windows of {r['seq_len']})")
    if names:
        r["freq_groups"] = names[:len(r["group_nll"])]
        text += "\nNLL by the target's frequency in the reference text (its share of tokens held by more frequent ids):"
        text += "".join(f"\n  {n:>8s}: " + (f"{v:.3f} over {k} targets" if k else "no targets")
                        for n, v, k in zip(r["freq_groups"], r["group_nll"], r["group_tokens"]))
    _emit(args, r, text)
    return 0


def cmd_generate(args) -> int:
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    model, tok = _load_packed_for(args, device)
    model.to(device)
    enc = tok(args.prompt, return_tensors="pt").to(device)
    sample = args.temperature > 0
    kw = dict(do_sample=sample, temperature=args.temperature, top_p=args.top_p) if sample else dict(do_sample=False)
    from .device import autocast_for

    with torch.no_grad(), autocast_for(device, dtype):
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id or tok.eos_token_id, **kw)
    text = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    _emit(args, {"prompt": args.prompt, "completion": text}, args.prompt + text)
    return 0


def cmd_compress(args) -> int:
    from .train_config import TrainConfig
    from .trainer import compress

    flags = {k: v for k, v in vars(args).items() if k in COMPRESS_KEYS}
    flags["progress"] = None if not args.quiet else False
    cfg = TrainConfig.from_sources(args.config, **flags)
    r = compress(cfg)
    from .distributed import is_main

    if not is_main():  # torchrun's other ranks: rank 0 reports
        return 130 if r.get("interrupted") else 0
    if r.get("interrupted"):
        where = " of the teacher's adaptation" if r.get("stage") == "adapt" else ""
        print(f"quantgpt: stopped by {r['interrupted']} at step {r['step']}{where}; state saved in {r['checkpoint']}; "
              f"continue with the same command and --resume", file=sys.stderr)
        return 130
    best = r.get("best") or {}
    what = "the fine-tuned float" if cfg.float_student else f"{cfg.method} {cfg.bits}"
    adapt = r.get("adapt")
    text = ""
    if adapt:
        held = (adapt.get("best") or {}).get("eval_ppl")
        text = (f"{'kept the' if adapt.get('kept') else 'adapted the'} teacher in {adapt['out']} ({adapt['steps']} steps"
                + (f", {adapt['run_seconds'] / 60:.1f} min" if "run_seconds" in adapt else "")
                + (f", held-out perplexity {held:.3f}" if held else "") + "); ")
    text += (f"wrote {what} model to {r['out']}: {r['steps']} steps, {r['tokens']} tokens, "
            f"{r['tok_per_s']:.0f} tokens/s, {r['run_seconds'] / 60:.1f} min in all")
    if best:
        text += f", best held-out perplexity {best['eval_ppl']:.3f} at step {best['step']}"
    _emit(args, r, text)
    return 0


COMPRESS_KEYS = ("model", "bits", "method", "quantizer", "contrastive", "granularity", "group_size", "grid",
                 "embedding_granularity", "embedding_group_size", "init", "block_steps", "train_data", "eval_data",
                 "steps", "epochs", "time_budget", "seq_len", "batch_size", "grad_accum", "lr", "quant_lr", "weight_decay",
                 "warmup", "schedule", "max_grad_norm", "temperature", "cont_weight", "cont_schedule", "tau", "negatives",
                 "momentum",
                 "layer", "proj_dim", "negative_source", "lm_weight", "mse_weight", "mean_grad", "dynamic_scale",
                 "init_gamma", "head_scale", "scale_bits", "adapt_steps", "act_granularity", "act_group_size", "eval_every", "eval_tokens", "save_every",
                 "log_every", "track_flips", "freeze_threshold", "freeze_start", "seed", "teacher_cache", "compile", "device", "dtype", "out", "resume",
                 "gen_temperature", "gen_top_p", "calib_samples")


def _compress_parser(sub):
    c = sub.add_parser("compress", help="quantization-aware training with distillation (the paper's method)",
                       description="Flags override the --config YAML file, whose keys mirror the flags.")
    c.add_argument("model", nargs="?", default=None, help="teacher: HF id, folder, .gguf or smollm2-135m")
    c.add_argument("--config", help="YAML file of options (keys as the flags, - or _)")
    c.add_argument("--bits", help="W-E-A (default 2-2-8); 16-16-16 fine-tunes the float model instead (KD + LM "
                   "loss, lr 1e-4) and writes a transformers folder: a teacher adapted to the training text for a "
                   "later compress run, as the paper's teachers were fine-tuned on the task")
    c.add_argument("--method", help="quantgpt | kd | pact | lsq | laq")
    c.add_argument("--quantizer", help="override the method's weight quantizer: mds | pact | lsq | laq | minmax")
    c.add_argument("--contrastive", action=argparse.BooleanOptionalAction, default=None,
                   help="token-level contrastive distillation on/off (default: the method's)")
    c.add_argument("--granularity", help="weight scales: tensor (paper) | channel | group (default)")
    c.add_argument("--group-size", type=int, help="input columns per weight scale (default 16 at 2-bit weights, 32 above)")
    c.add_argument("--grid", help="mds/pact rounding grid: sym (paper: 2^b - 1 levels, ternary at 2 bits) | full "
                   "(all 2^b codes) | asym (mds: all 2^b codes about a learned centre per group); default asym for "
                   "quantgpt and kd; for pact full at 2-bit weights, sym above")
    c.add_argument("--embedding-granularity", help="scales of the token embedding / tied head: group (default) | channel | tensor")
    c.add_argument("--embedding-group-size", type=int, help="hidden features per embedding scale (default 8 at 2 bits, 16 at 3-4, 32 "
                   "above)")
    c.add_argument("--adapt-steps", type=int, help="steps of teacher adaptation first: the float model fine-tuned "
                   "on the training text (into OUT/teacher), which the student starts from and distils from "
                   "(default 300 when --steps is at least 300, else 0; 0: the model as given is the teacher)")
    c.add_argument("--init", help="start from a post-training solution (rtn | gptq), or blockwise: each block "
                   "first trained alone to reproduce the teacher's block output")
    c.add_argument("--block-steps", type=int, help="init blockwise: steps per block (default 200)")
    c.add_argument("--train-data", nargs="+", help="files/folders, 'sample', or generated:N (data-free)")
    c.add_argument("--eval-data", nargs="+", help="held-out text for periodic evaluation")
    c.add_argument("--steps", type=int)
    c.add_argument("--epochs", type=float)
    c.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="finish training within this wall time (both stages, with setup and evaluations; not the "
                   "model's loading and tokenizing before them, nor the export): the quantized stage runs as many of "
                   "its --steps as fit, its schedule fitted to them")
    c.add_argument("--seq-len", type=int)
    c.add_argument("--batch-size", type=int)
    c.add_argument("--grad-accum", type=int)
    c.add_argument("--lr", type=float, help="learning rate of the weights (default 1e-3 at 2-bit weights, 3e-4 above)")
    c.add_argument("--quant-lr", type=float, help="learning rate of the quantizer parameters (gamma, alpha, step)")
    c.add_argument("--weight-decay", type=float)
    c.add_argument("--warmup", type=float, help="fraction of steps")
    c.add_argument("--schedule", help="cosine | linear | constant")
    c.add_argument("--max-grad-norm", type=float)
    c.add_argument("--temperature", type=float, help="logit distillation temperature")
    c.add_argument("--cont-weight", type=float, help="lambda, weight of the contrastive loss (default 0.03 at 2-bit weights; above, 0, or 0.01 with --contrastive)")
    c.add_argument("--cont-schedule", help="constant (default) | cosine: lambda falls from --cont-weight to 0 over the run")
    c.add_argument("--tau", type=float, help="contrastive temperature")
    c.add_argument("--negatives", type=int, help="K, negatives per anchor")
    c.add_argument("--momentum", type=float, help="memory-bank momentum")
    c.add_argument("--layer", type=int, help="representation layer: -1 final hidden state, i >= 0 block i")
    c.add_argument("--proj-dim", type=int, help="linear projection heads for the contrastive loss")
    c.add_argument("--negative-source", help="bank | batch | student")
    c.add_argument("--lm-weight", type=float, help="weight of the ground-truth LM loss (default 1 at 4-bit weights and above, 0 below)")
    c.add_argument("--mse-weight", type=float, help="weight of the hidden-state MSE (default 0)")
    c.add_argument("--mean-grad", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--dynamic-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="mds: the clip follows mean|w| (default); --no-dynamic-scale freezes it at the start's "
                        "(the paper's fixed-alpha ablation, on any grid)")
    c.add_argument("--init-gamma", type=float, help="fixed starting clip factor (default: searched)")
    c.add_argument("--head-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="a tied LM head gets a learned scale per token of its own on the shared quantized table, started "
                        "at the least-squares fit to the teacher's logits (4 bytes per vocabulary entry)")
    c.add_argument("--scale-bits", type=int, choices=(16, 8),
                   help="mds group scales and asym centres: 16 fp16 | 8, an 8-bit code each with one fp16 factor "
                        "per row, so --group-size 16 costs what 32 does at 16 (default 8 at 2-bit weights, 16 above)")
    c.add_argument("--act-granularity", help="activation scales: group (default, per-token groups) | token (paper) | tensor")
    c.add_argument("--act-group-size", type=int, help="features per activation scale (default 32)")
    c.add_argument("--eval-every", type=int)
    c.add_argument("--eval-tokens", type=int)
    c.add_argument("--save-every", type=int)
    c.add_argument("--log-every", type=int)
    c.add_argument("--track-flips", action=argparse.BooleanOptionalAction, default=None,
                   help="log the share of weight codes changed by the last step and since the last log (oscillation)")
    c.add_argument("--freeze-threshold", type=float,
                   help="freeze weights whose codes flip straight back in more than this share of steps, the final "
                        "value of a threshold falling from 0.1; 0: off (default: 0.03 for quantgpt and kd at 2-bit "
                        "weights, else off)")
    c.add_argument("--freeze-start", type=float, help="fraction of the steps before any weight is frozen (default 0.25)")
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--teacher-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="compute the teacher's last hidden states of the training text once and keep them on the device, "
                        "instead of running the teacher in every step (same losses; blocks x seq-len x hidden values). "
                        "Default: on with CUDA when it fits in a quarter of the free memory")
    c.add_argument("--resume", action="store_true", default=None)
    c.add_argument("--gen-temperature", type=float)
    c.add_argument("--gen-top-p", type=float)
    c.add_argument("--calib-samples", type=int)
    c.add_argument("--out")
    c.add_argument("--device", default=None)
    c.add_argument("--dtype", default=None)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compress)


def cmd_export(args) -> int:
    from .export import export

    out = export(args.src, args.out, dequantize=args.dequantize)
    _emit(args, {"out": str(out), "dequantized": args.dequantize}, f"wrote {out}")
    return 0


def cmd_info(args) -> int:
    from .sizes import format_report, size_report

    r = size_report(args.dir)
    _emit(args, r, format_report(r))
    return 0


def cmd_report(args) -> int:
    from .report import make_report

    r = make_report(args.results, args.out)
    _emit(args, r, f"wrote {args.out}/report.md and report.html ({r['runs']} runs, {len(r['figures'])} figures)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import FREQUENCY_GROUPS

    p = argparse.ArgumentParser(prog="quantgpt", description="Compress generative language models to 2-8 bits.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="post-training quantization (rtn, gptq)")
    q.add_argument("model", help="HF id, model folder, .gguf file, or smollm2-135m")
    q.add_argument("--method", default="rtn", help="rtn | gptq")
    q.add_argument("--bits", required=True, help="W-E-A, e.g. 4-16-16 (4-bit weights only) or 2-2-8")
    q.add_argument("--group-size", type=int, default=None, help="input columns per scale (default: one per row)")
    q.add_argument("--ragged-groups", action="store_true",
                   help="allow a group size that does not divide a layer's width: the last group of a row is shorter")
    q.add_argument("--symmetric", action="store_true", help="symmetric grid (default: asymmetric min-max)")
    q.add_argument("--act-granularity", help="activation scales: group (default) | token | tensor")
    q.add_argument("--act-group-size", type=int, help="features per activation scale (default 32)")
    q.add_argument("--calib-data", nargs="+", default=None, help="calibration text for gptq (default: built-in sample)")
    q.add_argument("--calib-samples", type=int, default=128)
    q.add_argument("--calib-seq-len", type=int, default=2048)
    q.add_argument("--act-order", action="store_true", help="gptq: quantize columns by decreasing Hessian diagonal")
    q.add_argument("--damp", type=float, default=0.01, help="gptq: damping, fraction of the mean Hessian diagonal")
    q.add_argument("--skip", nargs="*", help="module-name patterns to leave in floating point (fnmatch)")
    q.add_argument("--out", required=True)
    q.add_argument("--format", default="packed", choices=["packed", "fakequant"],
                   help="packed low-bit codes (default) or float weights plus quantizer parameters")
    _common(q)
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("eval", help="perplexity and next-token accuracy")
    e.add_argument("model")
    e.add_argument("--data", nargs="+", required=True, help=".txt/.jsonl files or folders, or 'sample'")
    e.add_argument("--seq-len", type=int, default=2048)
    e.add_argument("--stride", type=int, default=None, help="sliding windows moving by STRIDE tokens")
    e.add_argument("--limit-tokens", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--by-frequency", nargs="+", metavar="TEXT",
                   help="also the NLL of the targets grouped by how often TEXT (e.g. the training text) has them: "
                        + FREQUENCY_GROUPS.replace("%", "%%"))
    _packed_flags(e)
    _common(e, seed=False)
    e.set_defaults(func=cmd_eval)

    _compress_parser(sub)

    x = sub.add_parser("export", help="convert a quantgpt folder: to packed, or --dequantize to plain transformers")
    x.add_argument("src")
    x.add_argument("--out", required=True)
    x.add_argument("--dequantize", action="store_true", help="write a plain transformers folder in fp16")
    x.add_argument("--json", action="store_true")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="Markdown and HTML report of a study's results (JSON lines)")
    r.add_argument("results", nargs="+", help="one or more JSON-lines files of study results, read as one")
    r.add_argument("--out", required=True)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)

    i = sub.add_parser("info", help="bits and bytes per module, sizes and compression ratios of a packed folder")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    g = sub.add_parser("generate", help="continue a prompt")
    g.add_argument("model")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=0.95)
    _packed_flags(g)
    _common(g)
    g.set_defaults(func=cmd_generate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except QuantGPTError as e:
        print(f"quantgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("quantgpt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
