"""Where the 2-bit tied embedding's cost sits, at the start (no training), on CPU: SmolLM2 with only the token
table quantized (16-2-16 by default), its lookup and its tied head told apart, and the head's own per-token scale
(QuantConfig.head_scale, fitted as the trainer fits it) with and without a per-token logit bias.

    python benchmarks/head_probe.py --bits 16-2-16 --device cpu

Held-out text: the first --tokens tokens of wikitext2/valid.tokens.txt, windows of 512 (as start_probe.py);
calibration: --calib-samples blocks of 256 tokens of corpora.
"""
import argparse
import copy
import json
import os

import torch
from torch import nn

from quantgpt import TrainConfig, evaluate, load_float
from quantgpt.data import tokenize_files
from quantgpt.trainer import Trainer

p = argparse.ArgumentParser()
p.add_argument("--bits", default="16-2-16")
p.add_argument("--device", default="cpu")
p.add_argument("--tokens", type=int, default=8192)
p.add_argument("--calib-samples", type=int, default=32)
p.add_argument("--out", default="head_probe.json")
args = p.parse_args()
data = os.environ.get("QG_DATA", "../shared/data")
teacher, tok = load_float("smollm2-135m")
train = tokenize_files(f"{data}/corpora", tok)
held = tokenize_files(f"{data}/wikitext2/valid.tokens.txt", tok)[: args.tokens]


def ppl(m):
    return evaluate(m, held, seq_len=512, progress=False)["perplexity"]


def with_head(model, weight, bias=None):
    """``model`` with an untied float head of this weight (and bias)."""
    m = copy.deepcopy(model)
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().clone())
    m.lm_head = lin
    return m.eval()


kw = dict(model="smollm2-135m", bits=args.bits, calib_samples=args.calib_samples, batch_size=8, seq_len=256, steps=1,
          device=args.device, progress=False, compile=False)
plain = Trainer(TrainConfig(**kw, out="runs/head_probe/plain"), teacher=teacher, tokenizer=tok, train_ids=train).student
fitted = Trainer(TrainConfig(**kw, head_scale=True, out="runs/head_probe/hs"), teacher=teacher, tokenizer=tok,
                 train_ids=train).student
w = teacher.get_output_embeddings().weight.detach().float()
with torch.no_grad():
    q = plain.get_input_embeddings().quantized_weight().detach().float()
    s = fitted.get_output_embeddings().row_scale.detach().float()
    # the per-token bias beside the scale: least squares of h.w_v on (h.q_v, 1) over the calibration blocks
    g = torch.Generator().manual_seed(0)
    blocks = train[: train.numel() // 256 * 256].reshape(-1, 256)
    x = blocks[torch.randperm(blocks.shape[0], generator=g)[: args.calib_samples]]
    h = torch.cat([plain.base_model(input_ids=x[i: i + 8]).last_hidden_state.reshape(-1, w.shape[1])
                   for i in range(0, x.shape[0], 8)]).float()
    mu, S = h.mean(0), h.T @ h / h.shape[0]
    qs = q @ S
    exy, exx, ex, ey = (qs * w).sum(1), (qs * q).sum(1), q @ mu, w @ mu
    sb = (exy - ex * ey) / (exx - ex * ex)
    b = ey - sb * ex
rows = [("float", ppl(teacher)),
        ("quantized table: lookup and tied head", ppl(plain)),
        ("quantized lookup, float head", ppl(with_head(plain, w))),
        ("float lookup, quantized head", ppl(with_head(teacher, q))),
        ("quantized table, head_scale (fitted, as the trainer starts it)", ppl(fitted)),
        ("quantized table, head per-token scale + logit bias (least squares)", ppl(with_head(plain, q * sb[:, None], b)))]
for name, v in rows:
    print(f"{name:70s} {v:10.3f}", flush=True)
print(f"head_scale: mean {s.mean():.3f}, std {s.std():.3f}, range {s.min():.3f} .. {s.max():.3f}")
with open(args.out, "w") as f:
    json.dump({"bits": args.bits, "rows": dict(rows), "scale": [s.mean().item(), s.std().item(), s.min().item(),
                                                                 s.max().item()]}, f, indent=1)
