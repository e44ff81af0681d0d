"""Packed checkpoints: bit packing, exact reload, size accounting, integrity."""
import json

import pytest
import torch

from quantgpt import QuantConfig, load, quantize_model, save_fakequant, save_packed, size_report
from quantgpt.checkpoint import read_manifest
from quantgpt.cli import main
from quantgpt.errors import QuantGPTError
from quantgpt.packing import pack, packed_nbytes, unpack


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (13, 11), (64, 96), (5, 1, 3)])
def test_pack_unpack_round_trip(bits, shape):
    g = torch.Generator().manual_seed(bits)
    v = torch.randint(0, 2**bits, shape, generator=g)
    p = pack(v, bits)
    n = v.numel()
    assert p.dtype == torch.uint8 and p.numel() == packed_nbytes(n, bits)
    assert p.numel() == (n if bits == 8 else -(-n // 8) * bits)  # 3-bit is 3 bits per value, not 4
    assert torch.equal(unpack(p, bits, n).reshape(shape), v.to(torch.int32))


def test_pack_rejects_unknown_bits():
    with pytest.raises(ValueError):
        pack(torch.zeros(8, dtype=torch.int64), 5)


CASES = [("gpt2", dict(bits="2-2-8")), ("gpt2", dict(bits="2-2-16")), ("llama", dict(bits="4-4-8", granularity="channel")),
         ("llama", dict(bits="3-16-8", quantizer="minmax", symmetric=False, group_size=8)),
         ("llama", dict(bits="2-2-16", quantizer="lsq")), ("bart", dict(bits="2-2-8")),
         ("llama", dict(bits="2-2-16", grid="full", group_size=16)),
         ("gpt2", dict(bits="2-2-8", granularity="channel", embedding_group_size=24)),  # ragged embedding groups
         ("llama", dict(bits="4-4-8", grid="asym", group_size=16)),  # a zero point per group
         ("gpt2", dict(bits="2-2-16", grid="asym", granularity="channel", embedding_group_size=24)),
         # 8-bit scales: codes and per-row factors stored, float scales made as the matrix is dequantized
         ("llama", dict(bits="2-2-8", grid="asym", group_size=16, embedding_group_size=8, scale_bits=8)),
         ("gpt2", dict(bits="2-2-16", grid="full", group_size=16, embedding_granularity="channel", scale_bits=8))]


@pytest.mark.parametrize("arch,kw", CASES)
def test_loaded_packed_model_matches_fake_quantized(tmp_path, tiny, tokenizer, arch, kw):
    m = quantize_model(tiny(arch), QuantConfig(**kw))
    save_packed(m, tokenizer, tmp_path / "p")
    p = load(tmp_path / "p")
    x = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        a = m(input_ids=x).logits
        b = p(input_ids=x).logits
    # Scales are stored in fp16, so a dequantized weight differs from the fake-quantized one by one fp16
    # rounding of its scale (relative 2^-11). Tolerance, relative to the largest logit: 1e-3 without
    # activation quantization; 1e-2 with 8-bit activations, where such tiny changes can move an activation
    # across a rounding boundary (one 8-bit step).
    tol = 1e-2 if QuantConfig(**kw).bits.quantize_activations else 1e-3
    assert (a - b).abs().max() <= tol * a.abs().max(), (a - b).abs().max() / a.abs().max()
    if arch != "bart" and QuantConfig(**kw).bits.quantize_embedding:
        head, emb = p.get_output_embeddings(), p.get_input_embeddings()
        assert head._tied and head._tied[0] is emb
    # memory after loading: packed codes, not float weights
    r = size_report(tmp_path / "p")
    held = sum(t.numel() * t.element_size() for t in list(p.parameters()) + list(p.buffers()))
    assert held <= r["packed_bytes"] * 1.05 + 4096


def test_generate_from_packed(tmp_path, tiny, tokenizer):
    m = quantize_model(tiny("llama"), QuantConfig(bits="2-2-8"))
    save_packed(m, tokenizer, tmp_path / "p")
    p = load(tmp_path / "p")
    out = p.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)


def _paper_accounting(model, tmp_path, tokenizer):
    quantize_model(model, QuantConfig(bits="2-2-8", init_gamma=1.0))
    save_packed(model, tokenizer, tmp_path)
    return size_report(tmp_path)


def test_paper_accounting_gpt2_small(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    r = _paper_accounting(GPT2LMHeadModel(GPT2Config()), tmp_path / "g", tokenizer)
    assert round(r["fp32_bytes"] / 2**20, 1) == 474.7
    assert round(r["paper_bytes"] / 2**20, 1) == 32.9
    assert round(r["paper_compression_ratio"], 1) == 14.4
    assert r["compression_ratio_fp32"] > 13  # the real file, scales included


def test_paper_accounting_bart_base(tmp_path, tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                     decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
    r = _paper_accounting(BartForConditionalGeneration(cfg), tmp_path / "b", tokenizer)
    assert round(r["fp32_bytes"] / 2**20, 1) == 532.0
    assert round(r["paper_bytes"] / 2**20, 1) == 39.6
    assert round(r["paper_compression_ratio"], 1) == 13.4


def test_info_json_and_export(capsys, tmp_path, tiny, tokenizer):
    m = quantize_model(tiny("llama"), QuantConfig(bits="4-16-16", quantizer="minmax", granularity="channel"))
    save_fakequant(m, tokenizer, tmp_path / "fq")
    assert main(["export", str(tmp_path / "fq"), "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"packed_bytes", "fp32_bytes", "compression_ratio_fp32", "modules"} <= set(r)
    assert r["compression_ratio_fp32"] > 1 and all(row["bits"] == 4 for row in r["modules"])
    assert main(["info", str(tmp_path / "p")]) == 0
    assert "compression" not in capsys.readouterr().err
    # plain transformers folder, fp16, same outputs (no activation quantization at 4-16-16)
    assert main(["export", str(tmp_path / "p"), "--dequantize", "--out", str(tmp_path / "hf")]) == 0
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float()
    x = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        a, b = m(x).logits, hf(x).logits
    assert not (tmp_path / "hf" / "quantgpt.json").exists()
    assert torch.allclose(a, b, atol=5e-3 * a.abs().max().item())


def _packed(tmp_path, tiny, tokenizer):
    m = quantize_model(tiny("llama"), QuantConfig(bits="2-2-8"))
    return save_packed(m, tokenizer, tmp_path / "p")


def test_tampered_truncated_missing_files(tmp_path, tiny, tokenizer):
    d = _packed(tmp_path, tiny, tokenizer)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(QuantGPTError, match=r"model\.safetensors: checksum mismatch"):
        load(d)
    f.write_bytes(bytes(data[:-10]))
    with pytest.raises(QuantGPTError, match=r"model\.safetensors: checksum mismatch"):
        load(d)
    f.unlink()
    with pytest.raises(QuantGPTError, match=r"model\.safetensors: missing"):
        load(d)


def test_unknown_version_and_bits(tmp_path, tiny, tokenizer):
    d = _packed(tmp_path, tiny, tokenizer)
    man = json.loads((d / "quantgpt.json").read_text())
    (d / "quantgpt.json").write_text(json.dumps({**man, "version": 99}))
    with pytest.raises(QuantGPTError, match="version 99"):
        load(d)
    name = next(k for k, v in man["modules"].items() if "bits" in v)
    man["modules"][name]["bits"] = 5
    (d / "quantgpt.json").write_text(json.dumps(man))
    with pytest.raises(QuantGPTError, match="5-bit"):
        load(d)
    (d / "quantgpt.json").write_text("{not json")
    with pytest.raises(QuantGPTError, match="unreadable manifest"):
        load(d)


def test_float_tied_embedding_is_stored_once(tmp_path, tiny, tokenizer):
    m = quantize_model(tiny("llama"), QuantConfig(bits="4-16-16"))
    assert m.lm_head.weight is m.model.embed_tokens.weight
    save_packed(m, tokenizer, tmp_path / "p")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "p" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert ("lm_head.weight" in keys) != ("model.embed_tokens.weight" in keys)
    r = size_report(tmp_path / "p")
    assert r["params"] == sum(p.numel() for p in m.parameters() if p.requires_grad and p.dim() > 0) - sum(
        q.numel() for n, q in m.named_parameters() if "quantizer" in n)
    p = load(tmp_path / "p")
    assert p.lm_head.weight is p.model.embed_tokens.weight
    x = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        assert torch.allclose(m(x).logits, p(x).logits, atol=1e-3 * m(x).logits.abs().max().item())


@pytest.mark.parametrize("arch,bits", [("llama", "2-2-8"), ("llama", "4-16-16"), ("bart", "2-16-8")])
def test_loading_never_builds_the_float_weights(tmp_path, tiny, tokenizer, monkeypatch, arch, bits):
    """The float model behind a packed one is built on the meta device (its weights are never allocated),
    and every tensor it keeps, a float tied table included, comes from the file."""
    import quantgpt.convert

    m = quantize_model(tiny(arch), QuantConfig(bits=bits, group_size=16))
    save_packed(m, tokenizer, tmp_path / "p")
    seen = []
    real = quantgpt.convert.quantize_model

    def spy(model, cfg=None, **kw):
        seen.append({p.device.type for p in model.parameters()})
        return real(model, cfg, **kw)

    monkeypatch.setattr(quantgpt.convert, "quantize_model", spy)
    p = load(tmp_path / "p")
    assert seen == [{"meta"}]
    assert not any(t.is_meta for t in [*p.parameters(), *p.buffers()])
    x = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        a, b = m(input_ids=x).logits, p(input_ids=x).logits
    tol = 1e-2 if QuantConfig(bits=bits).bits.quantize_activations else 1e-3
    assert (a - b).abs().max() <= tol * a.abs().max()
    if arch == "llama" and bits == "4-16-16":  # a float embedding and its tied head: one Parameter again
        assert p.get_output_embeddings().weight is p.get_input_embeddings().weight


def test_a_config_the_tensors_do_not_fill_is_one_error(tmp_path, tiny, tokenizer):
    """A packed folder whose config asks for more than its tensors hold (here a third layer, the manifest
    rewritten to match) fails in one line instead of leaving weights on the meta device."""
    import json

    from quantgpt.checkpoint import read_manifest, write_manifest
    from quantgpt.errors import QuantGPTError

    m = quantize_model(tiny("llama"), QuantConfig(bits="4-16-16", group_size=16))
    save_packed(m, tokenizer, tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    write_manifest(tmp_path / "p", read_manifest(tmp_path / "p", verify=False))
    with pytest.raises(QuantGPTError, match=r"does not match the model \(\d+ missing.*layers\.2\."):
        load(tmp_path / "p")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_head_scale_round_trips_through_packed_fakequant_and_plain_exports(tmp_path, tiny, tokenizer, arch):
    """QuantConfig(head_scale=True): the tied head is the shared quantized table times its own per-row scale. The
    scales survive the packed and fake-quantized checkpoints; --dequantize unties the head (the lookup keeps the
    table, the head gets the scaled rows) and gives the same logits."""
    from transformers import AutoModelForCausalLM

    from quantgpt.convert import split_quant_parameters

    m = quantize_model(tiny(arch), QuantConfig(bits="2-2-16", head_scale=True, group_size=16))
    head, emb = m.get_output_embeddings(), m.get_input_embeddings()
    with torch.no_grad():
        head.row_scale.copy_(torch.linspace(0.5, 2.0, head.row_scale.numel()))
    torch.testing.assert_close(head.quantized_weight(), emb.quantized_weight() * head.row_scale[:, None])
    assert any(p is head.row_scale for p in split_quant_parameters(m)[1])  # trained at the quantizers' lr
    x = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        a = m(input_ids=x).logits
    save_packed(m, tokenizer, tmp_path / "p")
    save_fakequant(m, tokenizer, tmp_path / "fq")
    for folder in ("p", "fq"):
        back = load(tmp_path / folder)
        assert back.quant_config.head_scale
        with torch.no_grad():
            b = back(input_ids=x).logits
        assert (a - b).abs().max() <= 1e-3 * a.abs().max(), (folder, (a - b).abs().max())
    assert main(["export", str(tmp_path / "p"), "--dequantize", "--out", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float()
    assert hf.get_output_embeddings().weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        c = hf(input_ids=x).logits
    assert (a - c).abs().max() <= 5e-3 * a.abs().max(), (a - c).abs().max()


def test_head_scale_needs_a_tied_head(tiny):
    m = quantize_model(tiny("llama", tie_word_embeddings=False), QuantConfig(bits="2-2-16", head_scale=True))
    assert getattr(m.get_output_embeddings(), "row_scale", None) is None  # an untied head has its own scales
    from quantgpt.modules import QuantLinear

    with pytest.raises(ValueError, match="tied head"):
        QuantLinear(torch.nn.Parameter(torch.zeros(4, 4)), None, None, None, row_scale=True)


def test_eight_bit_scales_halve_the_scales_storage(tmp_path, tokenizer):
    """The same asym layout with 8-bit scales stores each group's scale and centre in one byte each (plus two fp16
    factors a row) instead of two: on rows as wide as a real model's, groups of 16 then cost about what groups of
    32 do with fp16 scales."""
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    wide = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    sizes = {}
    for sb, g in ((16, 32), (8, 16), (8, 32)):
        m = quantize_model(LlamaForCausalLM(wide).eval(), QuantConfig(bits="2-2-8", grid="asym", group_size=g,
                                                                      embedding_group_size=g, scale_bits=sb))
        save_packed(m, tokenizer, tmp_path / f"{sb}-{g}")
        r = size_report(tmp_path / f"{sb}-{g}")
        sizes[sb, g] = sum(x["bytes"] for x in r["modules"])
        with safe_open(str(tmp_path / f"{sb}-{g}" / "model.safetensors"), "pt") as f:
            keys = set(f.keys())
        name = next(x["module"] for x in r["modules"] if x["kind"] == "linear")
        assert (f"{name}.scale_code" in keys and f"{name}.scale" not in keys and f"{name}.zero" not in keys) == (sb == 8)
    codes = 2 * sum(x["params"] for x in r["modules"]) / 8  # 2-bit codes, the same in every layout
    rows = sum(x["shape"][0] for x in read_manifest(tmp_path / "8-32")["modules"].values() if "shape" in x)
    # half the scales' bytes, and two fp16 factors (the scales', the centres') per output row
    assert sizes[8, 32] - codes == (sizes[16, 32] - codes) / 2 + 4 * rows
    assert sizes[8, 16] == pytest.approx(sizes[16, 32], rel=0.03), sizes


def test_eight_bit_scales_round_trip_through_every_export(tmp_path, tiny, tokenizer):
    """scale_bits 8: the fake-quantized checkpoint, its conversion to packed (`export`), the packed one and the
    plain --dequantize folder all give the logits of the model that was saved."""
    from transformers import AutoModelForCausalLM

    m = quantize_model(tiny("llama"), QuantConfig(bits="2-2-16", grid="asym", group_size=16, embedding_group_size=8,
                                                  scale_bits=8))
    quantizers = [q for q in m.modules() if getattr(q, "scale_groups", 0)]
    assert len(quantizers) == 15  # the seven linears of each of the two blocks and the table
    with torch.no_grad():  # away from the start, as after training
        for q in quantizers:
            q.gamma.mul_(torch.linspace(0.8, 1.2, q.gamma.numel()).reshape(q.gamma.shape))
            q.center.add_(1e-3)
    x = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        a = m(input_ids=x).logits
    save_packed(m, tokenizer, tmp_path / "p")
    save_fakequant(m, tokenizer, tmp_path / "fq")
    assert main(["export", str(tmp_path / "fq"), "--out", str(tmp_path / "p2")]) == 0
    assert main(["export", str(tmp_path / "p"), "--dequantize", "--out", str(tmp_path / "hf")]) == 0
    for folder in ("p", "fq", "p2"):
        back = load(tmp_path / folder)
        assert back.quant_config.scale_bits == 8
        with torch.no_grad():
            b = back(input_ids=x).logits
        assert (a - b).abs().max() <= 1e-3 * a.abs().max(), (folder, (a - b).abs().max())
    with torch.no_grad():
        c = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float()(input_ids=x).logits
    assert (a - c).abs().max() <= 5e-3 * a.abs().max(), (a - c).abs().max()


@pytest.mark.parametrize("granularity,group_size", [("tensor", None), ("channel", None), ("group", 8), ("group", 24)])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("cols,asym", [(48, True), (48, False), (11, True)])
def test_dequantize_rows_is_the_rows_of_dequantize(granularity, group_size, bits, cols, asym):
    """An embedding lookup unpacks only the rows it needs, and gets exactly the rows of the whole matrix: every
    layout of scales (one, a row's, groups, ragged groups), every packed width, with zero points or without, and
    rows that do not start on a byte (11 columns), which unpack the whole matrix."""
    from quantgpt.packed import PackedWeight
    from quantgpt.quantizers.base import scale_rows

    g = torch.Generator().manual_seed(bits * cols)
    rows = 13
    n = scale_rows((rows, cols), granularity, group_size, ragged=True)
    codes = torch.randint(0, 2**bits, (rows, cols), generator=g)
    scale = (torch.rand(n, 1, generator=g) + 0.5).half()
    zero = torch.randn(n, 1, generator=g).half() if asym else None
    w = PackedWeight(pack(codes, bits), scale, zero, bits, (rows, cols), -(2 ** (bits - 1)), granularity, group_size)
    full = w.dequantize()
    first = torch.arange(rows) * (n // rows) if n > 1 else torch.zeros(rows, dtype=torch.long)  # column 0's scale
    z = 0 if zero is None else zero.float()[first, 0]
    assert torch.equal(full[:, 0], (codes[:, 0] - 2 ** (bits - 1) - z) * scale.float()[first, 0])  # (code - zero) x scale
    ids = torch.tensor([[3, 0, 12, 3], [7, 7, 1, 5]])
    assert torch.equal(w.dequantize_rows(ids), full[ids])
    assert torch.equal(w.dequantize_rows(torch.tensor([4])), full[[4]])
    assert w.dequantize_rows(ids, torch.bfloat16).dtype == torch.bfloat16


def test_packed_embedding_unpacks_only_its_rows(tmp_path, tiny, tokenizer, monkeypatch):
    """A loaded packed model's lookup goes through dequantize_rows and never unpacks the whole table; its logits
    are those of the fake-quantized model (test_loaded_packed_model_matches_fake_quantized checks every layout)."""
    import quantgpt.packed as packed

    m = quantize_model(tiny("llama"), QuantConfig(bits="2-2-16", grid="asym", group_size=16, embedding_group_size=8,
                                                  scale_bits=8))
    save_packed(m, tokenizer, tmp_path / "p")
    p = load(tmp_path / "p")
    emb = p.get_input_embeddings()
    whole = []
    real = packed.PackedWeight.dequantize
    monkeypatch.setattr(packed.PackedWeight, "dequantize",
                        lambda self, *a, **k: whole.append(self.shape) or real(self, *a, **k))
    x = torch.randint(3, 300, (2, 5))
    with torch.no_grad():
        out = emb(x)
    assert whole == [] and out.shape == (2, 5, 32)
    assert torch.equal(out, real(emb.packed)[x])


def test_packed_generate_speed_script_compares_the_two_lookups(tmp_path, tiny, tokenizer):
    """benchmarks/packed_generate_speed.py runs both lookups on a packed model and finds the same text."""
    import subprocess
    import sys
    from pathlib import Path

    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8")), tokenizer, tmp_path / "p")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "packed_generate_speed.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "p"), "--tokens", "4", "--rounds", "1",
                        "--device", "cpu", "--prompt", "hello world", "--float"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the same text: True" in r.stdout and "rows / whole" in r.stdout and "float / rows" in r.stdout
    assert "unpacked / rows" in r.stdout and r.stdout.count("the same text: True") >= 2


@pytest.mark.parametrize("arch,kw", [("llama", dict(bits="2-2-8", grid="asym", group_size=16, embedding_group_size=8,
                                                     scale_bits=8)), ("gpt2", dict(bits="4-4-8")), ("bart", dict(bits="2-2-8"))])
def test_unpacked_load_gives_the_same_outputs_without_unpacking_again(tmp_path, tiny, tokenizer, monkeypatch, arch, kw):
    """load(..., unpack=True) dequantizes every packed matrix once: the logits are those of the packed model bit for
    bit, no forward unpacks a code again, the float copies move with the model and are not saved, and the CLI's
    --unpack generates the same text."""
    import quantgpt.packed as packed

    save_packed(quantize_model(tiny(arch), QuantConfig(**kw)), tokenizer, tmp_path / "p")
    p, u = load(tmp_path / "p"), load(tmp_path / "p", unpack=True)
    weights = [m for m in u.modules() if isinstance(m, packed.PackedWeight)]
    assert weights and all(m.unpacked is not None and m.unpacked.shape == m.shape for m in weights)
    assert all(m.unpacked is None for m in p.modules() if isinstance(m, packed.PackedWeight))
    assert not any(k.endswith("unpacked") for k in u.state_dict())
    assert weights[0].nbytes() < weights[0].unpacked.numel()  # the packed bytes only
    x = torch.randint(3, 300, (2, 16))
    with torch.no_grad():
        want = p(input_ids=x).logits
    calls = []
    monkeypatch.setattr(packed, "unpack", lambda *a: calls.append(1))
    with torch.no_grad():
        got = u(input_ids=x).logits
    assert calls == [] and torch.equal(got, want)
    u.to(torch.device("meta"))
    assert all(m.unpacked.is_meta for m in weights)


def test_generate_and_eval_unpack_flag(tmp_path, tiny, tokenizer, capsys):
    from conftest import cli_outputs

    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8")), tokenizer, tmp_path / "p")
    assert cli_outputs(tmp_path / "p", "--unpack", capsys=capsys) == cli_outputs(tmp_path / "p", capsys=capsys)


def test_a_dtype_cast_keeps_the_stored_scales(tmp_path, tiny, tokenizer):
    """load(dtype=bfloat16) and model.to(dtype) cast the compute tensors, not the scales: every packed matrix
    dequantizes to the float32 one rounded once to bfloat16, not to a matrix made from bfloat16-rounded scales;
    unpack=True keeps its copy in the asked dtype."""
    import quantgpt.packed as packed

    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8", grid="asym", group_size=16,
                                                          embedding_group_size=8, scale_bits=8)), tokenizer, tmp_path / "p")
    save_packed(quantize_model(tiny("gpt2"), QuantConfig(bits="4-4-8")), tokenizer, tmp_path / "g")  # fp16 scales
    for folder in ("p", "g"):
        full = [m for m in load(tmp_path / folder).modules() if isinstance(m, packed.PackedWeight)]
        for half in (load(tmp_path / folder, dtype=torch.bfloat16), load(tmp_path / folder).to(torch.bfloat16)):
            cast = [m for m in half.modules() if isinstance(m, packed.PackedWeight)]
            assert len(cast) == len(full) > 0
            for a, b in zip(full, cast):
                for (n, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
                    assert x.dtype == y.dtype and torch.equal(x, y), n
                assert torch.equal(b.dequantize(torch.bfloat16), a.dequantize().to(torch.bfloat16))
        u = load(tmp_path / folder, dtype=torch.bfloat16, unpack=True)
        assert all(m.unpacked.dtype == torch.bfloat16 for m in u.modules() if isinstance(m, packed.PackedWeight))
        assert u.get_input_embeddings().packed.dequantize(torch.bfloat16).data_ptr() == \
            u.get_input_embeddings().packed.unpacked.data_ptr()  # no copy a forward


def test_resident_bytes_counts_what_a_loaded_model_holds(tmp_path, tiny, tokenizer):
    """sizes.resident_bytes: a packed model holds its file's tensors (the tied head's table once); unpack adds a
    float32 copy of every packed matrix (4 bytes a weight); a float model holds its parameters, tied ones once."""
    from safetensors.torch import load_file

    import quantgpt.packed as packed
    from quantgpt.sizes import resident_bytes

    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8")), tokenizer, tmp_path / "p")
    on_disk = sum(t.numel() * t.element_size() for t in load_file(str(tmp_path / "p" / "model.safetensors")).values())
    p, u = load(tmp_path / "p"), load(tmp_path / "p", unpack=True)
    saved = p.state_dict()
    unsaved = sum(b.numel() * b.element_size() for n, b in p.named_buffers() if n not in saved)  # rotary inv_freq
    assert 0 < unsaved < 100 and resident_bytes(p) == on_disk + unsaved
    weights = sum(m.shape[0] * m.shape[1] for m in p.modules() if isinstance(m, packed.PackedWeight))
    assert resident_bytes(u) == on_disk + unsaved + 4 * weights
    f = tiny("llama")
    assert f.lm_head.weight is f.model.embed_tokens.weight
    assert resident_bytes(f) == sum(t.numel() * 4 for t in f.parameters()) + sum(
        b.numel() * b.element_size() for b in f.buffers())
