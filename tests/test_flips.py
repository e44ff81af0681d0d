"""Code flips (flips.py, TrainConfig.track_flips): the codes are the forward's, the shares count what changed."""
import pytest
import torch

from quantgpt import QuantConfig, quantize_model
from quantgpt.flips import changed, coded_weights, codes_of, latent_weight
from quantgpt.modules import QuantEmbedding
from quantgpt.plots import read_log
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer


LAYOUTS = {"mds": {}, "mds asym g16 scales8": dict(grid="asym", group_size=16, scale_bits=8),
           "pact": dict(quantizer="pact"), "lsq": dict(quantizer="lsq", group_size=16), "laq": dict(quantizer="laq")}


@pytest.mark.parametrize("arch, layout", [("gpt2", "mds")] + [("llama", k) for k in LAYOUTS])
def test_codes_are_the_forward_rounding(tiny, arch, layout):
    """Dequantized, each module's codes give back the weight its forward uses (GPT-2's Conv1D as (out, in)), for
    every quantizer family; the codes alone are encode's; the tied head is not counted a second time."""
    m = tiny(arch)
    quantize_model(m, QuantConfig(bits="2-2-8", **LAYOUTS[layout]))
    pairs = coded_weights(m)
    assert sum(isinstance(mod, QuantEmbedding) for mod, _ in pairs) == 1  # the table once; a tied head shares it
    assert len({id(q) for _, q in pairs}) == len(pairs)
    for (mod, q), codes in zip(pairs, codes_of(pairs)):
        enc = q.encode(latent_weight(mod))
        assert torch.equal(codes, enc.codes) and codes.dtype == torch.int8
        assert torch.allclose(enc.dequantize(), mod.quantized_weight().detach().float(), atol=1e-6)
        assert set(codes.unique().tolist()) <= set(range(enc.qmin, enc.qmax + 1))


def test_changed_is_the_share_of_codes_that_differ():
    a = [torch.zeros(2, 3, dtype=torch.int8), torch.zeros(1, 4, dtype=torch.int8)]
    b = [a[0].clone(), a[1].clone()]
    assert changed(a, b) == 0.0
    b[0][1, 2] = 1
    b[1][0, :3] = -1
    assert changed(a, b) == pytest.approx(4 / 10)
    with pytest.raises(ValueError):
        changed(a, b[:1])


def _run(tmp_path, tiny, tokenizer, ids, **kw):
    cfg = TrainConfig(model="tiny", bits="2-2-8", steps=6, seq_len=32, batch_size=4, out=str(tmp_path / "run"),
                      save_every=100, eval_every=100, progress=False, device="cpu", negatives=64, track_flips=True, **kw)
    Trainer(cfg, teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).run()
    return [r for r in read_log(tmp_path / "run" / "train_log.jsonl") if "loss" in r]


def test_flips_are_logged_at_each_log_step(tmp_path, tiny, tokenizer, ids):
    """log_every 1: the step's flips and the flips since the last log are one and the same count. log_every 4:
    the snapshot one step before each log step gives the same one-step shares at steps 4 and 6 (the last step
    logs too), and the share since the last log counts over the four steps."""
    each = _run(tmp_path / "a", tiny, tokenizer, ids, log_every=1, lr=0.05)
    assert [r["step"] for r in each] == [1, 2, 3, 4, 5, 6]
    assert all(r["flips_step"] == r["flips_log"] for r in each[1:]) and "flips_step" not in each[0]
    assert each[0]["flips_log"] > 0 and all(0 < r["flips_log"] <= 1 for r in each)
    four = _run(tmp_path / "b", tiny, tokenizer, ids, log_every=4, lr=0.05)
    assert [(r["step"], r["flips_step"]) for r in four] == [(4, each[3]["flips_step"]), (6, each[5]["flips_step"])]
    assert four[0]["flips_log"] not in (r["flips_log"] for r in each)
    assert (tmp_path / "a" / "run" / "flips.png").is_file()  # plot_training's figure of them


def test_no_flips_at_a_zero_learning_rate(tmp_path, tiny, tokenizer, ids, recwarn):
    still = _run(tmp_path, tiny, tokenizer, ids, log_every=2, lr=0.0, quant_lr=0.0)
    assert [(r["step"], r["flips_step"], r["flips_log"]) for r in still] == [(2, 0.0, 0.0), (4, 0.0, 0.0), (6, 0.0, 0.0)]
    # the figure says nothing changed, with no empty legend (matplotlib warned "No artists with labels")
    assert (tmp_path / "run" / "flips.png").is_file()
    assert not [w for w in recwarn if "No artists" in str(w.message)]


def test_a_float_student_has_no_codes(tmp_path, tiny, tokenizer, ids):
    cfg = TrainConfig(model="tiny", bits="16-16-16", steps=2, seq_len=32, batch_size=4, out=str(tmp_path / "f"),
                      log_every=1, save_every=100, eval_every=100, progress=False, device="cpu", track_flips=True)
    Trainer(cfg, teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).run()
    assert not any("flips_log" in r for r in read_log(tmp_path / "f" / "train_log.jsonl"))
    assert not (tmp_path / "f" / "flips.png").exists()
