"""Text in, token blocks out: ``.txt`` / ``.jsonl`` files or folders of them, tokenized once, packed into
fixed-length blocks and cached on disk keyed by the tokenizer and the files' content."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import QuantGPTError

BUILTIN = {"sample": "sotu_2011_2018.txt", "sample-eval": "sotu_2019_2021.txt"}  # public-domain text shipped with the package


def cache_dir() -> Path:
    return Path(os.environ.get("QUANTGPT_CACHE", Path.home() / ".cache" / "quantgpt"))


def data_files(spec: str | os.PathLike) -> list[Path]:
    if str(spec) in BUILTIN:
        return [Path(str(resources.files("quantgpt") / "assets" / BUILTIN[str(spec)]))]
    p = Path(spec).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl") and f.is_file())
        if not files:
            raise QuantGPTError(f"{spec}: folder holds no .txt or .jsonl files")
        return files
    if not p.is_file():
        raise QuantGPTError(f"{spec}: no such data file or folder")
    if p.suffix not in (".txt", ".jsonl", ".raw", ".tokens") and not p.name.endswith((".raw.txt", ".tokens.txt")):
        raise QuantGPTError(f"{spec}: unsupported data file (use .txt, or .jsonl with a 'text' field)")
    return [p]


def read_text(path: Path) -> str:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise QuantGPTError(f"{path}: cannot read it as UTF-8 text ({type(e).__name__})") from None
    if path.suffix != ".jsonl":
        return raw
    texts = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise QuantGPTError(f"{path}:{i}: each line must be a JSON object with a 'text' field") from None
    return "\n\n".join(texts)


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    ident = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(ident.encode()).hexdigest()


def tokenize_files(specs, tokenizer, use_cache: bool = True) -> torch.Tensor:
    """All text of ``specs`` (paths, folders or built-in names) as one 1-D tensor of token ids.

    Each file is tokenized whole (as the standard perplexity protocol does) and files are joined with the
    end-of-text token when the tokenizer has one.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    files = [f for s in specs for f in data_files(s)]
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for f in files:
        h.update(hashlib.sha256(f.read_bytes()).digest())
    path = cache_dir() / "tokens" / f"{h.hexdigest()[:32]}.safetensors"
    if use_cache and path.is_file():
        try:
            return load_file(path)["ids"]
        except Exception:  # a broken cache entry is rebuilt
            pass
    parts, seen = [], {}  # a file given twice (weighting it double in a mix) is tokenized once
    for f in files:
        key = f.resolve()
        if key not in seen:
            text = read_text(f)
            seen[key] = (torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"],
                                      dtype=torch.long) if text.strip() else None)
        if seen[key] is None:
            continue
        if parts and tokenizer.eos_token_id is not None:
            parts.append(torch.tensor([tokenizer.eos_token_id]))
        parts.append(seen[key])
    if not parts:
        raise QuantGPTError(f"no text in {', '.join(map(str, specs))}: the data is empty")
    ids = torch.cat(parts)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"ids": ids}, str(tmp))
        os.replace(tmp, path)
    return ids


def blocks(ids: torch.Tensor, seq_len: int, limit_tokens: int | None = None, what: str = "data") -> torch.Tensor:
    """Non-overlapping ``(n, seq_len)`` blocks of ``ids``; the remainder is dropped."""
    if limit_tokens:
        ids = ids[:limit_tokens]
    n = ids.numel() // seq_len
    if n == 0:
        raise QuantGPTError(f"the {what} has {ids.numel()} tokens, fewer than one block of {seq_len}: "
                            f"give more text or a smaller --seq-len")
    return ids[: n * seq_len].reshape(n, seq_len)
