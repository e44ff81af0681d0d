"""Data parallelism (distributed.py): two CPU processes under torchrun (gloo) train as one process does, and the
contrastive bank and negatives are the whole batch's on every rank."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from quantgpt.distributed import share
from quantgpt.errors import QuantGPTError
from quantgpt.models import load_float
from quantgpt.plots import read_log
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer

CHILD = r'''
import json, os, sys
import torch
from safetensors.torch import load_file, save_file
from conftest import step_seconds, stop_after  # the tests' folder is on PYTHONPATH (_child)
from quantgpt.models import load_float
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import Trainer

torch.set_num_threads(1)
model, data, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ids = load_file(data)["ids"]
teacher, tok = load_float(model)
rank = os.environ["RANK"]
costs = os.environ.get("STEP_SECONDS")  # each rank's fake clock: its steps take this many seconds
if costs:
    import quantgpt.trainer as trainer_mod
    now = [0.0]
    trainer_mod._clock = lambda: now[0]
tr = Trainer(TrainConfig(**cfg), teacher=teacher, tokenizer=tok, train_ids=ids, eval_ids=ids[:1024])
if costs:
    step_seconds(tr, now, lambda s: float(costs.split(",")[int(rank)]))
stop_at = int(os.environ.get("STOP_RANK1_AT", "0"))
if stop_at and rank == "1":  # a signal reaching rank 1 alone, during its step stop_at
    stop_after(tr, stop_at)
r = tr.run()


def report(row):  # a file per rank: the two ranks' stdout lines can interleave
    with open(os.path.join(cfg["out"], f"result{rank}.json"), "w") as f:
        json.dump(row, f)


if "interrupted" in r:
    report({"rank": rank, "interrupted": r["step"]})
    sys.exit(0)
state = {k: v.clone() for k, v in tr.student.state_dict().items()}  # tied tensors: copies
state.update({"bank": tr.contrastive.bank, "seen": tr.contrastive.seen.to(torch.uint8)})
save_file(state, os.path.join(cfg["out"], f"rank{rank}.safetensors"))
report({"rank": rank, "steps": r["steps"], "best": r["best"]})
'''


def _torchrun(*argv, **env) -> subprocess.CompletedProcess:
    """``argv`` under torchrun on two CPU processes (one thread each, ``env`` added); it must succeed."""
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        *map(str, argv)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _child(tmp_path, tokenizer, cfg, **env) -> tuple[torch.Tensor, subprocess.CompletedProcess]:
    """CHILD on two processes with the sample text's first 64 blocks of 32 tokens; returns the tokens and the run."""
    from quantgpt.data import tokenize_files

    ids = tokenize_files("sample", tokenizer, use_cache=False)[: 64 * 32]
    save_file({"ids": ids.contiguous()}, str(tmp_path / "ids.safetensors"))
    (tmp_path / "child.py").write_text(CHILD)
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return ids, _torchrun(tmp_path / "child.py", cfg["model"], tmp_path / "ids.safetensors", json.dumps(cfg),
                          PYTHONPATH=path, **env)


def _cfg(out, **kw):
    base = dict(model="tiny", bits="2-2-8", steps=4, seq_len=32, batch_size=4, out=str(out), log_every=1,
                save_every=100, eval_every=2, progress=False, device="cpu", negatives=64, compile=False)
    base.update(kw)
    return base


def _results(out, key: str) -> list:
    """``key`` of each rank's result file (the child's report), sorted."""
    return sorted(json.loads((out / f"result{i}.json").read_text())[key] for i in (0, 1))


def _losses(out):
    rows = read_log(out / "train_log.jsonl")
    return [(r["step"], r["kd"], r["cont"]) for r in rows if "kd" in r]


def test_two_processes_train_as_one(tmp_path, model_dir, tokenizer):
    ids, _ = _child(tmp_path, tokenizer, _cfg(tmp_path / "two", model=str(model_dir)))
    teacher, tok = load_float(str(model_dir))
    one = Trainer(TrainConfig(**_cfg(tmp_path / "one", model=str(model_dir))), teacher=teacher, tokenizer=tok,
                  train_ids=ids, eval_ids=ids[:1024])
    r = one.run()
    ranks = [load_file(str(tmp_path / "two" / f"rank{i}.safetensors")) for i in (0, 1)]
    for k in ranks[0]:  # the ranks hold one model and one bank: averaged gradients, gathered bank updates
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    state = one.student.state_dict()
    worst = max((ranks[0][k].float() - state[k].float()).abs().max().item() for k in state)
    assert worst < 1e-4, worst  # one process's steps, up to summation order (Adam divides by tiny moments)
    assert torch.allclose(ranks[0]["bank"], one.contrastive.bank, atol=1e-5)
    assert torch.equal(ranks[0]["seen"].bool(), one.contrastive.seen)
    two, single = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert [s for s, *_ in two] == [s for s, *_ in single] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    for (_, kd2, c2), (_, kd1, c1) in zip(two, single):  # the logged losses are the whole batch's
        assert kd2 == pytest.approx(kd1, rel=1e-4) and c2 == pytest.approx(c1, rel=1e-4)
    assert (tmp_path / "two" / "quantgpt.json").is_file()  # rank 0 wrote the packed folder
    assert r["steps"] == 4


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(tmp_path, model_dir, tokenizer):
    """Rank 1 alone is signalled after step 2; the step-3 sync shares it, so both ranks stop after step 3 (none
    waits for the other in a collective) and rank 0 saves that step's checkpoint."""
    _child(tmp_path, tokenizer, _cfg(tmp_path / "two", model=str(model_dir), steps=6), STOP_RANK1_AT="2")
    assert _results(tmp_path / "two", "interrupted") == [3, 3]
    assert json.loads((tmp_path / "two" / "checkpoint" / "state.json").read_text())["step"] == 3


def test_ranks_with_different_clocks_fit_one_step_count(tmp_path, model_dir, tokenizer):
    """time_budget under torchrun: rank 0's steps take 1 s, rank 1's 3 s. The fit reads their mean (2 s a step),
    so both fit 50 steps of a 100 s budget at the probe (25 + 50 / 2) and end there together; rank 0's clock alone
    would fit 100, rank 1's 33."""
    _child(tmp_path, tokenizer, _cfg(tmp_path / "two", model=str(model_dir), steps=400, time_budget=100, eval_every=0),
           STEP_SECONDS="1,3")
    assert _results(tmp_path / "two", "steps") == [50, 50]
    ranks = [load_file(str(tmp_path / "two" / f"rank{i}.safetensors")) for i in (0, 1)]
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k


def test_share_splits_the_batch_evenly(monkeypatch):
    import quantgpt.distributed as d

    assert share([3, 1, 4, 1]) == [3, 1, 4, 1]  # one process: the whole batch
    monkeypatch.setattr(d, "world", lambda: 2)
    monkeypatch.setattr(d, "rank", lambda: 1)
    assert d.share([3, 1, 4, 1]) == [4, 1]
    with pytest.raises(QuantGPTError, match="does not split over 2"):
        d.share([3, 1, 4])


def test_compress_cli_under_torchrun_adapts_then_quantizes(tmp_path, model_dir):
    """Both of compress's stages across two processes: rank 0 writes the adapted teacher, the other rank waits for
    it before loading it, and one JSON line reports the run."""
    from quantgpt.models import load_any

    out = tmp_path / "run"
    p = _torchrun("-m", "quantgpt.cli", "compress", model_dir, "--bits", "4-4-8", "--steps", "2", "--adapt-steps",
                  "2", "--seq-len", "32", "--batch-size", "4", "--train-data", "sample", "--device", "cpu", "--quiet",
                  "--json", "--out", out)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1, p.stdout
    r = json.loads(lines[0])
    assert r["steps"] == 2 and r["adapt"]["steps"] == 2
    assert (out / "teacher" / "finetune.json").is_file()
    load_any(str(out))  # the folder loads


def test_paper_study_under_torchrun_writes_one_row_per_run(tmp_path, model_dir):
    """The study script as goals.sh's PART=3 runs it: rank 0 alone tests and appends; a post-training row is
    measured once, by rank 0."""
    study = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_study.py"
    out = tmp_path / "rows.jsonl"
    _torchrun(study, "--model", model_dir, "--only", "quantgpt@2-2-8", "rtn@4-4-8", "--steps", "4", "--seq-len", "32",
              "--eval-seq-len", "64", "--batch-size", "4", "--train-data", "sample", "--eval-data", "sample-eval",
              "--test-data", "sample-eval", "--device", "cpu", "--runs-dir", tmp_path / "runs", "--out", out)
    rows = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["quantgpt@2-2-8", "rtn@4-4-8"]
    assert rows["quantgpt@2-2-8"]["processes"] == 2 and rows["rtn@4-4-8"]["processes"] == 1
    assert rows["quantgpt@2-2-8"]["tokens_trained"] == 4 * 4 * 32
