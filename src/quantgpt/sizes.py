"""Size accounting of a packed checkpoint: bits and bytes per module, the honest size on disk and in memory,
the float sizes of the same model, and the paper's accounting (weights and token embedding at their bits,
position embeddings, norms and biases at 32 bits, scales not counted)."""
from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from .checkpoint import read_manifest
from .errors import QuantGPTError

MIB = 2**20


def size_report(folder) -> dict:
    from . import packed

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("format") != packed.FORMAT:
        raise QuantGPTError(f"{folder}: not a packed checkpoint (format {manifest.get('format')!r}); convert it with "
                            f"`quantgpt export {folder} --out NEW`")
    modules = manifest["modules"]
    path = folder / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        sizes = {}
        for k in f.keys():
            sl = f.get_slice(k)
            shape = sl.get_shape()
            numel = 1
            for d in shape:
                numel *= d
            sizes[k] = (numel, _itemsize(sl.get_dtype()))
    rows, packed_bytes = [], sum(n * b for n, b in sizes.values())
    quant_params, quant_paper_bits = 0, 0
    claimed = set()
    for name, info in modules.items():
        if "shape" not in info:
            continue
        numel = info["shape"][0] * info["shape"][1]
        own = {f"{name}.{suffix}" for suffix in packed.MODULE_TENSORS} & set(sizes)
        nbytes = sum(sizes[k][0] * sizes[k][1] for k in own)
        claimed |= own
        rows.append({"module": name, "kind": info["kind"], "bits": info["bits"], "params": numel, "bytes": nbytes,
                     "quantizer": info["quantizer"], "granularity": info["granularity"]})
        quant_params += numel
        quant_paper_bits += numel * info["bits"]
    float_params = sum(n for k, (n, _) in sizes.items() if k not in claimed)
    float_bytes = sum(n * b for k, (n, b) in sizes.items() if k not in claimed)
    params = quant_params + float_params
    paper_bytes = quant_paper_bits / 8 + 4 * float_params
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    return {
        "bits": manifest.get("bits"), "modules": rows, "params": params, "quantized_params": quant_params,
        "float_params": float_params, "float_tensor_bytes": float_bytes, "packed_bytes": packed_bytes,
        "model_file_bytes": files.get("model.safetensors", 0), "folder_bytes": sum(files.values()),
        "fp32_bytes": 4 * params, "fp16_bytes": 2 * params,
        "compression_ratio_fp32": 4 * params / packed_bytes, "compression_ratio_fp16": 2 * params / packed_bytes,
        "paper_bytes": paper_bytes, "paper_compression_ratio": 4 * params / paper_bytes,
        "bits_per_param": 8 * packed_bytes / params,
    }


def resident_bytes(model) -> int:
    """The bytes a loaded model holds: every distinct parameter and buffer, saved or not (packed codes, scales,
    float tensors, and the float copies of ``unpack``), each shared storage counted once."""
    seen = {}
    for t in (*model.parameters(), *model.buffers()):
        if t is not None and not t.is_meta:
            st = t.untyped_storage()
            seen[(st.data_ptr(), t.device)] = st.nbytes()
    return sum(seen.values())


def _itemsize(dtype: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}[dtype]


def format_report(r: dict) -> str:
    lines = [f"{'module':60s} {'bits':>4s} {'params':>12s} {'bytes':>12s}"]
    for m in r["modules"]:
        lines.append(f"{m['module'][:60]:60s} {m['bits']:4d} {m['params']:12,d} {m['bytes']:12,d}")
    lines += [
        "",
        f"bits (W-E-A)            {r['bits']}",
        f"parameters              {r['params']:,} ({r['quantized_params']:,} quantized, {r['float_params']:,} float)",
        f"packed tensors          {r['packed_bytes'] / MIB:10.2f} MiB  ({r['bits_per_param']:.2f} bits/param)",
        f"model.safetensors       {r['model_file_bytes'] / MIB:10.2f} MiB  (folder {r['folder_bytes'] / MIB:.2f} MiB)",
        f"same model in fp32      {r['fp32_bytes'] / MIB:10.2f} MiB  -> {r['compression_ratio_fp32']:.1f}x",
        f"same model in fp16      {r['fp16_bytes'] / MIB:10.2f} MiB  -> {r['compression_ratio_fp16']:.1f}x",
        f"paper's accounting      {r['paper_bytes'] / MIB:10.2f} MiB  -> {r['paper_compression_ratio']:.1f}x vs fp32",
    ]
    return "\n".join(lines)
