"""The packed-weight Triton kernel (kernels.packed_linear), run on the CPU in Triton's interpreter (conftest sets
TRITON_INTERPRET=1 before Triton is imported): its dequantization is that of PackedWeight.dequantize exactly, its
product that of F.linear, and a model loaded with kernel=True gives the packed model's outputs."""
import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from quantgpt import QuantConfig, load, quantize_model, save_packed  # noqa: E402
from quantgpt import kernels, packed  # noqa: E402
from quantgpt.cli import main  # noqa: E402
from quantgpt.errors import QuantGPTError  # noqa: E402
from quantgpt.packing import pack  # noqa: E402

# every layout a packed checkpoint holds: code widths, granularities, fp16 scales with and without zero points,
# 8-bit scale codes with and without centres, ragged groups
LAYOUTS = [dict(bits="2-2-8", grid="asym", group_size=16, embedding_group_size=8, scale_bits=8),  # the 2-bit default
           dict(bits="2-2-16", grid="full", group_size=16, embedding_granularity="channel", scale_bits=8),
           dict(bits="4-4-8", granularity="channel"),
           dict(bits="4-4-8", grid="asym", group_size=16),
           dict(bits="3-3-16", quantizer="minmax", symmetric=False, group_size=8),
           dict(bits="8-8-8", granularity="tensor"),
           dict(bits="2-2-8", granularity="channel", embedding_group_size=24)]  # 32 features: a ragged last group


def packed_weights(model):
    return [m for m in model.modules() if isinstance(m, packed.PackedWeight)]


def random_packed(bits, rows, cols, granularity, group_size=None, codes=False, zero=False, seed=0):
    """A PackedWeight of random codes and scales, built directly (any width of row, not just whole bytes). ``zero``:
    False, True (a zero point per scale; under 8-bit scales, centre codes) or "one" (one zero for the matrix, as
    the full grid stores it)."""
    g = torch.Generator().manual_seed(seed)
    qmin = -(2 ** (bits - 1))
    v = torch.randint(0, 2**bits, (rows, cols), generator=g)
    n_scales = {"tensor": 1, "channel": rows, "group": rows * -(-cols // (group_size or 1))}[granularity]
    scale = group = None
    z = (torch.rand(n_scales if zero is True else 1, 1, generator=g) * 3 - 1.5).half() if zero else None
    if codes:
        group = {"scale_code": torch.randint(1, 256, (n_scales, 1), generator=g).to(torch.uint8),
                 "scale_factor": (torch.rand(rows, 1, generator=g) / 100).half()}
        if zero is True:  # the asym grid's centres
            group.update(center_code=torch.randint(-128, 128, (n_scales, 1), generator=g).to(torch.int8),
                         center_factor=(torch.rand(rows, 1, generator=g) / 1000).half())
            z = None
    else:
        scale = (torch.rand(n_scales, 1, generator=g) + 0.1).half()
    return packed.PackedWeight(pack(v, bits), scale, z, bits, (rows, cols), qmin, granularity, group_size, group)


@pytest.mark.parametrize("kw", LAYOUTS)
def test_kernel_dequantizes_every_saved_layout_exactly(tmp_path, tiny, tokenizer, kw):
    """x = I: the product is the dequantized matrix itself, transposed, and equal bit for bit (one nonzero term a
    sum), for every packed matrix of a saved model, the tables included."""
    arch = "llama" if kw.get("scale_bits") != 8 or "embedding_group_size" in kw else "gpt2"
    save_packed(quantize_model(tiny(arch), QuantConfig(**kw)), tokenizer, tmp_path / "p")
    weights = packed_weights(load(tmp_path / "p"))
    assert weights
    for pw in weights:
        eye = torch.eye(pw.shape[1])
        assert torch.equal(kernels.packed_linear(eye, pw), pw.dequantize().T), pw


SHAPES = [(11, "group", 4), (37, "channel", None), (20, "tensor", None), (70, "group", 16)]
SCALES = [(c, z) for c in (False, True) for z in (False, True, "one")]  # (8-bit scale codes, zero points)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("cols,granularity,group_size,codes,zero",
                         [s + c for s in SHAPES for c in SCALES if s[1] == "group" or not c[0]])  # codes: groups only
def test_kernel_reads_codes_across_bytes_and_ragged_groups(bits, cols, granularity, group_size, codes, zero):
    """Rows whose codes do not start on a byte (11, 37 and 70 columns; 3-bit codes straddling two bytes), a ragged
    last group, and each scale format: the kernel's matrix is dequantize()'s exactly."""
    pw = random_packed(bits, 9, cols, granularity, group_size, codes, zero, seed=bits * cols)
    assert torch.equal(kernels.packed_linear(torch.eye(cols), pw), pw.dequantize().T)


@pytest.mark.parametrize("m", [1, 5, 17, 40, 70])
def test_kernel_product_matches_f_linear(m):
    """Any number of rows (one token of generation to a batch of windows; every tile size), with a bias and a tied
    head's row scales, from an input that is a strided view (batch and positions swapped): F.linear's result to
    float32 rounding."""
    pw = random_packed(2, 100, 96, "group", 16, codes=True, zero=True, seed=m)
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, 2, 96, generator=g).transpose(0, 1)
    bias, rs = torch.randn(100, generator=g), torch.rand(100, generator=g) + 0.5
    assert m == 1 or not x.is_contiguous()  # one row: the swap moves nothing
    want = F.linear(x, pw.dequantize() * rs[:, None], bias)
    got = kernels.packed_linear(x, pw, bias, rs)
    assert got.shape == want.shape == (2, m, 100) and got.dtype == torch.float32
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_kernel_in_half_precision_rounds_the_weights_once():
    """dtype=float16: both operands in fp16 (the dequantized weight rounded once, as dequantize(float16) does),
    float32 accumulation, an fp16 result: F.linear on the same operands to the result's rounding. (bfloat16 takes
    the same path on a GPU; Triton's interpreter cannot multiply bf16 tiles: triton-lang/triton#11584.)"""
    pw = random_packed(2, 64, 128, "group", 16, codes=True, zero=True, seed=3)
    x = torch.randn(4, 128)
    got = kernels.packed_linear(x, pw, dtype=torch.float16)
    want = F.linear(x.half().float(), pw.dequantize(torch.float16).float())
    assert got.dtype == torch.float16
    assert (got.float() - want).abs().max() <= 2**-10 * want.abs().max()
    assert torch.equal(kernels.packed_linear(torch.eye(128), pw, dtype=torch.float16), pw.dequantize(torch.float16).T)


@pytest.mark.parametrize("arch,kw", [("llama", LAYOUTS[0]), ("llama", dict(LAYOUTS[0], head_scale=True)),
                                     ("gpt2", dict(bits="4-4-8")), ("bart", dict(bits="2-2-8"))])
def test_kernel_model_matches_the_packed_model(tmp_path, tiny, tokenizer, arch, kw):
    """load(kernel=True): every packed linear layer (GPT-2's Conv1D, BART's, a tied head with and without its own
    row scales) multiplies through the kernel, never dequantizing a matrix, and the logits are the packed model's."""
    save_packed(quantize_model(tiny(arch), QuantConfig(**kw)), tokenizer, tmp_path / "p")
    ref, model = load(tmp_path / "p"), load(tmp_path / "p", kernel=True)
    layers = [m for m in model.modules() if isinstance(m, packed.PackedLinear)]
    assert layers and all(m.kernel for m in layers if m.packed_source() is not None)
    assert any(m._tied for m in layers) or arch == "bart"
    x = torch.randint(3, 300, (2, 12))
    kw_in = dict(decoder_input_ids=x[:, :5]) if arch == "bart" else {}
    with torch.no_grad():
        want = ref(input_ids=x, **kw_in).logits
        calls = []
        real = packed.PackedWeight.dequantize
        packed.PackedWeight.dequantize = lambda self, *a: calls.append(1) or real(self, *a)
        try:
            got = model(input_ids=x, **kw_in).logits
        finally:
            packed.PackedWeight.dequantize = real
    assert calls == []
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_kernel_under_autocast_takes_autocast_dtype(tmp_path, tiny, tokenizer):
    """Inside autocast the kernel multiplies in autocast's dtype, as F.linear does there: the same fp16 logits
    to fp16 rounding (fp16: the interpreter's limit, as above)."""
    save_packed(quantize_model(tiny("llama"), QuantConfig(**LAYOUTS[0])), tokenizer, tmp_path / "p")
    ref, model = load(tmp_path / "p"), load(tmp_path / "p", kernel=True)
    x = torch.randint(3, 300, (1, 10))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        want, got = ref(input_ids=x).logits, model(input_ids=x).logits
    assert got.dtype == want.dtype == torch.float16
    assert (got.float() - want.float()).abs().max() <= 0.01 * want.float().abs().max()


def test_kernel_cli_generates_the_same_text(tmp_path, tiny, tokenizer, capsys):
    from conftest import cli_outputs

    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8")), tokenizer, tmp_path / "p")
    text, ppl = cli_outputs(tmp_path / "p", "--kernel", capsys=capsys)
    want_text, want_ppl = cli_outputs(tmp_path / "p", capsys=capsys)
    assert text == want_text and ppl == pytest.approx(want_ppl, rel=1e-4)


def test_kernel_errors(tmp_path, tiny, tokenizer, monkeypatch, capsys):
    """One-line errors: a CPU device outside the interpreter, unpack with kernel, a wrong input width."""
    save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8")), tokenizer, tmp_path / "p")
    with pytest.raises(QuantGPTError, match="exclude each other"):
        load(tmp_path / "p", unpack=True, kernel=True)
    pw = packed_weights(load(tmp_path / "p"))[0]
    with pytest.raises(ValueError, match="features"):
        kernels.packed_linear(torch.zeros(2, pw.shape[1] + 1), pw)
    monkeypatch.setattr(kernels, "INTERPRET", False)
    with pytest.raises(QuantGPTError, match="CUDA device"):
        kernels.packed_linear(torch.zeros(2, pw.shape[1]), pw)
    assert main(["generate", str(tmp_path / "p"), "--prompt", "hi", "--device", "cpu", "--kernel", "--quiet"]) != 0
    assert "CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path / "p"), "--data", "sample", "--kernel", "--unpack"])


def _script(name, *argv, env=None):
    """Run benchmarks/``name`` with ``argv`` (and ``env``, default this process's) in a child process: its stdout."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / name
    r = subprocess.run([sys.executable, str(script), *map(str, argv)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_benchmark_scripts_run_the_kernel(tmp_path, tiny, tokenizer):
    """kernel_check.py compares the kernel with the packed path on every shape of a model (here in the interpreter,
    untimed); packed_generate_speed.py --kernel generates the unpacked model's text through it."""
    save_packed(quantize_model(tiny("llama"), QuantConfig(**LAYOUTS[0])), tokenizer, tmp_path / "p")
    out = _script("kernel_check.py", tmp_path / "p", "--device", "cpu", "--rows", 1, 20, "--dtypes", "float32",
                  "float16", "--json", tmp_path / "k.json", "--logits", "hello world, hello")
    result = json.loads((tmp_path / "k.json").read_text())
    rows = result["products"]
    for key in ("logits", "logits_no_act_quant"):
        assert result[key]["tokens"] > 3 and result[key]["rel_err"] < 1e-4 and result[key]["argmax_agree"] == 1, key
    shapes = {tuple(r["shape"]) for r in rows}
    assert {(32, 32), (16, 32), (64, 32), (32, 64), (384, 32)} <= shapes  # q/o, k/v, gate/up, down, the tied head
    assert len(rows) == len(shapes) * 4 and all(r["us_kernel"] is None for r in rows)
    assert max(r["rel_err"] for r in rows if r["dtype"] == "float32") < 1e-5
    assert max(r["rel_err"] for r in rows) < 2e-3 and "largest relative difference" in out
    out = _script("packed_generate_speed.py", tmp_path / "p", "--tokens", 4, "--rounds", 1, "--device", "cpu",
                  "--prompt", "hello world", "--kernel")
    assert "kernel / unpacked" in out and out.count("the same text: True") == 3



def test_kernel_compiles_for_an_h100():
    """What the interpreter cannot show: benchmarks/kernel_compile.py takes the kernel through Triton's GPU
    compiler to sm_90 binaries (an H100), bf16 included, at both tile shapes, for the layouts of --quick: the 2-bit
    default (8-bit scale codes and centres), a 3-bit straddle with fp16 zero points, 4 bits without zero points, 8
    bits with one stored zero. In a child process without TRITON_INTERPRET: the interpreter patches Triton's
    language objects in the process that runs it."""
    import os

    out = _script("kernel_compile.py", "--quick", env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    lines = [x for x in out.splitlines() if x.startswith("sm_90")]
    assert len(lines) == 10 and all(int(x.split()[-2]) > 1000 for x in lines), out
    assert {x.split()[1] for x in lines} == {"bf16", "fp16", "fp32"}
    assert "10 of 10 compiled" in out
