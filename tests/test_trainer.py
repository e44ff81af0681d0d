"""The compress trainer: gradients, resume equivalence, guards, and that the method beats RTN."""
import copy
import math
import json
import shutil

import pytest
import torch

from quantgpt import evaluate
from quantgpt.errors import QuantGPTError
from quantgpt.train_config import TrainConfig
from quantgpt.config import QuantConfig
from quantgpt.convert import quantize_model, scale_clips, weight_quantizers
from quantgpt.plots import read_log
from quantgpt.trainer import Trainer, five_evals, lr_factor

from conftest import step_seconds, stop_after


def _cfg(tmp_path, **kw):
    base = dict(model="tiny", bits="2-2-8", steps=6, seq_len=32, batch_size=4, out=str(tmp_path / "run"),
                log_every=2, save_every=100, eval_every=3, progress=False, device="cpu", negatives=64)
    base.update(kw)
    return TrainConfig(**base)


def test_gradients_reach_gamma_and_weights(tmp_path, tiny, tokenizer, ids):
    tr = Trainer(_cfg(tmp_path), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
    parts = tr.losses(tr.batch(0, 0))
    parts["loss"].backward()
    q = tr.student.model.layers[0].mlp.up_proj
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0
    assert q.weight_quantizer.gamma.grad is not None and q.weight_quantizer.gamma.grad.abs().sum() > 0
    emb = tr.student.model.embed_tokens
    assert emb.weight_quantizer.gamma.grad.abs().sum() > 0  # through the embedding and the tied head
    assert {"kd", "cont", "lm"} <= set(parts)
    groups = tr.optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [tr.cfg.lr, tr.cfg.quant_lr]
    qids = {id(p) for p in groups[1]["params"]}
    assert id(q.weight_quantizer.gamma) in qids and id(q.weight) not in qids


@pytest.mark.parametrize("method, extra", [("quantgpt", {}), ("laq", {}), ("quantgpt", {"dynamic_scale": False}),
                                           ("quantgpt", {"head_scale": True, "calib_samples": 8}),
                                           ("quantgpt", {"scale_bits": 8})])
def test_resume_is_bit_exact(tmp_path, tiny, tokenizer, ids, method, extra):
    teacher = tiny("llama")
    full = Trainer(_cfg(tmp_path / "a", method=method, **extra), teacher=teacher, tokenizer=tokenizer, train_ids=ids,
                   eval_ids=ids[:2000])
    start = {k: v.clone() for k, v in full.student.state_dict().items() if k.endswith(".m0")}
    full.run()
    half = Trainer(_cfg(tmp_path / "b", method=method, **extra), teacher=teacher, tokenizer=tokenizer, train_ids=ids,
                   eval_ids=ids[:2000])
    stop_after(half, 3)
    r = half.run()
    assert r["interrupted"] == "SIGTERM" and r["step"] == 3
    resumed = Trainer(_cfg(tmp_path / "b", method=method, resume=True, **extra), teacher=teacher, tokenizer=tokenizer,
                      train_ids=ids, eval_ids=ids[:2000])
    assert resumed.step == 3
    first = json.loads((tmp_path / "b" / "run" / "checkpoint" / "state.json").read_text())["run_seconds_all"]
    assert first > 0 and resumed.earlier_run_seconds == first
    summary = resumed.run()
    assert summary["run_seconds_all"] >= first + summary["run_seconds"] - 0.2  # both segments, rounded
    a, b = full.student.state_dict(), resumed.student.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert bool(start) == (extra.get("dynamic_scale") is False)  # static scaling's frozen means: kept, unchanged
    for k, v in start.items():
        assert torch.equal(a[k], v), k
    if method == "quantgpt":
        assert torch.equal(full.contrastive.bank, resumed.contrastive.bank)
    log_a = read_log(tmp_path / "a" / "run" / "train_log.jsonl")
    log_b = read_log(tmp_path / "b" / "run" / "train_log.jsonl")
    assert [r.get("kd") for r in log_a] == [r.get("kd") for r in log_b]


def test_teacher_cache_trains_as_the_teacher_would(tmp_path, tiny, tokenizer, ids):
    """teacher_cache: the teacher's last hidden states of every block, computed once (the last batch overlapping
    the one before), are what it computes in a step, and six steps with them give the same student, losses
    and memory bank as six steps running the teacher. A representation layer other than the last is refused."""
    teacher = tiny("llama")
    runs = {}
    for cached in (False, True):
        tr = Trainer(_cfg(tmp_path / str(cached), teacher_cache=cached), teacher=copy.deepcopy(teacher),
                     tokenizer=tokenizer, train_ids=ids[:141 * 32])
        runs[cached] = tr
        if cached:
            n = tr.train.shape[0]
            assert n % tr.cfg.batch_size and tr._t_cache.shape == (n, 32, teacher.config.hidden_size)
            with torch.no_grad():
                direct = tr._t_base(input_ids=tr.train, use_cache=False).last_hidden_state
            torch.testing.assert_close(tr._t_cache, direct, rtol=1e-5, atol=1e-5)
        tr.run()
    a, b = runs[False], runs[True]
    log = lambda t: read_log(t.out / "train_log.jsonl")  # noqa: E731
    assert [r.get("kd") for r in log(a)] == pytest.approx([r.get("kd") for r in log(b)], rel=1e-5)
    for k, v in a.student.state_dict().items():
        torch.testing.assert_close(b.student.state_dict()[k], v, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.contrastive.bank, b.contrastive.bank, rtol=1e-4, atol=1e-6)
    with pytest.raises(QuantGPTError, match="needs --layer -1"):
        Trainer(_cfg(tmp_path / "mid", teacher_cache=True, layer=0), teacher=copy.deepcopy(teacher),
                tokenizer=tokenizer, train_ids=ids[:141 * 32])


def test_lm_term_is_the_students_next_token_loss_on_the_batch(tmp_path, tiny, tokenizer, ids):
    """lm_weight: the step's loss adds lm_weight x the student's mean next-token cross-entropy on the batch (the
    last position has no label) to the distillation terms; with lm_weight 0 it is logged but not trained on."""
    import torch.nn.functional as F

    for w in (0.0, 0.5):
        tr = Trainer(_cfg(tmp_path / str(w), lm_weight=w), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
        x = tr.batch(0, 0)
        parts = tr.losses(x)
        logits = tr.student(input_ids=x).logits.float()
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        torch.testing.assert_close(parts["lm"].float(), ce, rtol=1e-4, atol=1e-5)
        want = parts["kd"] + w * parts["lm"] + tr.cfg.cont_weight * parts["cont"]
        torch.testing.assert_close(parts["loss"].detach(), want, rtol=1e-5, atol=1e-6)


def test_teacher_cache_default_follows_the_device_and_its_free_memory(tmp_path, tiny, tokenizer, ids, monkeypatch):
    """teacher_cache None (default): off on CPU; with CUDA on when the cache takes at most a quarter of the free
    memory and the contrastive term reads the last layer, off otherwise (no error: it is only a speed-up). True
    insists: the cache up to half the free memory, a one-line error past it."""
    tr = Trainer(_cfg(tmp_path / "cpu"), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids[:141 * 32])
    assert tr.cfg.teacher_cache is None and tr._t_cache is None
    need = tr._teacher_cache_bytes()
    assert need == tr.train.numel() * tr.teacher.config.hidden_size * 4  # float32 on CPU
    tr.device = torch.device("cuda")  # the decision alone, with the free memory patched in
    for free, auto, insist in ((4 * need, True, True), (4 * need - 1, False, True), (2 * need - 1, False, "error")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 8 * need))
        tr.cfg.teacher_cache = None
        assert tr._want_teacher_cache() is auto
        tr.cfg.teacher_cache = True
        if insist == "error":
            with pytest.raises(QuantGPTError, match="more than half of the"):
                tr._want_teacher_cache()
        else:
            assert tr._want_teacher_cache() is insist
    tr.cfg.teacher_cache, tr.cfg.layer = None, 0  # the contrastive term at a middle layer: the teacher runs
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 * need, 100 * need))
    assert tr._want_teacher_cache() is False
    tr.cfg.teacher_cache = False
    tr.cfg.layer = -1
    assert tr._want_teacher_cache() is False


def test_a_checkpoint_cut_while_written_resumes_from_the_last_whole_one(tmp_path, tiny, tokenizer, ids, monkeypatch):
    """A process killed while writing step 2's checkpoint (here: before its state.json is in place) leaves
    step 1's checkpoint whole: resuming gives exactly step 1's student, optimizer and step."""
    import os

    from quantgpt import train_state

    teacher = tiny("llama")
    tr = Trainer(_cfg(tmp_path, steps=4), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    tr.train_step()
    train_state.save_state(tr)
    at_step1 = {k: v.clone() for k, v in tr.student.state_dict().items()}
    tr.train_step()
    real_replace = os.replace

    def killed(src, dst):
        if str(dst).endswith("state.json"):
            raise KeyboardInterrupt  # the process dies between the tensor files and state.json
        real_replace(src, dst)

    monkeypatch.setattr(train_state.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train_state.save_state(tr)
    monkeypatch.setattr(train_state.os, "replace", real_replace)
    folder = tmp_path / "run" / "checkpoint"
    assert {p.name for p in folder.glob("*.safetensors")} >= {"student.1.safetensors", "student.2.safetensors"}
    resumed = Trainer(_cfg(tmp_path, steps=4, resume=True), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    assert resumed.step == 1
    for k, v in resumed.student.state_dict().items():
        assert torch.equal(v.cpu(), at_step1[k].cpu()), k
    resumed.train_step()
    train_state.save_state(resumed)  # a whole new checkpoint clears the files of older ones
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["state.2.safetensors", "student.2.safetensors"]


def test_resume_of_another_setting_is_refused(tmp_path, tiny, tokenizer, ids):
    teacher = tiny("llama")
    Trainer(_cfg(tmp_path, steps=2), teacher=teacher, tokenizer=tokenizer, train_ids=ids).run()
    with pytest.raises(QuantGPTError, match="another setting.*bits"):
        Trainer(_cfg(tmp_path, bits="4-4-8", resume=True), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    with pytest.raises(QuantGPTError, match="another setting.*embedding_granularity"):
        Trainer(_cfg(tmp_path, embedding_granularity="channel", resume=True), teacher=teacher, tokenizer=tokenizer,
                train_ids=ids)
    with pytest.raises(QuantGPTError, match="another setting.*scale_bits"):
        Trainer(_cfg(tmp_path, scale_bits=16, resume=True), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    with pytest.raises(QuantGPTError, match="--resume"):
        Trainer(_cfg(tmp_path, steps=2), teacher=teacher, tokenizer=tokenizer, train_ids=ids)


def test_asym_centres_train_with_the_weights(tmp_path, tiny, tokenizer, ids):
    """The asym grid's centres are in the weights' units: they get the weights' learning rate, not quant_lr,
    receive gradient through the clipped weights, and move."""
    tr = Trainer(_cfg(tmp_path, grid="asym", bits="2-2-16", lr=1e-3, quant_lr=1e-2), teacher=tiny("llama"),
                 tokenizer=tokenizer, train_ids=ids)
    q = tr.student.model.layers[0].mlp.up_proj.weight_quantizer
    start = q.center.detach().clone()
    groups = tr.optimizer.param_groups
    by_group = [{id(p) for p in g["params"]} for g in groups]
    assert id(q.center) in by_group[0] and id(q.gamma) in by_group[1]
    assert groups[0]["lr"] < groups[1]["lr"]
    tr.losses(tr.batch(0, 0))["loss"].backward()
    assert q.center.grad is not None and q.center.grad.abs().sum() > 0
    tr.optimizer.zero_grad(set_to_none=True)
    tr.train_step()
    assert not torch.equal(q.center.detach(), start)
    with pytest.raises(QuantGPTError, match="asym"):
        _cfg(tmp_path, method="pact", grid="asym")


def test_nan_loss_stops_with_checkpoint(tmp_path, tiny, tokenizer, ids):
    teacher = tiny("llama")
    tr = Trainer(_cfg(tmp_path, steps=5), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    tr.train_step()
    before = {k: v.clone() for k, v in tr.student.state_dict().items()}
    with torch.no_grad():
        tr.teacher.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(QuantGPTError, match=r"loss part 'kd' is nan at step 2.*step 1"):
        tr.train_step()
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 1
    for k, v in tr.student.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_training_data_shorter_than_one_batch(tmp_path, tiny, tokenizer):
    with pytest.raises(QuantGPTError, match="fewer than one batch"):
        Trainer(_cfg(tmp_path), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=torch.arange(100))
    assert not (tmp_path / "run").exists()


def test_method_presets(tmp_path, tiny, tokenizer, ids):
    for method, quantizer, contrastive in [("pact", "pact", False), ("lsq", "lsq", False), ("kd", "mds", False)]:
        tr = Trainer(_cfg(tmp_path / method, method=method, steps=1), teacher=tiny("llama"), tokenizer=tokenizer,
                     train_ids=ids)
        assert tr.student.model.layers[0].mlp.up_proj.weight_quantizer.family == quantizer
        assert (tr.contrastive is not None) == contrastive
        tr.train_step()


def test_starting_point_is_kept_when_training_only_hurts(tmp_path, tiny, tokenizer, ids):
    from quantgpt import load

    ev = ids[:2048]
    cfg = _cfg(tmp_path, bits="8-8-8", steps=2, eval_every=1, lr=3.0, warmup=0.0, max_grad_norm=0.0)
    tr = Trainer(cfg, teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids, eval_ids=ev)
    r = tr.run()
    rows = read_log(tmp_path / "run" / "train_log.jsonl")
    evals = {x["step"]: x["eval_ppl"] for x in rows if "eval_ppl" in x}
    assert evals[0] < min(evals[1], evals[2])  # a learning rate of 3 wrecks the model
    assert r["best"] == {"step": 0, "eval_ppl": evals[0]}
    kept = evaluate(load(tmp_path / "run"), ev, seq_len=32, progress=False)["perplexity"]
    assert kept == pytest.approx(evals[0], rel=1e-2)  # the written model is the starting point (fp16 scales)


def test_signal_while_finishing_still_writes_the_model(tmp_path, tiny, tokenizer, ids, monkeypatch):
    """Training is over when finish() starts: a time limit's SIGINT then waits for the model folder instead of
    killing it half written (a study lost four finished runs that way), and the result says it came."""
    import os
    import signal

    import quantgpt.plots

    def plot_then_signal(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # arrives during finish, after the packed model is written
        return plot(*a, **kw)

    plot = quantgpt.plots.plot_training
    monkeypatch.setattr(quantgpt.plots, "plot_training", plot_then_signal)
    r = Trainer(_cfg(tmp_path, steps=2, eval_every=2), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).run()
    assert r["stop_signal"] == "SIGINT" and r["steps"] == 2
    assert (tmp_path / "run" / "model.safetensors").is_file() and list((tmp_path / "run").glob("*.png"))  # finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_resume_reads_an_older_fingerprint_at_its_defaults(tmp_path, tiny, tokenizer, ids):
    """Checkpoints written before head_scale and scale_bits were fingerprinted left them out at False and 16: such
    a run resumes with fp16 scales and is refused with the 8-bit ones that are the 2-bit default now."""
    teacher = tiny("llama")
    Trainer(_cfg(tmp_path, steps=2, scale_bits=16), teacher=teacher, tokenizer=tokenizer, train_ids=ids).run()
    state = tmp_path / "run" / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    assert (meta["fingerprint"].pop("head_scale"), meta["fingerprint"].pop("scale_bits")) == (False, 16)
    state.write_text(json.dumps(meta))
    with pytest.raises(QuantGPTError, match="another setting: scale_bits 16 \\(this run: 8\\)"):
        Trainer(_cfg(tmp_path, steps=3, resume=True), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    tr = Trainer(_cfg(tmp_path, steps=3, scale_bits=16, resume=True), teacher=teacher, tokenizer=tokenizer,
                 train_ids=ids)
    assert tr.step == 2


def test_scaling_defaults():
    """The study's defaults: one clip per 16 input columns of a row at 2-bit weights (stored as 8-bit codes for
    mds), per 32 above, on the asym grid (all 2^b codes about a learned centre) for quantgpt and kd at every width,
    pact's symmetric grids, activation scales per 32 features of a token; every paper setting stays one flag away."""
    c = TrainConfig(bits="2-2-8")
    assert (c.granularity, c.group_size, c.grid, c.act_granularity, c.act_group_size) == ("group", 16, "asym", "group", 32)
    assert c.scale_bits == 8 and TrainConfig(method="kd").scale_bits == 8
    for other in (dict(bits="4-4-8"), dict(bits="8-8-8"), dict(bits="3-2-8"), dict(method="pact"), dict(method="lsq"),
                  dict(granularity="channel"), dict(bits="16-16-16")):  # fp16 above 2 bits and for every other case
        assert TrainConfig(**other).scale_bits == 16, other
    assert TrainConfig(bits="4-4-8").group_size == 32 and TrainConfig(bits="2-16-8").group_size == 16
    assert TrainConfig(scale_bits=16).scale_bits == 16 and TrainConfig(bits="4-4-8", scale_bits=8).scale_bits == 8
    assert TrainConfig(bits="4-4-8").grid == "asym" and TrainConfig(method="kd", bits="8-8-8").grid == "asym"
    assert TrainConfig(method="lsq").grid == "sym" and TrainConfig(method="laq").group_size == 16  # one layout
    assert TrainConfig(method="pact").grid == "full" and TrainConfig(method="pact", bits="4-4-8").grid == "sym"
    assert TrainConfig(quantizer="pact").grid == "full"  # quantgpt with a static clip: asym is mds-only
    paper = TrainConfig(bits="2-2-8", granularity="tensor", grid="sym", act_granularity="token")
    assert (paper.granularity, paper.group_size, paper.grid, paper.act_group_size) == ("tensor", None, "sym", None)
    assert TrainConfig(granularity="channel").group_size is None
    assert TrainConfig(group_size=64).granularity == "group" and TrainConfig(group_size=64).group_size == 64
    with pytest.raises(QuantGPTError, match="weight group size 0"):
        TrainConfig(group_size=0)
    with pytest.raises(QuantGPTError, match="a weight group size applies to group granularity, not 'channel'"):
        TrainConfig(granularity="channel", group_size=64)  # a conflict is an error, not a silent choice
    with pytest.raises(QuantGPTError, match="unknown weight granularity 'row'"):
        TrainConfig(granularity="row")
    assert (c.embedding_granularity, c.embedding_group_size) == ("group", 8)
    assert TrainConfig(embedding_granularity="channel").embedding_group_size is None
    with pytest.raises(QuantGPTError, match="embedding group size"):
        TrainConfig(embedding_granularity="tensor", embedding_group_size=8)


def test_embedding_groups_follow_the_embedding_bits():
    """8-feature embedding groups at 2 bits (2-2-8 with 8-bit scales: 29.84 against 16's 32.36), 16 at 3-4 bits
    (4-4-8: 21.96 against 22.09 with 32), 32 at 8 bits (and for a float embedding, where it is unused); the
    embedding's bits decide, not the weights'; an explicit size or another granularity always wins."""
    for bits, want in (("2-2-8", 8), ("4-4-8", 16), ("3-3-8", 16), ("2-4-8", 16), ("4-2-8", 8), ("8-8-8", 32),
                       ("2-8-8", 32), ("8-2-8", 8), ("2-16-8", 32)):
        assert TrainConfig(bits=bits).embedding_group_size == want, bits
    assert TrainConfig(bits="4-4-8", embedding_group_size=32).embedding_group_size == 32
    assert TrainConfig(bits="4-4-8", embedding_granularity="channel").embedding_group_size is None


def test_lr_and_lambda_follow_the_weight_bits():
    """2-bit weights train at lr 1e-3 with lambda 0.03; 3 bits and up at 3e-4 without the contrastive term (study,
    sections 7 and 11), or with lambda 0.01 when it is asked for. An explicit value always wins, also one that
    equals another width's default."""
    assert (TrainConfig(bits="2-2-8").lr, TrainConfig(bits="2-2-8").cont_weight) == (1e-3, 0.03)
    assert (TrainConfig(bits="2-16-8").lr, TrainConfig(bits="2-16-8").cont_weight) == (1e-3, 0.03)
    assert TrainConfig(bits="2-2-8").use_contrastive
    for bits in ("3-3-8", "4-4-8", "8-8-8", "16-2-8"):
        cfg = TrainConfig(bits=bits)
        assert (cfg.lr, cfg.cont_weight, cfg.use_contrastive) == (3e-4, 0.0, False), bits
        asked = TrainConfig(bits=bits, contrastive=True)
        assert (asked.cont_weight, asked.use_contrastive) == (0.01, True), bits
    assert (TrainConfig(bits="8-8-8", lr=1e-3, cont_weight=0.1).lr, TrainConfig(bits="2-2-8", cont_weight=0.01).cont_weight) == \
        (1e-3, 0.01)
    assert TrainConfig(bits="4-4-8", cont_weight=0.1).use_contrastive  # quantgpt's flag with an explicit weight
    assert not TrainConfig(bits="2-2-8", cont_weight=0).use_contrastive  # a zero weight builds no term
    assert not TrainConfig(bits="2-2-8", method="kd", cont_weight=0.1).use_contrastive  # kd has no term at all
    assert TrainConfig(bits="2-2-8", lr="3e-4").lr == 3e-4  # YAML's 3e-4 is a string


def test_lm_term_is_on_from_4_bit_weights():
    """The ground-truth LM term trains at weight 1 from 4-bit weights up, for every method (a loss, like the
    distillation every method gets), and is off at 2 and 3 bits (study, section 13); an explicit weight wins."""
    for bits, want in (("2-2-8", 0.0), ("2-16-8", 0.0), ("3-3-8", 0.0), ("4-4-8", 1.0), ("8-8-8", 1.0), ("16-2-8", 1.0)):
        for method in ("quantgpt", "kd", "laq"):
            assert TrainConfig(bits=bits, method=method).lm_weight == want, (bits, method)
    assert (TrainConfig(bits="8-8-8", lm_weight=0).lm_weight, TrainConfig(bits="2-2-8", lm_weight="1").lm_weight) == (0.0, 1.0)


def test_config_sources_and_assignments(tmp_path):
    """YAML file, then flags; ``KEY=VALUE`` assignments (paper_study's --set) read each value as YAML. Option names
    may be written with dashes; an unknown key or a malformed assignment is a one-line error naming its source."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("bits: 4-4-8\ngroup-size: 64\nlr: 1e-4\n")
    got = TrainConfig.from_sources(str(cfg), lr=3e-3, steps=None)
    assert (got.bits, got.group_size, got.lr) == ("4-4-8", 64, 3e-3)
    sets = TrainConfig.parse_assignments(["init=blockwise", "block-steps=60", "lr=1e-3", "eval_data=[a, b]"])
    assert sets == {"init": "blockwise", "block_steps": 60, "lr": "1e-3", "eval_data": ["a", "b"]}  # YAML 1.1's 1e-3
    assert TrainConfig(**sets).lr == 1e-3  # ... which the config reads as a number
    cfg.write_text("bits: 4-4-8\ngroup-sise: 64\n")
    with pytest.raises(QuantGPTError, match="run.yaml: unknown keys group_sise"):
        TrainConfig.from_sources(str(cfg))
    with pytest.raises(QuantGPTError, match="--set: unknown keys lerning_rate"):
        TrainConfig.parse_assignments(["lerning_rate=1"])
    with pytest.raises(QuantGPTError, match="write KEY=VALUE"):
        TrainConfig.parse_assignments(["lr"])
    with pytest.raises(QuantGPTError, match="not valid YAML"):
        TrainConfig.parse_assignments(["eval_data=[a"])


def test_compress_layout_is_the_documented_quantconfig(tmp_path, tiny, tokenizer, ids):
    """README: compress at 2 bits trains the layout of QuantConfig(bits="2-2-8", group_size=16, ragged_groups=True,
    grid="asym", embedding_group_size=8, scale_bits=8): the same quantizers, module by module, with the same scale
    shapes and scale storage."""
    from quantgpt import QuantConfig, quantize_model

    tr = Trainer(_cfg(tmp_path, steps=1), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
    ref = quantize_model(tiny("llama"), QuantConfig(bits="2-2-8", group_size=16, ragged_groups=True, grid="asym",
                                                    embedding_group_size=8, scale_bits=8))

    def layout(model):
        return {n: (repr(m), [tuple(p.shape) for p in m.parameters()], getattr(m, "scale_bits", None))
                for n, m in model.named_modules() if n.endswith(("weight_quantizer", "act_quantizer"))}

    got, want = layout(tr.student), layout(ref)
    assert got == want and len(got) > 10


def test_embedding_has_its_own_scale_layout(tmp_path, tiny, tokenizer, ids):
    tr = Trainer(_cfg(tmp_path, embedding_group_size=16, steps=1), teacher=tiny("llama"), tokenizer=tokenizer,
                 train_ids=ids)
    emb, head = tr.student.model.embed_tokens, tr.student.lm_head
    assert (emb.weight_quantizer.granularity, emb.weight_quantizer.group_size) == ("group", 16)
    assert emb.weight_quantizer.rows == emb.weight.shape[0] * emb.weight.shape[1] // 16
    assert head._tied and head._tied[0] is emb  # the tied head reads the same codes and scales
    assert tr.student.model.layers[0].mlp.up_proj.weight_quantizer.granularity == "group"
    tr.train_step()


def test_init_from_gptq_starts_at_its_solution(tmp_path, tiny, tokenizer, ids):
    tr = Trainer(_cfg(tmp_path, init="gptq", bits="4-16-8", calib_samples=8), teacher=tiny("llama"),
                 tokenizer=tokenizer, train_ids=ids)
    w = tr.student.model.layers[1].mlp.down_proj.weight
    assert not torch.equal(w, tr.teacher.model.layers[1].mlp.down_proj.weight)
    gs = tr.cfg.group_size
    for group in w[0, : w.shape[1] // gs * gs].reshape(-1, gs):
        assert len(torch.unique(group)) <= 16  # on a 4-bit grid per group


def _train_teacher(tiny, ids, steps=300):
    """A tiny Llama that has learned the sample text's statistics."""
    torch.manual_seed(0)
    m = tiny("llama")
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    blocks = ids[: (ids.numel() // 64) * 64].reshape(-1, 64)
    g = torch.Generator().manual_seed(0)
    m.train()
    for _ in range(steps):
        x = blocks[torch.randint(0, blocks.shape[0], (16,), generator=g)]
        m(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


def test_quantgpt_beats_rtn_at_2_2_8(tmp_path, tiny, tokenizer, ids):
    from quantgpt.data import tokenize_files
    from quantgpt.ptq import rtn_quantize
    from quantgpt.ptq.rtn import rtn_config
    import copy

    held_out = tokenize_files("sample-eval", tokenizer, use_cache=False)[:8192]
    teacher = _train_teacher(tiny, ids)
    ppl = lambda m: evaluate(m, held_out, seq_len=64, progress=False)["perplexity"]  # noqa: E731
    float_ppl = ppl(teacher)
    rtn = rtn_quantize(copy.deepcopy(teacher), rtn_config("2-2-8", group_size=None))
    cfg = _cfg(tmp_path, steps=150, seq_len=64, batch_size=16, lr=2e-3, quant_lr=1e-2, eval_every=1000, negatives=256)
    tr = Trainer(cfg, teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    tr.run()
    q_ppl, rtn_ppl = ppl(tr.student), ppl(rtn)
    assert float_ppl < 60, float_ppl  # the teacher did learn the text (uniform would be 384)
    assert q_ppl < rtn_ppl, (q_ppl, rtn_ppl, float_ppl)
    assert q_ppl < 3 * float_ppl, (q_ppl, float_ppl)
    print(f'float {float_ppl:.2f} quantgpt {q_ppl:.2f} rtn {rtn_ppl:.2f}')


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("grid, dynamic, scale_bits", [("full", True, 16), ("asym", True, 16), ("asym", False, 16),
                                                      ("asym", True, 8)])
def test_compiled_step_has_the_eager_gradients(tmp_path, tiny, tokenizer, ids, grid, dynamic, scale_bits):
    """torch.compile must not change what is trained: one 2-2-8 step, float32 on CPU, eager against compiled
    blocks, same student and batch, with dynamic scaling and with its frozen-mean ablation. (A compiled
    activation quantizer once trained to 10x worse perplexity.)"""

    teacher = tiny("llama")
    x = ids[: 4 * 32].reshape(4, 32)
    grads = {}
    for mode in (False, True):
        torch.manual_seed(0)
        tr = Trainer(_cfg(tmp_path / str(mode), compile=mode, grid=grid, dynamic_scale=dynamic, scale_bits=scale_bits),
                     teacher=copy.deepcopy(teacher), tokenizer=tokenizer, train_ids=ids)
        # Off the start's ties: where the clip search keeps the whole range (alpha = max|w|), a group's extreme
        # weights sit at |u| = 1 up to the last bit, and eager and compiled code round that bit differently.
        # Such a weight is inside the clip in one and outside in the other: a real but measure-zero difference
        # that moves gamma's and the centre's gradients (seen: cosine 0.85 for one matrix's centres at g32).
        assert scale_clips(tr.student, 0.97) == len(weight_quantizers(tr.student))
        tr.losses(x)["loss"].backward()
        grads[mode] = {n: p.grad.detach().flatten() for n, p in tr.student.named_parameters() if p.grad is not None}
    assert grads[False].keys() == grads[True].keys()
    for kind, min_cos in (("weight", 0.9999), ("quantizer", 0.999)):
        names = [n for n in grads[False] if ("quantizer." in n) == (kind == "quantizer")]
        a, b = (torch.cat([grads[m][n] for n in names]) for m in (False, True))
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > min_cos, kind
        assert (b.norm() / a.norm()).item() == pytest.approx(1.0, abs=1e-3), kind


def test_compile_blocks_compiles_every_block_list(tiny):
    """compile_blocks compiles each transformer block in place: Llama's one list, and both of BART's (encoder and
    decoder; it once found only the encoder's), and the quantized embedding's weight quantizer, which runs outside
    them. A model without block lists is compiled whole. Compilation is lazy, so this checks what is wrapped, not
    the compiled code (the compiled-step test does that)."""
    from quantgpt.blockwise import block_lists
    from quantgpt.modules import quant_embeddings
    from quantgpt.trainer import compile_blocks

    llama, bart = tiny("llama"), tiny("bart", encoder_layers=2, decoder_layers=2)
    quantize_model(llama, QuantConfig(bits="2-2-8"))
    assert [len(b) for b in block_lists(llama)] == [llama.config.num_hidden_layers]
    lists = block_lists(bart)
    assert lists == [bart.model.encoder.layers, bart.model.decoder.layers]
    for model in (llama, bart):
        compile_blocks(model)
        assert all(b._compiled_call_impl is not None for blocks in block_lists(model) for b in blocks)
        assert model._compiled_call_impl is None
    tables = quant_embeddings(llama)
    assert tables and all(m.weight_quantizer._compiled_call_impl is not None for m in tables)
    flat = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    compile_blocks(flat)
    assert flat._compiled_call_impl is not None


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_blockwise_init_lowers_every_blocks_error(tmp_path, tiny, tokenizer, ids, arch):
    """init blockwise trains each block of the 2-bit student towards the teacher's block output: every block's
    relative error drops, the teacher stays as it was, and the per-block errors go to the step-0 log row."""
    teacher = tiny(arch)
    start = {k: v.clone() for k, v in teacher.state_dict().items()}
    tr = Trainer(_cfg(tmp_path, init="blockwise", block_steps=30, calib_samples=16, steps=1, eval_every=1),
                 teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    stats = tr.block_init
    assert [d["block"] for d in stats] == [0, 1]
    assert all(d["rel_error_after"] < 0.9 * d["rel_error_before"] for d in stats), stats
    assert all(torch.equal(v, start[k]) for k, v in tr.teacher.state_dict().items())
    tr.run()
    first = json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["blockwise"] == stats


def test_blockwise_block_inputs_are_the_models_own(tiny):
    """The first block's call, caught from the model's forward: its hidden states are the embedding's output,
    and calling the blocks in order with the caught arguments reproduces the model's final hidden state."""
    from quantgpt.blockwise import block_inputs, block_output, decoder_blocks

    model = tiny("llama")
    x = torch.randint(0, 300, (2, 16))
    blocks = decoder_blocks(model)
    (args, kwargs), = block_inputs(model, blocks, [x])
    h = args[0] if args else kwargs["hidden_states"]
    assert torch.equal(h, model.model.embed_tokens(x))
    with torch.no_grad():
        for b in blocks:
            h = block_output(b(h, *args[1:], **kwargs) if args else b(**{**kwargs, "hidden_states": h}))
        want = model.model(input_ids=x, use_cache=False).last_hidden_state
    assert torch.allclose(model.model.norm(h), want, atol=1e-5)


def test_blockwise_needs_a_decoder_only_model(tmp_path, tiny, tokenizer, ids):
    with pytest.raises(QuantGPTError, match="decoder-only"):
        Trainer(_cfg(tmp_path, init="blockwise", block_steps=2), teacher=tiny("bart"), tokenizer=tokenizer,
                train_ids=ids)
    with pytest.raises(QuantGPTError, match="block-steps must be positive"):
        TrainConfig(init="blockwise", block_steps=0)


def test_float_student_fine_tunes_the_teacher_into_a_transformers_folder(tmp_path, tiny, tokenizer, ids):
    """16-16-16: nothing is quantized; the float model trains on KD + the LM term (lr 1e-4 by default) and the
    kept model is written as a plain transformers folder, which a later compress run takes as its teacher."""
    from quantgpt.models import load_float, resolve
    from quantgpt.modules import QuantLinear

    cfg = _cfg(tmp_path, bits="16-16-16")
    assert cfg.float_student and cfg.lr == 1e-4 and cfg.lm_weight == 1.0 and not cfg.use_contrastive
    held_out = ids[-2048:]
    cfg = _cfg(tmp_path, bits="16-16-16", steps=30, seq_len=64, batch_size=8, lr=3e-3, eval_every=10)
    teacher = tiny("llama")
    start = evaluate(teacher, held_out, seq_len=64, progress=False)["perplexity"]
    tr = Trainer(cfg, teacher=teacher, tokenizer=tokenizer, train_ids=ids[:-2048], eval_ids=held_out)
    assert not any(isinstance(m, QuantLinear) for m in tr.student.modules())
    r = tr.run()
    assert r["best"]["step"] > 0 and r["best"]["eval_ppl"] < 0.5 * start, (r["best"], start)
    assert resolve(cfg.out)[0] == "folder" and (tmp_path / "run" / "finetune.json").is_file()
    adapted, tok = load_float(cfg.out)
    assert tok("the cat").input_ids == tokenizer("the cat").input_ids
    ppl = evaluate(adapted, held_out, seq_len=64, progress=False)["perplexity"]
    assert ppl == pytest.approx(r["best"]["eval_ppl"], rel=1e-4)
    # the adapted model is the next run's teacher and the student's starting point
    tr2 = Trainer(_cfg(tmp_path / "q", model=cfg.out, steps=2), train_ids=ids)
    torch.testing.assert_close(tr2.teacher.model.embed_tokens.weight, adapted.model.embed_tokens.weight)


def test_save_float_writes_a_model_that_transformers_loaded_from_gguf(tmp_path, tiny, tokenizer):
    """A GGUF-loaded model (the real teacher) carries transformers' GGUF quantizer, whose save_pretrained refuses
    though the weights are plain floats; save_float writes it as a plain folder that loads back the same."""
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    from quantgpt.models import load_float, save_float

    m = tiny("llama")
    m.config.quantization_config = GgufConfig(gguf_file="model.gguf")
    m.hf_quantizer = GgufHfQuantizer(m.config.quantization_config)
    with pytest.raises(ValueError, match="not serializable"):
        m.save_pretrained(tmp_path / "plain")
    save_float(m, tokenizer, tmp_path / "f")
    assert "quantization_config" not in json.loads((tmp_path / "f" / "config.json").read_text())
    back, _ = load_float(str(tmp_path / "f"))
    x = torch.arange(20).reshape(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x).logits, m(input_ids=x).logits, rtol=0, atol=0)
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()  # still tied


def test_load_float_hands_the_config_it_read_to_the_model_loading(tmp_path, monkeypatch, tiny, tokenizer):
    """transformers' GGUF reader parses the whole file (its vocabulary too) for every config read: the model's
    from_pretrained gets the config load_float read, so it reads none itself (SmolLM2's GGUF: 4 parses down to 3,
    about 5 s of a 25 s load on the CPU)."""
    from transformers import AutoModelForCausalLM, PretrainedConfig

    from quantgpt.models import load_float, save_float

    save_float(tiny("llama"), tokenizer, tmp_path / "f")
    inside, reads = [], []
    get = PretrainedConfig.get_config_dict.__func__
    load = AutoModelForCausalLM.from_pretrained.__func__

    def spy_get(cls, *a, **kw):
        reads.append(bool(inside))
        return get(cls, *a, **kw)

    def spy_load(cls, *a, **kw):
        inside.append(1)
        try:
            return load(cls, *a, **kw)
        finally:
            inside.pop()

    monkeypatch.setattr(PretrainedConfig, "get_config_dict", classmethod(spy_get))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy_load))
    model, _ = load_float(str(tmp_path / "f"))
    assert reads and not any(reads)  # the config was read, never inside the model's loading
    assert model.config.num_hidden_layers == tiny("llama").config.num_hidden_layers


def test_a_gguf_model_is_read_once_then_loaded_from_its_float_copy_in_the_cache(tmp_path, monkeypatch, tiny, tokenizer):
    """The first load of a GGUF file reads it (transformers' reader, faked here: the tests have no GGUF file) and
    keeps the float model as a plain folder in the cache; the next load reads that folder, bit for bit the same,
    without touching the file. New content gets a new entry, a broken entry is rebuilt, and use_cache=False or a
    bf16 load keep nothing."""
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    import quantgpt.models as models

    monkeypatch.setenv("QUANTGPT_CACHE", str(tmp_path / "cache"))
    ref, reads, real = tiny("llama"), [], models._from_pretrained

    def fake(loc, dtype, **kw):
        if "gguf_file" not in kw:
            return real(loc, dtype, **kw)
        reads.append(kw["gguf_file"])
        m = copy.deepcopy(ref).to(dtype)
        m.config.quantization_config = GgufConfig(gguf_file=kw["gguf_file"])  # as transformers leaves it
        m.hf_quantizer = GgufHfQuantizer(m.config.quantization_config)
        return m, tokenizer

    monkeypatch.setattr(models, "_from_pretrained", fake)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF one")
    models.load_float(str(f))
    back, tok = models.load_float(str(f))
    assert reads == ["m.gguf"] and (models.gguf_cache(f) / "config.json").is_file()
    assert getattr(back.config, "quantization_config", None) is None
    x = torch.arange(20).reshape(1, -1)
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=x).logits, ref(input_ids=x).logits, rtol=0, atol=0)
    assert tok("a short text")["input_ids"] == tokenizer("a short text")["input_ids"]
    f.write_bytes(b"GGUF two")  # another model in the same file name
    models.load_float(str(f))
    assert reads == ["m.gguf"] * 2
    (models.gguf_cache(f) / "model.safetensors").write_bytes(b"broken")
    models.load_float(str(f))
    models.load_float(str(f))
    assert reads == ["m.gguf"] * 3
    g = tmp_path / "n.gguf"
    g.write_bytes(b"GGUF three")
    models.load_float(str(g), use_cache=False)
    models.load_float(str(g), dtype=torch.bfloat16)
    assert reads == ["m.gguf"] * 3 + ["n.gguf"] * 2 and not models.gguf_cache(g).exists()


@pytest.mark.parametrize("kw, match", [({"bits": "16-16-8"}, "neither weights nor embedding"),
                                       ({"bits": "16-16-16", "init": "gptq"}, "float student")])
def test_float_student_settings_that_make_no_sense_are_refused(tmp_path, kw, match):
    with pytest.raises(QuantGPTError, match=match):
        _cfg(tmp_path, **kw)


def test_head_scale_starts_at_the_least_squares_fit_of_the_teachers_logits(tmp_path, tiny, tokenizer, ids):
    """head_scale: each vocabulary row's scale starts at argmin_s E[(h.w_v - s h.q_v)^2] over the teacher's final
    hidden states h on the calibration blocks (after the head's activation quantizer, none at 2-2-16); on those
    states the fit brings the quantized head's logits nearer the teacher's than the shared table alone, and the
    scales then train."""
    teacher = tiny("llama")
    cfg = _cfg(tmp_path, head_scale=True, calib_samples=8, bits="2-2-16")
    tr = Trainer(cfg, teacher=copy.deepcopy(teacher), tokenizer=tokenizer, train_ids=ids)
    head = tr.student.get_output_embeddings()
    calib = tr._calib()
    with torch.no_grad():
        h = teacher.base_model(input_ids=calib).last_hidden_state.reshape(-1, 32)
        q = head._tied[0].quantized_weight()
        w = teacher.get_output_embeddings().weight
        x, y = h @ q.T, h @ w.T  # (tokens, vocab) logits: quantized table, teacher's head
        want = ((x * y).sum(0) / (x * x).sum(0)).clamp(0.25, 4.0)
        torch.testing.assert_close(head.row_scale, want, rtol=1e-4, atol=1e-5)
        fitted = ((x * head.row_scale - y) ** 2).mean()
        assert fitted < ((x - y) ** 2).mean()
    before = head.row_scale.detach().clone()
    tr.run()
    assert not torch.equal(head.row_scale.detach(), before)


def test_head_scale_without_a_tied_quantized_head_is_one_error(tmp_path, tiny, tokenizer, ids):
    for model, bits in ((tiny("llama", tie_word_embeddings=False), "2-2-8"), (tiny("llama"), "2-16-8")):
        with pytest.raises(QuantGPTError, match="head-scale needs an LM head tied"):
            Trainer(_cfg(tmp_path, head_scale=True, bits=bits, calib_samples=4), teacher=model, tokenizer=tokenizer,
                    train_ids=ids)


def test_a_fresh_run_does_not_append_to_a_crashed_attempts_log(tmp_path, tiny, tokenizer, ids):
    """An attempt that died before its first checkpoint leaves rows in train_log.jsonl; the fresh run that follows
    (no --resume: there is nothing to resume) writes its own log, not after them."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_log.jsonl").write_text(json.dumps({"step": 0, "eval_ppl": 1e9}) + "\n")
    Trainer(_cfg(tmp_path, steps=2, eval_every=0), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).run()
    rows = read_log(tmp_path / "run" / "train_log.jsonl")
    assert rows and all(r.get("eval_ppl") != 1e9 for r in rows) and [r["step"] for r in rows] == sorted(r["step"] for r in rows)


@pytest.fixture
def clock(monkeypatch):
    """The trainer's wall clock, faked: it moves only when a test moves it (one clock for all of a test's runs)."""
    import quantgpt.trainer as trainer_mod

    now = [1000.0]
    monkeypatch.setattr(trainer_mod, "_clock", lambda: now[0])
    return now


def _budgeted(tmp_path, tiny, tokenizer, ids, clock, cost, teacher=None, **kw):
    """A time-budgeted trainer on the fake clock: a training step ``s`` takes ``cost(s)`` seconds and nothing
    else takes any, so the fitted step counts follow from the costs alone."""
    base = dict(steps=400, time_budget=100, eval_every=0, log_every=1)
    tr = Trainer(_cfg(tmp_path, **{**base, **kw}), teacher=teacher or tiny("llama"), tokenizer=tokenizer,
                 train_ids=ids)
    step_seconds(tr, clock, cost)
    return tr


def _lrs(tr):
    return {r["step"]: r["lr"] for r in read_log(tr.out / "train_log.jsonl") if "lr" in r}


def test_time_budget_fits_the_steps_and_anneals_on_their_schedule(tmp_path, tiny, tokenizer, ids, clock):
    """At one second a step, a 100 s budget fits 100 of the 400 steps at the probe (step 25). From there on the
    learning rate is a 100-step run's, so the run ends annealed, and it writes its model as any run does."""
    teacher = tiny("llama")
    tr = _budgeted(tmp_path / "b", tiny, tokenizer, ids, clock, lambda s: 1.0, teacher=teacher)
    r = tr.run()
    assert r["steps"] == 100 and tr.total_steps == 100 and tr.eval_every == 20
    assert r["run_seconds_all"] == 100.0 and (tr.out / "quantgpt.json").is_file()
    plain = Trainer(_cfg(tmp_path / "p", steps=100, log_every=1), teacher=teacher, tokenizer=tokenizer, train_ids=ids)
    plain.run()
    fitted, ref = _lrs(tr), _lrs(plain)
    assert sorted(fitted) == sorted(ref) == list(range(1, 101))
    assert [fitted[s] for s in range(25, 101)] == pytest.approx([ref[s] for s in range(25, 101)], rel=1e-12)
    assert fitted[24] != pytest.approx(ref[24])  # before the fit: the warmup of 400 steps
    assert fitted[100] == 0.0


def test_time_budget_stops_a_run_whose_steps_slow_down(tmp_path, tiny, tokenizer, ids, clock):
    """Steps of 1 s fit 100 at the probe; from step 31 they take 4 s. The refit in the step after the evaluation
    at step 40 (74 s spent at step 41, 69 s over the 36 steps since the probe began) allows 54, and the budget,
    spent at step 48 (102 s), ends the run there; it still writes its model. Each fit is a row of the train log:
    the seconds spent, the rate (1 s a step over steps 5-25; 69 s over 36 steps), the step count it gave and where
    freezing begins on it."""
    tr = _budgeted(tmp_path, tiny, tokenizer, ids, clock, lambda s: 1.0 if s <= 30 else 4.0)
    r = tr.run()
    fits = [r for r in read_log(tr.out / "train_log.jsonl") if "budget_fit" in r]
    assert [(f["step"], f["budget_seconds"], f["ms_per_step"], f["budget_fit"]) for f in fits] == [
        (25, 25.0, 1000.0, 100), (41, 74.0, round(69000 / 36, 1), 54)]
    assert [f["freeze_begin"] for f in fits] == [25, 13]  # a quarter of each fit: 2-bit mds freezes by default
    times = {r["step"]: r["time"] for r in read_log(tr.out / "train_log.jsonl") if "loss" in r}
    assert (times[10], times[35]) == (1010.0, 1050.0)  # each training row's wall clock (the fake one's 1000 + steps)
    assert r["steps"] == 48 and (tr.out / "quantgpt.json").is_file()


def test_evaluation_rows_carry_their_seconds(tmp_path, tiny, tokenizer, ids, clock):
    """Each evaluation row (the one before step 1 included) records the wall seconds it took, which a time budget
    pays: here 5 s on the fake clock, for the representation statistics every evaluation row computes."""
    tr = _budgeted(tmp_path, tiny, tokenizer, ids, clock, lambda s: 1.0, steps=30, time_budget=None, eval_every=10)
    homogeneity = tr.homogeneity

    def slow():
        clock[0] += 5.0
        return homogeneity()
    tr.homogeneity = slow
    tr.run()
    rows = [r for r in read_log(tr.out / "train_log.jsonl") if "eval_seconds" in r]
    assert [(r["step"], r["eval_seconds"]) for r in rows] == [(0, 5.0), (10, 5.0), (20, 5.0), (30, 5.0)]
    assert all("cos_teacher" in r for r in rows)


def test_time_budgeted_run_resumes_on_its_fitted_schedule(tmp_path, tiny, tokenizer, ids, clock):
    teacher = tiny("llama")
    whole = _budgeted(tmp_path / "a", tiny, tokenizer, ids, clock, lambda s: 1.0, teacher=teacher)
    whole.run()
    half = _budgeted(tmp_path / "b", tiny, tokenizer, ids, clock, lambda s: 1.0, teacher=teacher)
    stop_after(half, 50)
    assert half.run()["step"] == 50
    resumed = _budgeted(tmp_path / "b", tiny, tokenizer, ids, clock, lambda s: 1.0, teacher=teacher, resume=True)
    assert (resumed.total_steps, resumed.eval_every, resumed.budget_from) == (100, 20, [5, 5.0])
    assert resumed.run()["steps"] == 100
    for k, v in whole.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[k], v), k
    assert _lrs(whole) == _lrs(resumed)


def test_time_budget_must_be_positive(tmp_path):
    with pytest.raises(QuantGPTError, match="time-budget must be a positive"):
        _cfg(tmp_path, time_budget=0)


def test_the_schedule_is_warmup_then_cosine_or_linear_to_zero(tmp_path):
    """3% warmup of 100 steps (3 steps rising to the peak), then the decay over the 97 left, reaching 0 at the end."""
    cos, lin = _cfg(tmp_path, steps=100), _cfg(tmp_path, steps=100, schedule="linear")
    assert [lr_factor(cos, s, 100) for s in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert lr_factor(cos, 50, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 97)))
    assert lr_factor(lin, 50, 100) == pytest.approx(1 - 47 / 97)
    assert lr_factor(cos, 100, 100) == lr_factor(lin, 100, 100) == 0.0
    assert lr_factor(_cfg(tmp_path, steps=100, schedule="constant"), 99, 100) == 1.0


def test_the_default_evaluations_are_four_inside_and_one_at_the_end(tmp_path, tiny, tokenizer, ids):
    assert [five_evals(t) for t in (2916, 3000, 12, 3, 1)] == [584, 600, 3, 1, 1]  # 2916 // 5 = 583: 2915 and 2916
    Trainer(_cfg(tmp_path, steps=12, eval_every=0), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).run()
    rows = read_log(tmp_path / "run" / "train_log.jsonl")
    assert [r["step"] for r in rows if "cos_student" in r] == [0, 3, 6, 9, 12]


def test_cosine_contrastive_schedule_lowers_lambda_to_zero(tmp_path, tiny, tokenizer, ids):
    """--cont-schedule cosine: lambda = w (1 + cos(pi step / steps)) / 2 (no warmup), and the step's loss is
    kd + lambda cont with it (lm_weight is 0 at 2 bits); constant keeps w."""
    tr = Trainer(_cfg(tmp_path, steps=100, cont_weight=0.2, cont_schedule="cosine"), teacher=tiny("llama"),
                 tokenizer=tokenizer, train_ids=ids)
    assert [tr.cont_lambda(s) for s in (0, 25, 50, 100)] == pytest.approx(
        [0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.0])
    x = tr.batch(0, 0)
    for step, lam in ((30, 0.1 * (1 + math.cos(math.pi * 0.3))), (100, 0.0)):
        tr.step = step
        p = tr.losses(x)
        assert p["cont"] > 0
        assert p["loss"].item() == pytest.approx((p["kd"] + lam * p["cont"]).item(), rel=1e-5)
    const = _cfg(tmp_path, steps=100, cont_weight=0.2)
    assert const.cont_schedule == "constant"
    assert Trainer(const, teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids).cont_lambda(99) == 0.2
    with pytest.raises(QuantGPTError, match="unknown contrastive schedule 'linear'"):
        _cfg(tmp_path, cont_schedule="linear")


def test_a_training_step_quantizes_the_tied_table_once(tmp_path, tiny, tokenizer, ids):
    """The trainer keeps the student's quantized tables (found once, not by walking the modules every step), and a
    step's lookup and tied head share one fake-quantized table: its quantizer runs once a step, and afterwards the
    table is dropped so the next step sees the updated weights."""
    from quantgpt.modules import quant_embeddings

    tr = Trainer(_cfg(tmp_path), teacher=tiny("llama"), tokenizer=tokenizer, train_ids=ids)
    emb = tr.student.get_input_embeddings()
    assert tr._tables == quant_embeddings(tr.student) == [emb]
    calls = []
    emb.weight_quantizer.register_forward_hook(lambda *a: calls.append(1))
    tr.train_step()
    tr.train_step()
    assert len(calls) == 2 and emb._shared is None
