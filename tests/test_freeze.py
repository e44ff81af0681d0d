"""Freezing oscillating weights (freeze.py, TrainConfig.freeze_threshold)."""
import copy
import math
import shutil

import pytest
import torch
from torch import nn

from quantgpt.errors import QuantGPTError
from quantgpt.flips import latent_weight
from quantgpt.freeze import CHECK_EVERY, MOMENTUM, START_THRESHOLD, OscillationFreezer, threshold_at
from quantgpt.modules import QuantLinear
from quantgpt.plots import read_log
from quantgpt.quantizers.mds import MDSQuantizer
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer


def _layer():
    """One ternary layer with a static clip (alpha fixed), so its rounding thresholds are at +-alpha / 2."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 8) * 0.1)
    q = MDSQuantizer(2, (4, 8), dynamic=False, init_gamma=1.0)
    q.initialize(w.detach())
    layer = QuantLinear(w, None, q, None)
    model = nn.Sequential(layer)
    alpha = q.alpha(w.detach()).item()  # alpha carries gamma's graph: .item() reads it without the warning
    return model, layer, alpha


def test_a_weight_flipping_back_and_forth_is_frozen_at_its_usual_level():
    model, layer, alpha = _layer()
    w, eps = layer.weight.data, 1e-4
    w[0, 0] = alpha / 2 - eps  # code 0, just under the threshold
    w[1, 1] = alpha / 2 - eps  # crosses once, stays: an ordinary move
    before = w.clone()
    fz = OscillationFreezer(model)
    for step in range(1, CHECK_EVERY):
        w[0, 0] = alpha / 2 + (eps if step % 2 else -eps)  # codes 1, 0, 1, 0, ...: every change after the first goes back
        w[1, 1] = alpha / 2 + eps
        fz.step(step, 0.015)
    st = fz.state[0]
    backs = CHECK_EVERY - 2  # the changes at steps 2..9
    assert st["freq"][0, 0].item() == pytest.approx(1 - (1 - MOMENTUM) ** backs, rel=1e-5)
    assert st["freq"][1, 1].item() == 0 and not st["frozen"].any()  # frozen only at a check step
    w[0, 0] = alpha / 2 + eps
    fz.step(CHECK_EVERY, None)  # no threshold yet (freeze_start): the averages move, nothing is frozen
    assert not st["frozen"].any()
    fz.step(2 * CHECK_EVERY, 0.015)
    assert st["frozen"][0, 0] and st["frozen"].sum() == 1 and fz.frozen_share() == 1 / 32
    # its code average is about 0.05 (mostly 0), so it is frozen at code 0, whose level is 0 on the ternary grid
    assert w[0, 0].item() == 0.0 and st["code"][0, 0] == 0
    w[0, 0] = alpha  # an optimizer step would put it at code 1; the freezer puts it back
    w[2, 3] += 0.5 * alpha
    fz.step(2 * CHECK_EVERY + 1, 0.015)
    assert w[0, 0].item() == 0.0 and w[2, 3].item() == pytest.approx(before[2, 3].item() + 0.5 * alpha)
    assert w[1, 1].item() == pytest.approx(alpha / 2 + eps)  # the one-way move was left alone


def test_the_threshold_waits_then_falls_along_a_cosine_to_the_final_one():
    got = [threshold_at(s, 100, 0.03) for s in range(101)]
    assert got[:25] == [None] * 25 and got[25] == pytest.approx(START_THRESHOLD) and got[100] == pytest.approx(0.03)
    assert got[25:] == sorted(got[25:], reverse=True)
    assert got[62] == pytest.approx(0.03 + 0.07 * 0.5 * (1 + math.cos(math.pi * 37 / 75)))
    assert threshold_at(0, 100, 0.2, start=0.0) == threshold_at(100, 100, 0.2, start=0.0) == 0.2  # above 0.1: flat
    with pytest.raises(QuantGPTError, match="freeze-threshold is a share of steps"):
        TrainConfig(model="tiny", freeze_threshold=1.5)
    with pytest.raises(QuantGPTError, match="freeze-threshold is a share of steps"):
        TrainConfig(model="tiny", freeze_threshold=-0.01)
    with pytest.raises(QuantGPTError, match="freeze-start is a fraction"):
        TrainConfig(model="tiny", freeze_threshold=0.03, freeze_start=1.0)


@pytest.mark.parametrize("kw, want", [
    (dict(bits="2-2-8"), 0.03), (dict(bits="2-2-8", method="kd"), 0.03), (dict(bits="2-16-8"), 0.03),
    (dict(bits="4-4-8"), 0.0), (dict(bits="8-8-8"), 0.0), (dict(bits="16-16-16"), 0.0),
    (dict(bits="2-2-8", method="pact"), 0.0), (dict(bits="2-2-8", method="lsq"), 0.0),
    (dict(bits="2-2-8", method="laq"), 0.0), (dict(bits="2-2-8", freeze_threshold=0), 0.0),
    (dict(bits="4-4-8", freeze_threshold=0.05), 0.05)])
def test_freezing_is_the_default_of_mds_at_2_bits_alone(kw, want):
    """BENCHMARKS section 28: at 2-2-8, freezing beat the same steps without it; the paper's baselines train as
    their papers do, and 0 turns it off."""
    assert TrainConfig(model="tiny", **kw).freeze_threshold == want


def test_a_run_without_freezing_has_no_freezer(tmp_path, tiny, tokenizer, ids):
    tr = Trainer(_cfg(tmp_path, freeze_threshold=0, steps=2), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
    tr.run()
    assert tr.freezer is None
    assert not any("frozen" in r for r in read_log(tmp_path / "run" / "train_log.jsonl"))


def _cfg(tmp_path, **kw):
    base = dict(model="tiny", bits="2-2-8", steps=30, seq_len=32, batch_size=4, out=str(tmp_path / "run"),
                log_every=2, save_every=100, eval_every=100, progress=False, device="cpu", negatives=64,
                freeze_threshold=0.005, freeze_start=0.0, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_freezes_weights_and_resumes_with_them(tmp_path, tiny, tokenizer, ids):
    """A final threshold below one flip back (MOMENTUM) freezes more and more weights at the check steps (10, 20,
    30) as the threshold falls. The frozen share only grows, frozen weights keep their level, and a run stopped at
    step 20 resumes to the same weights and freezing state as the whole run."""
    from conftest import stop_after

    teacher = tiny("llama")
    full = Trainer(_cfg(tmp_path / "a"), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    full.run()
    rows = [r for r in read_log(tmp_path / "a" / "run" / "train_log.jsonl") if "loss" in r]
    shares = [r["frozen"] for r in rows]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] > 0
    assert (tmp_path / "a" / "run" / "flips.png").is_file()  # the frozen share's figure, without track_flips
    for (mod, _), st in zip(full.freezer.pairs, full.freezer.state):
        w = latent_weight(mod)
        assert torch.equal(w[st["frozen"]], st["value"][st["frozen"]])
    half = Trainer(_cfg(tmp_path / "b"), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    stop_after(half, 20)
    assert half.run()["step"] == 20 and 0 < half.freezer.frozen_share() < shares[-1]
    resumed = Trainer(_cfg(tmp_path / "b", resume=True), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    resumed.run()
    a, b = full.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fa, fb = full.freezer.state_dict(), resumed.freezer.state_dict()
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def test_gpt2s_transposed_weights_are_held_too(tmp_path, tiny, tokenizer, ids):
    """GPT-2's Conv1D stores (in, out): the freezer writes its parameter through the (out, in) view."""
    tr = Trainer(_cfg(tmp_path, steps=12), teacher=tiny("gpt2"), tokenizer=tokenizer, train_ids=ids)
    tr.run()
    conv = [(mod, st) for (mod, _), st in zip(tr.freezer.pairs, tr.freezer.state) if getattr(mod, "transposed", False)]
    assert conv and all(st["frozen"].any() for _, st in conv)
    for mod, st in conv:
        assert torch.equal(mod.weight.detach().t()[st["frozen"]], st["value"][st["frozen"]])


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_the_compiled_updates_are_the_eager_ones_with_one_graph_per_kind_of_matrix(tiny):
    """The trainer compiles the freezer's per-matrix updates where it compiles its blocks. Over 40 noisy steps of
    the 2-bit default layout the compiled freezer freezes the same weights at the same codes as the eager one
    (its float averages differ in the last bits, inductor's lerp rounding differently, and where a weight at a
    rounding threshold took the other code for a step, as compiled and eager code round such ties differently),
    and the quantizers' parameters are graph inputs, so it compiles one graph per shape of matrix and update, not
    one per matrix, all of them when the freezer is built."""
    from torch._dynamo.utils import counters

    torch.compiler.reset()
    counters.clear()
    eager, compiled = _two_freezers(tiny, compile=True)
    shapes = {tuple(latent_weight(m).shape) for m, _ in eager.pairs}
    # compiled when built (not at the first check, a quarter into a run), by steps that changed nothing
    assert counters["stats"]["unique_graphs"] == 2 * len(shapes)
    _same_state(eager, compiled)
    _noisy_steps([eager, compiled], steps=40)
    assert 0.1 < eager.frozen_share() == compiled.frozen_share() < 0.9
    a, b = eager.state_dict(), compiled.state_dict()
    for k in a:
        if a[k].is_floating_point():
            assert ((a[k] - b[k]).abs() > 1e-5).float().mean() < 1e-3, k
        else:
            assert torch.equal(a[k], b[k]), k
    for (ma, _), (mb, _) in zip(eager.pairs, compiled.pairs):
        assert torch.allclose(latent_weight(ma), latent_weight(mb), atol=1e-6)
    assert len(eager.pairs) > len(shapes)
    assert counters["stats"]["unique_graphs"] == 2 * len(shapes)  # _track and _freeze, one graph per shape each


def test_a_compiling_trainer_builds_its_freezer_compiled(tmp_path, tiny, tokenizer, ids):
    """The trainer resets the compiler before it builds the freezer, not after: the graphs the freezer made as it
    was built are the ones its steps use, so a check compiles nothing more."""
    from torch._dynamo.utils import counters

    tr = Trainer(_cfg(tmp_path, compile=True), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
    built = counters["stats"]["unique_graphs"]
    assert built > 0
    tr.freezer.step(CHECK_EVERY, 0.05)  # tracking and a check, as a quarter into a run
    assert counters["stats"]["unique_graphs"] == built


def _noisy_steps(freezers, steps=35):
    """The same optimizer-like nudges of every weight, then a step of each freezer (a threshold from step 10)."""
    g = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        for pairs in zip(*(fz.pairs for fz in freezers)):
            d = torch.randn(latent_weight(pairs[0][0]).shape, generator=g) * 0.01
            for mod, _ in pairs:
                latent_weight(mod).add_(d)
        for fz in freezers:
            fz.step(step, 0.05 if step >= CHECK_EVERY else None)


def _two_freezers(tiny, **kw):
    from quantgpt import QuantConfig, quantize_model

    model = tiny("llama")
    quantize_model(model, QuantConfig(bits="2-2-8", grid="asym", group_size=16, scale_bits=8))
    return OscillationFreezer(model), OscillationFreezer(copy.deepcopy(model), **kw)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(latent_weight(ma), latent_weight(mb)) for (ma, _), (mb, _) in zip(a.pairs, b.pairs))


def test_the_graphed_freezer_runs_each_step_once(tiny, monkeypatch):
    """graph=True (CUDA): the first step of each kind runs as it is, the second is captured (which runs nothing)
    and replayed, later ones replayed. A capture here records the step for replay without running it, as CUDA's
    does, so the graphed freezer must end exactly like the plain one: no step updated twice or skipped."""
    captured = []

    def capture(self, check):
        captured.append(check)
        return lambda: self._all(check)

    monkeypatch.setattr(OscillationFreezer, "_capture", capture)
    plain, graphed = _two_freezers(tiny, graph=True)
    _noisy_steps([plain, graphed])
    assert captured == [False, True] and graphed.graph and 0 < graphed.frozen_share() == plain.frozen_share()
    _same_state(plain, graphed)


def test_a_freezer_step_that_cannot_be_captured_runs_without_a_graph(tiny, monkeypatch):
    def capture(self, check):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(OscillationFreezer, "_capture", capture)
    plain, graphed = _two_freezers(tiny, graph=True)
    with pytest.warns(UserWarning, match="could not be captured in a CUDA graph"):
        _noisy_steps([plain, graphed])
    assert not graphed.graph
    _same_state(plain, graphed)
