"""Perplexity right after quantize_model (no training): how good a start each quantizer setting gives.

    python benchmarks/init_probe.py "bits=8-16-8" "bits=4-4-8 granularity=channel"

Each argument is space-separated KEY=VALUE settings of a QuantConfig (values read as YAML). First 4096 tokens of WikiText-2 test, windows of 1024.
"""
import os
import torch, copy, time, sys
from quantgpt import load_float, quantize_model, QuantConfig, evaluate
from quantgpt.data import tokenize_files
from quantgpt.errors import QuantGPTError
from quantgpt.train_config import parse_assignments
torch.set_num_threads(2)
base, tok = load_float("smollm2-135m")
ids = tokenize_files(os.environ.get("QG_DATA", "../shared/data") + "/wikitext2/test.raw.txt", tok)[:4096]
emb = base.model.embed_tokens.weight
print("emb mean|w|", emb.abs().mean().item(), "max", emb.abs().max().item(), "row max/mean median", (emb.abs().amax(1)/emb.abs().mean(1)).median().item())
w = base.model.layers[3].mlp.down_proj.weight
print("down mean|w|", w.abs().mean().item(), "max", w.abs().max().item())
try:
    settings = [parse_assignments(QuantConfig, kw.split(), f"setting {kw!r}") for kw in sys.argv[1:]]
except QuantGPTError as e:
    raise SystemExit(f"init_probe: {e}")
for kw, d in zip(sys.argv[1:], settings):
    m = copy.deepcopy(base); t=time.time()
    quantize_model(m, QuantConfig(**d))
    g = [q.gamma.mean().item() for n,q in m.named_modules() if hasattr(q,'gamma')][:4]
    r = evaluate(m, ids, seq_len=1024, progress=False)
    print(kw, round(r["perplexity"],2), [round(x,2) for x in g], round(time.time()-t,1), flush=True)
print("float", round(evaluate(base, ids, seq_len=1024, progress=False)["perplexity"], 2))
