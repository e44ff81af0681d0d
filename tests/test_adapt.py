"""compress's first stage, teacher adaptation: its step rule, its errors, that the pipeline is exactly the two
runs it stands for, and that it resumes in either stage."""
import json

import pytest
import torch

import quantgpt
from quantgpt import TrainConfig, compress
from quantgpt.adapt import ADAPT_DIR, adapt_steps_for
from quantgpt.errors import QuantGPTError
from quantgpt.trainer import Trainer


def _cfg(model_dir, out, **kw):
    base = dict(model=str(model_dir), bits="2-2-8", steps=2, seq_len=32, batch_size=2, negatives=16, out=str(out),
                log_every=1, save_every=100, train_data=["sample"], device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def _weights(folder):
    return quantgpt.load(folder).state_dict()


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_auto_steps(tmp_path, model_dir):
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=299), 1000) == 0  # a short run is not adapted
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=300), 1000) == 300
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=5000), 1000) == 300
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=None, epochs=1.0), 600) == 300  # 600 blocks, batches of 2
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=None, epochs=1.0), 598) == 0
    assert adapt_steps_for(_cfg(model_dir, tmp_path, steps=5000, adapt_steps=7), 1000) == 7
    assert adapt_steps_for(_cfg(model_dir, tmp_path, bits="16-16-16"), 1000) == 0
    assert adapt_steps_for(_cfg(model_dir, tmp_path, train_data=["generated:4"]), 1000) == 0
    adapted = tmp_path / "adapted"
    adapted.mkdir()
    (adapted / "finetune.json").write_text("{}")
    assert adapt_steps_for(_cfg(model_dir, tmp_path, model=str(adapted)), 1000) == 0


@pytest.mark.parametrize("kw,match", [
    ({"adapt_steps": -1}, "0 or more"),
    ({"adapt_steps": 3, "bits": "16-16-16"}, "16-16-16 is that adaptation"),
    ({"adapt_steps": 3, "train_data": ["generated:4"]}, "needs training text"),
])
def test_bad_settings(tmp_path, model_dir, kw, match):
    with pytest.raises(QuantGPTError, match=match):
        _cfg(model_dir, tmp_path, **kw)


def test_pipeline_is_the_float_run_then_compress_from_it(tmp_path, model_dir):
    r = compress(_cfg(model_dir, tmp_path / "p", adapt_steps=2))
    first = tmp_path / "p" / ADAPT_DIR
    assert r["adapt"]["steps"] == 2 and r["adapt"]["out"] == str(first) and r["steps"] == 2
    assert (first / "config.json").is_file() and (first / "finetune.json").is_file()
    assert json.loads((tmp_path / "p" / "quantgpt.json").read_text())["source"] == str(first)
    original, _ = quantgpt.load_float(str(model_dir))
    adapted, _ = quantgpt.load_float(str(first))
    assert not torch.equal(original.model.layers[0].mlp.up_proj.weight, adapted.model.layers[0].mlp.up_proj.weight)
    # the same two stages by hand: 16-16-16 with the float defaults, then compress from its folder
    compress(_cfg(model_dir, tmp_path / "t", bits="16-16-16", method="kd", adapt_steps=0))
    by_hand = compress(_cfg(tmp_path / "t", tmp_path / "q"))
    assert "adapt" not in by_hand  # a folder quantgpt adapted is not adapted again
    _assert_same(_weights(tmp_path / "p"), _weights(tmp_path / "q"))


def test_no_adaptation_writes_no_teacher(tmp_path, model_dir):
    r = compress(_cfg(model_dir, tmp_path / "n", steps=1, adapt_steps=0))
    assert "adapt" not in r and not (tmp_path / "n" / ADAPT_DIR).exists()
    assert json.loads((tmp_path / "n" / "quantgpt.json").read_text())["source"] == str(model_dir)


def test_resume_in_either_stage_matches_one_run(tmp_path, model_dir, monkeypatch):
    whole = compress(_cfg(model_dir, tmp_path / "a", steps=3, adapt_steps=3))
    step = Trainer.train_step

    def stop_in(stage_is_float, at):
        def train_step(self):
            row = step(self)
            if self.cfg.float_student == stage_is_float and self.step == at:
                self._stop_signal = "SIGTERM"
            return row
        monkeypatch.setattr(Trainer, "train_step", train_step)

    stop_in(True, 2)  # during the adaptation
    r = compress(_cfg(model_dir, tmp_path / "b", steps=3, adapt_steps=3))
    assert r["interrupted"] == "SIGTERM" and r["stage"] == "adapt" and r["step"] == 2
    assert not (tmp_path / "b" / "quantgpt.json").exists()
    with pytest.raises(QuantGPTError, match="pass --resume"):
        compress(_cfg(model_dir, tmp_path / "b", steps=3, adapt_steps=3))
    stop_in(False, 1)  # resumed: the adaptation finishes, then the quantized stage stops at its step 1
    r = compress(_cfg(model_dir, tmp_path / "b", steps=3, adapt_steps=3, resume=True))
    assert r["interrupted"] == "SIGTERM" and "stage" not in r and r["step"] == 1
    monkeypatch.undo()
    r = compress(_cfg(model_dir, tmp_path / "b", steps=3, adapt_steps=3, resume=True))
    assert r["adapt"]["kept"] and r["steps"] == 3 and whole["steps"] == 3
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    _assert_same(quantgpt.load_float(str(tmp_path / "a" / ADAPT_DIR))[0].state_dict(),
                 quantgpt.load_float(str(tmp_path / "b" / ADAPT_DIR))[0].state_dict())


def test_a_run_begun_without_adaptation_resumes_without_it(tmp_path, model_dir, monkeypatch):
    import quantgpt.adapt

    monkeypatch.setattr(quantgpt.adapt, "AUTO_STEPS", 2)  # the default adapts runs of 2 steps or more here
    compress(_cfg(model_dir, tmp_path / "s", steps=1))  # below the threshold: no adaptation
    with pytest.raises(QuantGPTError, match="began without teacher adaptation"):
        compress(_cfg(model_dir, tmp_path / "s", steps=2, adapt_steps=2, resume=True))
    r = compress(_cfg(model_dir, tmp_path / "s", steps=2, resume=True))  # extended past it: still none
    assert r["steps"] == 2 and "adapt" not in r and not (tmp_path / "s" / ADAPT_DIR).exists()
    assert compress(_cfg(model_dir, tmp_path / "new", steps=2))["adapt"]["steps"] == 2  # a new run is adapted


def test_first_stage_is_freed_before_the_second(tmp_path, model_dir, monkeypatch):
    """The float stage's trainer (its student, optimizer state, teacher and teacher cache) is gone when the
    quantized stage's trainer is built, not kept alive by its reference cycles through the whole run; and the
    quantized stage's is gone when compress returns (kept, it held GPU memory and slowed a later run in the same
    process: BENCHMARKS section 32), with the automatic collector off so that only compress can have freed it."""
    import gc
    import weakref

    built = []
    init = Trainer.__init__

    def recording(self, *a, **k):
        if built:
            alive = built[0]()
            assert alive is None, "the adaptation stage's trainer is still alive in the quantized stage"
        init(self, *a, **k)
        built.append(weakref.ref(self))

    monkeypatch.setattr(Trainer, "__init__", recording)
    gc.disable()
    try:
        compress(_cfg(model_dir, tmp_path / "p", adapt_steps=2))
    finally:
        gc.enable()
    assert len(built) == 2 and built[1]() is None


def test_every_run_compiles_as_in_a_fresh_process(tmp_path, model_dir, monkeypatch):
    """The compiled blocks' code is shared by their class, so without a reset an earlier run's graphs in the same
    process (the adaptation stage, a notebook's last run) count against torch.compile's recompile limit and the
    next run executes what does not fit eagerly. Here the quantized stage after the adaptation and a second
    compress from the adapted folder after both compile the same number of graphs (the eager backend: dynamo's
    graph capture, without a C++ compiler)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    import quantgpt.trainer as trainer

    monkeypatch.setattr(trainer, "compile_blocks", lambda m, **kw: [b.compile(backend="eager") for bl in
                                                               trainer.block_lists(m) for b in bl])
    graphs = []
    run = Trainer.run

    def counting(self):
        before = counters["stats"]["unique_graphs"]
        r = run(self)
        graphs.append(counters["stats"]["unique_graphs"] - before)
        return r

    monkeypatch.setattr(Trainer, "run", counting)
    kw = dict(compile=True, eval_data=["sample-eval"], eval_tokens=256)
    torch._dynamo.reset()
    compress(_cfg(model_dir, tmp_path / "p", adapt_steps=2, **kw))
    compress(_cfg(tmp_path / "p" / ADAPT_DIR, tmp_path / "q", **kw))
    torch._dynamo.reset()
    assert len(graphs) == 3 and graphs[0] > 0
    assert graphs[1] == graphs[2] > 0, graphs  # without the reset: [5, 3, 0] (the limit is 8)


def test_time_budget_of_the_quantized_stage_is_what_the_adaptation_left(tmp_path, model_dir, monkeypatch):
    seen = []
    init = Trainer.__init__

    def recording(self, cfg, **kw):
        seen.append((cfg.bits, cfg.time_budget))
        init(self, cfg, **kw)

    monkeypatch.setattr(Trainer, "__init__", recording)
    r = compress(_cfg(model_dir, tmp_path / "a", adapt_steps=2, time_budget=500))
    (b1, t1), (b2, t2) = seen
    assert (b1, t1) == ("16-16-16", None)  # the adaptation's steps are its own
    assert b2 == "2-2-8" and t2 == pytest.approx(500 - r["adapt"]["run_seconds_all"]) and t2 < 500
    with pytest.raises(QuantGPTError, match="the teacher adaptation took .* nothing is left"):
        compress(_cfg(model_dir, tmp_path / "b", adapt_steps=2, time_budget=0.01))
