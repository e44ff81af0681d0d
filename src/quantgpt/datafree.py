"""Data-free training text: sequences sampled from the teacher itself (as LLM-QAT does), cached on disk."""
from __future__ import annotations

import hashlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .data import cache_dir, tokenizer_fingerprint
from .device import autocast_for


@torch.no_grad()
def generated_tokens(teacher, tokenizer, cfg, n: int) -> torch.Tensor:
    """``n`` sequences of ``cfg.seq_len`` tokens sampled from ``teacher`` (temperature ``cfg.gen_temperature``,
    top-p ``cfg.gen_top_p``), each started from a random vocabulary token, as one 1-D tensor."""
    from .device import pick_device, pick_dtype

    key = json.dumps([cfg.model, sum(p.numel() for p in teacher.parameters()), tokenizer_fingerprint(tokenizer), n,
                      cfg.seq_len, cfg.gen_temperature, cfg.gen_top_p, cfg.seed])
    path = cache_dir() / "generated" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
    if path.is_file():
        return load_file(str(path))["ids"]
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    was = next(teacher.parameters()).device
    teacher.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    vocab = teacher.config.vocab_size
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(vocab) if i not in special])
    torch.manual_seed(cfg.seed)
    out = []
    bs = 64 if device.type == "cuda" else 4
    for i in tqdm(range(0, n, bs), desc="generating training text", disable=not cfg.progress):
        k = min(bs, n - i)
        start = allowed[torch.randint(0, allowed.numel(), (k, 1), generator=g)].to(device)
        with autocast_for(device, dtype):
            seq = teacher.generate(start, attention_mask=torch.ones_like(start), do_sample=True,
                                   temperature=cfg.gen_temperature, top_p=cfg.gen_top_p, max_new_tokens=cfg.seq_len - 1,
                                   min_new_tokens=cfg.seq_len - 1, pad_token_id=tokenizer.eos_token_id)
        out.append(seq[:, : cfg.seq_len].cpu())
    teacher.to(was)
    ids = torch.cat(out).reshape(-1).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"ids": ids}, str(tmp))
    os.replace(tmp, path)
    return ids
