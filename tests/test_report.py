"""The study runner on a tiny model, and the report it feeds."""
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantgpt.cli import main
from quantgpt.errors import QuantGPTError
from quantgpt.report import make_report
from quantgpt.train_config import TrainConfig

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_study.py"


def test_study_then_report(tmp_path, model_dir, capsys):
    out = tmp_path / "study.jsonl"
    cmd = [sys.executable, str(STUDY), "--model", str(model_dir), "--only", "float", "rtn@4-4-8", "quantgpt@2-2-8",
           "pact@2-2-8", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-seq-len", "64",
           "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    by = {x["name"]: x for x in rows}
    assert sorted(by) == ["float", "pact@2-2-8", "quantgpt@2-2-8", "rtn@4-4-8"]
    for x in rows:
        assert {"method", "bits", "perplexity", "accuracy", "tokens_trained", "wall_seconds", "device", "commit"} <= set(x)
        assert sum(x["cos_hist"]) == 64 * 63 // 2  # every distinct pair of the 64-token window
    q = by["quantgpt@2-2-8"]
    assert q["tokens_trained"] == 2 * 2 * 32 and Path(q["train_log"]).is_file() and by["rtn@4-4-8"]["tokens_trained"] == 0
    assert q["run_seconds"] > 0 and q["run_seconds"] >= q["train_seconds"]  # the whole run (setup, evaluations, writing) and its steps
    assert q["run_seconds_all"] >= q["run_seconds"]  # one segment here: the same, up to rounding
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["figures"]) == {"perplexity_vs_bits.png", "loss_curves.png", "gamma.png", "homogeneity.png"}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "quantgpt@2-2-8" in md and "homogeneity.png" in md and "## Best perplexity of each method (128 training" in md
    assert "| halves |" in md
    assert "<table>" in (tmp_path / "report" / "report.html").read_text()

    # --set overrides every training run's config (given twice, both apply) and --tag names the variant; results append
    r = subprocess.run(cmd[:5] + ["quantgpt@2-2-8", "--set", "grid=full", "--set", "group_size=8", "--tag", "g8full"] + cmd[9:],
                       capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["name"] == "quantgpt@2-2-8+g8full" and len(out.read_text().splitlines()) == 5
    assert last["config"]["grid"] == "full" and last["config"]["granularity"] == "group" and last["config"]["group_size"] == 8
    from quantgpt.report import scales

    assert scales(last) == "g8 full scales8 act32 emb8" and scales(by["rtn@4-4-8"]) == ""
    assert scales({**last, "bits": "16-16-16"}) == ""  # a float run has no scales, whatever its config says
    from quantgpt.report import weight_bits

    # stored bits per decoder weight: 2 + 8/8 for one 8-bit scale per 8 (2-bit mds's default), 2 + 16/8 with fp16
    # scales; asym and min-max add a zero point (centre) per group: 2 + 16/16 for the 2-bit default's 16-groups
    assert weight_bits(last) == 3.0 and weight_bits(by["quantgpt@2-2-8"]) == 3.0
    assert weight_bits({"bits": "2-2-8", "config": {"granularity": "group", "group_size": 8, "grid": "full",
                                                    "scale_bits": 16}}) == 4.0
    assert weight_bits(by["rtn@4-4-8"]) == 4 + 32 / 64 and weight_bits(by["float"]) is None
    assert weight_bits({"bits": "4-4-8", "config": {"granularity": "channel", "grid": "sym"}}) == 4.0

    # --resume continues a run from its checkpoint (here: extends the finished 2-step run to 4 steps)
    r = subprocess.run(cmd[:5] + ["quantgpt@2-2-8", "--steps", "4", "--resume"] + cmd[11:],
                       capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["name"] == "quantgpt@2-2-8" and last["resumed"] and last["tokens_trained"] == 4 * 2 * 32

    # a row carrying a note (a run known to be invalid) is listed with it, and left out of the plots
    lines = out.read_text().splitlines()
    flagged = {**json.loads(lines[-1]), "note": "invalid: trained with a known bug", "held_out_perplexity": 123.25,
               "commit": "8f0d29b6f8080ebc5044fe6b572977d9b13f1408"}  # a full hash, as a sweep may record it
    out.write_text("\n".join(lines[:-1] + [json.dumps(flagged)]) + "\n")
    assert main(["report", str(out), "--out", str(tmp_path / "report2"), "--json"]) == 0
    capsys.readouterr()
    md = (tmp_path / "report2" / "report.md").read_text()
    assert "| note |" in md and "invalid: trained with a known bug" in md
    assert "| 8f0d29b |" in md and "8f0d29b6" not in md  # the table of every run shows a commit as git's short form
    assert "| held_out_perplexity |" in md and "123.2" in md  # its column only once a row has one
    assert "held_out_perplexity" not in (tmp_path / "report" / "report.md").read_text()


def test_every_study_run_is_a_valid_config():
    """Each training run of the study grid (main table, ablations, embedding bits) builds a TrainConfig, and
    the ablations differ from quantgpt@2-2-8 in what they name."""
    sys.path.insert(0, str(STUDY.parent))
    try:
        from paper_study import grid
    finally:
        sys.path.remove(str(STUDY.parent))

    runs = grid()
    cfgs = {n: TrainConfig(**{k: v for k, v in spec.items() if k != "ablation"}).to_dict() for n, spec in runs.items()
            if spec["method"] not in ("float", "rtn", "gptq")}
    base = cfgs["quantgpt@2-2-8"]
    assert cfgs["quantgpt-per-tensor@2-2-8"]["granularity"] == "tensor" and base["granularity"] == "group"
    assert cfgs["quantgpt-no-bank@2-2-8"]["negative_source"] == "batch"
    for name, cfg in cfgs.items():
        if name.startswith("quantgpt-"):
            assert cfg != base, f"{name} is the default run under another name"
    names = list(cfgs)
    same = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if cfgs[a] == cfgs[b]]
    assert not same, f"runs under two names: {same}"
    # fixed alpha differs from the default run in the clip rule alone; pact has no asym grid, so PACT's clip runs
    # on the full grid, as the full-grid ablation does
    assert {k: v for k, v in cfgs["quantgpt-fixed-alpha@2-2-8"].items() if v != base[k]} == {"dynamic_scale": False}
    assert cfgs["quantgpt-pact-clip@2-2-8"]["grid"] == cfgs["quantgpt-full-grid@2-2-8"]["grid"] == "full"


def test_study_runs_side_by_side(tmp_path, model_dir):
    """--jobs N: each run in its own process, N at a time, every row appended whole and marked as sharing."""
    out = tmp_path / "study.jsonl"
    cmd = [sys.executable, str(STUDY), "--model", str(model_dir), "--only", "rtn@4-4-8", "pact@2-2-8", "float",
           "--jobs", "2", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-seq-len", "64",
           "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--tag=-p"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["name"] for x in rows) == ["float+-p", "pact@2-2-8+-p", "rtn@4-4-8+-p"]
    assert all(x["shared_gpu"] == 2 for x in rows)
    assert {p.name for p in (tmp_path / "runs" / "logs").iterdir()} == {"rtn_4-4-8-p.log", "pact_2-2-8-p.log", "float-p.log"}
    assert (tmp_path / "runs" / "pact_2-2-8-p" / "model.safetensors").is_file()

    # --skip-done: runs with a row already are left out, so a sweep cut short goes on where it stopped
    r = subprocess.run(cmd + ["--skip-done"], capture_output=True, text=True,
                       env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0 and "already has a row" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 3


def test_best_runs_compare_methods_at_the_common_budget():
    """The main table keeps each method's best run among those trained on the budget most runs share (and the
    post-training rows); longer runs, ablations and runs noted invalid stay out of it."""
    from quantgpt.report import best_cells, best_runs, md_table

    def row(method, ppl, tokens, **kw):
        return {"method": method, "bits": "2-2-8", "perplexity": ppl, "tokens_trained": tokens, **kw}

    rows = [row("quantgpt", 120.0, 100), row("quantgpt", 110.0, 100), row("quantgpt", 70.0, 300),
            row("quantgpt", 50.0, 100, ablation="no-bank"), row("pact", 105.0, 100, note="bug"), row("pact", 130.0, 100),
            row("gptq", 2e6, 0), {**row("float", 21.6, 0), "bits": "16-16-16"}]
    best = best_runs(rows)
    assert {k: v["perplexity"] for k, v in best.items()} == {
        ("quantgpt", "2-2-8"): 110.0, ("pact", "2-2-8"): 130.0, ("gptq", "2-2-8"): 2e6, ("float", "16-16-16"): 21.6}
    table = md_table(*best_cells(best))
    assert table[0] == "| bits | float | gptq | pact | quantgpt |"
    assert table[2:] == ["| 16-16-16 | 21.6 | - | - | - |", "| 2-2-8 | - | 2.000e+06 | 130 | 110 |"]


def test_best_runs_compare_methods_on_the_common_training_text():
    """Runs are named by their training files (a repeated file counted, paths dropped); a run trained on other text
    than most runs stays out of the best-perplexity tables, and two seeds on different texts are not one group."""
    from quantgpt.report import best_runs, seed_groups, train_text

    base = TrainConfig(bits="2-2-8").to_dict()

    def row(name, ppl, data, seed=0):
        return {"name": name, "method": "quantgpt", "bits": "2-2-8", "perplexity": ppl, "tokens_trained": 100,
                "config": {**base, "train_data": data, "seed": seed}}

    rows = [row("a", 65.0, ["/m/data/corpora"]), row("b", 64.0, ["/x/corpora"], seed=1),
            row("mix", 60.0, ["/m/corpora", "/m/corpora/wiki.txt", "/m/corpora/wiki.txt"], seed=2),
            row("wiki", 59.0, ["/m/wiki.txt"], seed=3), {"method": "rtn", "bits": "2-2-8", "perplexity": 4e5, "tokens_trained": 0}]
    assert [train_text(r) for r in rows] == ["corpora", "corpora", "corpora + wiki.txt x2", "wiki.txt", ""]
    assert {k: v["name"] if "name" in v else v["method"] for k, v in best_runs(rows).items()} == {
        ("quantgpt", "2-2-8"): "b", ("rtn", "2-2-8"): "rtn"}
    assert [[r["name"] for r in g] for g in seed_groups(rows)] == [["a", "b"]]


def test_main_table_is_the_pair_of_budget_and_text_with_most_cells():
    """The main table's budget and text are chosen together: teacher adaptations (an ablation) sharing one text and
    long runs each with its own budget made a budget and a text, each most common alone, that no run had together
    (an empty table). The pair whose runs cover most (method, bits) cells wins; equal cells, the one with more runs."""
    from quantgpt.report import best_runs, main_comparison

    def row(method, tokens, teacher, ppl=25.0, **kw):
        data = {"train_data": ["/m/corpora", "/m/valid_train.txt"]}
        return {"method": method, "bits": "2-2-8" if teacher else "16-16-16", "perplexity": ppl,
                "tokens_trained": tokens, "config": {**data, "model": teacher} if teacher else data, **kw}

    rows = [row("finetune", 10, None, 17.5, ablation="teacher adaptation"),
            row("quantgpt", 55, "runs/ft-a"), row("quantgpt", 55, "runs/ft-a", 25.8),
            row("finetune", 10, None, 17.5, ablation="teacher adaptation"),
            row("quantgpt", 90, "runs/ft-b", 24.8), row("kd", 90, "runs/ft-b", 25.0),
            row("quantgpt", 99, "runs/ft-c", 24.9), row("quantgpt", 99, "runs/ft-c", 24.9)]
    assert main_comparison(rows) == (90, "corpora + valid_train.txt from ft-b")
    assert {k: v["perplexity"] for k, v in best_runs(rows).items()} == {("quantgpt", "2-2-8"): 24.8,
                                                                       ("kd", "2-2-8"): 25.0}
    assert main_comparison(rows[:3]) == (55, "corpora + valid_train.txt from ft-a")  # one cell, the most runs
    assert main_comparison(rows[:1]) == (None, None)  # no compared run: post-training rows only
    assert {k: v["perplexity"] for k, v in best_runs(rows[:1] + [{"method": "rtn", "bits": "2-2-8", "perplexity": 9e5,
                                                                  "tokens_trained": 0}]).items()} == {("rtn", "2-2-8"): 9e5}


def test_other_budgets_and_texts_get_their_own_tables():
    """A (budget, training text) pair with two or more (method, bits) cells gets its own table (with the post-training
    rows of the bits trained there); one with a single cell (say one long run) does not, nor does the main pair."""
    from quantgpt.report import budget_runs, other_tables

    def row(method, bits, ppl, tokens, data=("/m/corpora",), **kw):
        return {"method": method, "bits": bits, "perplexity": ppl, "tokens_trained": tokens,
                "config": {"train_data": list(data)}, **kw}

    style = ("/m/corpora", "/m/valid.txt")
    rows = [row("quantgpt", "2-2-8", 70.0, 100), row("kd", "2-2-8", 71.0, 100), row("pact", "2-2-8", 100.0, 100),
            row("quantgpt", "4-4-8", 22.0, 700), row("kd", "4-4-8", 21.9, 700), row("pact", "4-4-8", 23.8, 700),
            row("quantgpt", "2-2-8", 48.0, 4000), row("kd", "2-2-8", 40.0, 4000, ablation="x"),
            row("quantgpt", "2-2-8", 41.0, 100, style), row("quantgpt", "8-8-8", 17.7, 100, style),
            row("quantgpt", "2-2-8", 32.0, 4000, style),
            {"method": "gptq", "bits": "4-4-8", "perplexity": 32.0, "tokens_trained": 0},
            {"method": "gptq", "bits": "2-2-8", "perplexity": 6e4, "tokens_trained": 0}]
    assert other_tables(rows, 100, "corpora") == [(100, "corpora + valid.txt"), (700, "corpora")]
    b = budget_runs(rows, 700, "corpora")
    assert {k: v["perplexity"] for k, v in b.items()} == {
        ("quantgpt", "4-4-8"): 22.0, ("kd", "4-4-8"): 21.9, ("pact", "4-4-8"): 23.8, ("gptq", "4-4-8"): 32.0}
    b = budget_runs(rows, 100, "corpora + valid.txt")
    assert {k: v["perplexity"] for k, v in b.items()} == {
        ("quantgpt", "2-2-8"): 41.0, ("quantgpt", "8-8-8"): 17.7, ("gptq", "2-2-8"): 6e4}


def test_runs_from_another_teacher_are_another_comparison():
    """Runs distilled from an adapted teacher (a model folder, not the default model) are named by it beside their
    text, so the best-perplexity tables do not set them against runs from the original teacher."""
    from quantgpt.report import best_runs, other_tables, train_text

    def row(method, ppl, model):
        return {"method": method, "bits": "2-2-8", "perplexity": ppl, "tokens_trained": 100,
                "config": {"train_data": ["/m/corpora"], "model": model}}

    rows = [row("quantgpt", 41.0, "smollm2-135m"), row("kd", 41.5, "smollm2-135m"),
            row("quantgpt", 35.0, "runs/study/finetune_16-16-16-style"), row("kd", 36.0, "/x/finetune_16-16-16-style")]
    assert [train_text(r) for r in rows] == ["corpora", "corpora", *["corpora from finetune_16-16-16-style"] * 2]
    assert {k: v["perplexity"] for k, v in best_runs(rows, 100, "corpora").items()} == {
        ("quantgpt", "2-2-8"): 41.0, ("kd", "2-2-8"): 41.5}
    assert other_tables(rows, 100, "corpora") == [(100, "corpora from finetune_16-16-16-style")]
    # compress's own adaptation writes OUT/teacher: named by the run that wrote it, whether a row is that run
    # (its adapt) or was given the folder, so two adaptations of one recipe are two comparisons
    given = row("kd", 36.0, "runs/study/quantgpt_2-2-8/teacher")
    own = {**row("quantgpt", 35.5, "smollm2-135m"), "adapt": {"out": "/y/quantgpt_2-2-8/teacher", "kept": True}}
    other = row("kd", 37.0, "runs/study/quantgpt_4-4-8/teacher")
    assert train_text(given) == train_text(own) == "corpora from the teacher adapted by quantgpt_2-2-8"
    assert train_text(other) == "corpora from the teacher adapted by quantgpt_4-4-8"
    assert other_tables([given, own, other], 100, "corpora") == [(100, "corpora from the teacher adapted by quantgpt_2-2-8")]
    # post-training rows quantized the default model: kept beside its runs, left out of an adapted teacher's table
    ptq = {"method": "gptq", "bits": "2-2-8", "perplexity": 6e4, "tokens_trained": 0}
    assert ("gptq", "2-2-8") in best_runs(rows + [ptq], 100, "corpora")
    assert set(best_runs(rows + [ptq], 100, "corpora from finetune_16-16-16-style")) == {("quantgpt", "2-2-8"),
                                                                                       ("kd", "2-2-8")}
    # ... decided by the runs' teacher, not by the words of the text: a file named "... from ..." is text
    odd = [{**row("quantgpt", 40.0, "smollm2-135m"), "config": {"train_data": ["/m/notes from 2020.txt"]}}]
    assert train_text(odd[0]) == "notes from 2020.txt"
    assert ("gptq", "2-2-8") in best_runs(odd + [ptq], 100, "notes from 2020.txt")


def test_wall_seconds_all_adds_a_resumed_runs_earlier_segments():
    """A resumed run's row times its last process (wall_seconds) and the training segments (run_seconds this one,
    run_seconds_all all of them): end to end is the last process plus the earlier segments."""
    from quantgpt.report import wall_seconds_all

    assert wall_seconds_all({"wall_seconds": 266.8, "run_seconds": 263.6, "run_seconds_all": 778.8}) == 782.0
    assert wall_seconds_all({"wall_seconds": 216.6, "run_seconds": 209.5, "run_seconds_all": 209.5}) == 216.6
    assert wall_seconds_all({"wall_seconds": 2.0}) == 2.0 and wall_seconds_all({}) is None
    # compress's first stage: counted in wall_seconds when this process ran it, added when an earlier one did
    seg = {"wall_seconds": 266.1, "run_seconds": 262.3, "run_seconds_all": 716.9}
    assert wall_seconds_all({**seg, "adapt": {"kept": True, "run_seconds_all": 61.9}}) == 782.6
    assert wall_seconds_all({**seg, "adapt": {"run_seconds_all": 61.9}}) == 720.7


def test_halves_show_each_half_of_the_window():
    from quantgpt.report import halves

    assert halves({"perplexity_halves": [29.1547, 26.1147]}) == "29.15 / 26.11" and halves({}) == ""


def test_seed_groups_match_runs_that_differ_only_by_seed():
    """Runs that differ by their seed (and names, folders, speed-only settings such as the teacher cache) form a
    group with their mean and range; another setting, budget or ablation does not join. A key an older row's
    config lacks takes TrainConfig's default (dynamic_scale True), so old and new rows still match."""
    from quantgpt.report import seed_cells, seed_groups

    base = TrainConfig(bits="2-2-8").to_dict()
    old = {k: v for k, v in base.items() if k != "dynamic_scale"}  # a row from before the key existed

    def row(name, ppl, tokens=100, ablation=None, **cfg):
        return {"name": name, "method": "quantgpt", "bits": "2-2-8", "perplexity": ppl, "tokens_trained": tokens,
                "ablation": ablation, "config": {**base, **cfg}}

    rows = [{**row("q0", 69.4), "config": {**old, "out": "runs/a"}},
            row("q1", 68.4, seed=1, teacher_cache=True, cudagraphs=False),  # a speed-only key, since removed
            row("q2", 64.8, seed=2, embedding_group_size=16),
            row("q3", 60.0, tokens=300, seed=1), row("fixed", 80.0, ablation="fixed-alpha", seed=1),
            row("fixed0", 81.0, ablation="fixed-alpha", dynamic_scale=False),
            row("fixed1", 79.0, ablation="fixed-alpha", dynamic_scale=False, seed=1),
            {"name": "rtn", "method": "rtn", "bits": "2-2-8", "perplexity": 4e5, "tokens_trained": 0}]
    groups = seed_groups(rows)
    assert [[r["name"] for r in g] for g in groups] == [["q0", "q1"], ["fixed0", "fixed1"]]
    head, cells = seed_cells(groups)
    assert head == ["runs", "bits", "training tokens", "seeds", "perplexity", "mean", "range"]
    assert cells[0] == ["q0, q1", "2-2-8", "100", "0, 1", "69.4, 68.4", "68.9", "1"]


def _report_md(rows: list[dict], tmp_path) -> str:
    """The report.md that make_report writes for ``rows`` (as a results file)."""
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_report(results, tmp_path / "out")
    return (tmp_path / "out" / "report.md").read_text()


def test_repeat_groups_pool_a_setting_over_lengths_seeds_and_sessions(tmp_path):
    """Runs of one setting at lengths within 25% (steps, time budget), seeds and sessions' teachers of one recipe
    (finetune_16-16-16-s28 and -s29) form one group, with each run's steps, the mean and range and the held-out mean;
    another temperature, a noted run, or another teacher does not join; a group that is only seeds at one length is
    left to the seeds table. The report lists the group."""
    from quantgpt.report import repeat_cells, repeat_groups

    base = TrainConfig(bits="2-2-8", batch_size=2, seq_len=8).to_dict()

    def row(name, ppl, steps, held=None, note=None, teacher="runs/finetune_16-16-16-s28", **cfg):
        r = {"name": name, "method": "quantgpt", "bits": "2-2-8", "perplexity": ppl, "tokens_trained": 16 * steps,
             "config": {**base, "model": teacher, "train_data": ["corpora"], "steps": steps, **cfg}}
        return {**r, **({"held_out_perplexity": held} if held else {}), **({"note": note} if note else {})}

    rows = [row("a", 25.0, 3023, held=26.2, time_budget=518.0), row("b", 24.8, 2755, teacher="/x/finetune_16-16-16-s29"),
            row("c", 25.2, 3083, held=26.0, seed=1, time_budget=600.0), row("t2", 24.7, 2970, temperature=2.0),
            row("short", 25.3, 1812, note="in the time left"), row("other", 26.0, 3023, teacher="runs/other"),
            row("long", 24.9, 4500), row("long2", 24.95, 4600, seed=2), row("shorter", 25.5, 2000),
            row("s0", 30.0, 600, tau=0.2), row("s1", 31.0, 600, tau=0.2, seed=1)]
    groups = repeat_groups(rows)
    # 2000 steps is more than 25% short of 2755, and 4500 more than 25% past it: each length its own group
    assert [[r["name"] for r in g] for g in groups] == [["a", "b", "c"], ["long", "long2"]]
    head, cells = repeat_cells(groups)
    assert head[3:] == ["steps", "seeds", "perplexity", "mean", "range", "held out, mean (runs)"]
    assert cells[0][3:] == ["3023, 2755, 3083", "0, 0, 1", "25, 24.8, 25.2", "25", "0.4", "26.1 (2)"]
    md = _report_md(rows, tmp_path)
    assert "## Repeats of one setting" in md and "| a, b, c | quantgpt | 2-2-8 | 3023, 2755, 3083 |" in md


def test_paired_cells_compare_settings_window_by_window(tmp_path):
    """Two repeats of quantgpt (their windows averaged) against one kd run: exp(mean difference) - 1 and twice its
    standard error over the windows, on the test and the held-out windows; a row at other bits, one without
    windows and one with another number of windows pair with nothing. The report shows the table."""
    from quantgpt.report import paired_cells

    base = TrainConfig(bits="2-2-8", batch_size=2, seq_len=8).to_dict()

    def row(name, method, windows, steps=3000, bits="2-2-8", held=None, **cfg):
        r = {"name": name, "method": method, "bits": bits, "perplexity": 25.0, "tokens_trained": 16 * steps,
             "config": {**base, "model": "runs/finetune_16-16-16-s1", "train_data": ["c"], "steps": steps, **cfg}}
        return {**r, **({"window_nll": windows} if windows else {}), **({"held_out_window_nll": held} if held else {})}

    rows = [row("q0", "quantgpt", [1.0, 2.0, 3.0, 4.0], held=[1.0, 1.0]),
            row("q1", "quantgpt", [1.2, 2.2, 3.2, 4.2], steps=2800, seed=1, held=[1.2, 1.4]),
            row("kd", "kd", [1.0, 2.1, 3.0, 4.1], held=[1.0, 1.0]),
            row("q4", "quantgpt", [1.0, 2.0, 3.0, 4.0], bits="4-4-8"), row("none", "pact", None),
            row("short", "lsq", [1.0, 2.0])]
    head, cells = paired_cells(rows)
    assert head == ["A", "B", "bits", "runs", "test windows", "test: A against B", "held out: A against B"]
    # test: differences 0.1, 0, 0.1, 0 (mean 0.05, sample sd 0.0577); held out: 0.1 and 0.2
    se = 2 * (0.01 / 3 / 4) ** 0.5
    assert cells == [["q0 and 1 more", "kd", "2-2-8", "2 / 1", "4",
                      f"+{100 * (math.exp(0.05) - 1):.2f}% (2 SE {100 * se:.2f}%)",
                      f"+{100 * (math.exp(0.15) - 1):.2f}% (2 SE {200 * (0.005 / 2) ** 0.5:.2f}%)"]]
    md = _report_md(rows, tmp_path)
    assert "## Paired comparisons on the same windows" in md and "| q0 and 1 more | kd | 2-2-8 |" in md


def test_frequency_table_gives_each_runs_nll_by_group(tmp_path):
    """Runs with paper_study's group NLLs get a table: the groups' shares of the test tokens, then each run's test /
    held-out NLL per group; runs without them are left out, and with none the report has no such section."""
    from quantgpt.report import frequency_cells

    names = ["0-50%", "50-90%", "90-99%", "99-100%", "unseen"]
    rows = [{"name": "q", "method": "quantgpt", "bits": "2-2-8", "perplexity": 25.0, "freq_groups": names,
             "group_nll": [1.5, 3.25, 5.0, 7.0, None], "group_tokens": [600, 300, 80, 20, 0],
             "held_out_group_nll": [1.6, 3.5, 5.5, 8.0, None]},
            {"name": "kd", "method": "kd", "bits": "2-2-8", "perplexity": 25.2}]
    head, cells = frequency_cells(rows)
    assert head == ["run", "bits"] + [f"{n}: test / held out" for n in names]
    assert cells == [["share of the test tokens", "", "60.0%", "30.0%", "8.0%", "2.0%", "0.0%"],
                     ["q", "2-2-8", "1.5 / 1.6", "3.25 / 3.5", "5 / 5.5", "7 / 8", "- / -"]]
    md = _report_md(rows, tmp_path)
    assert "## Loss by the target's frequency in the training text" in md and "| q | 2-2-8 | 1.5 / 1.6 |" in md
    (tmp_path / "b").mkdir()
    assert "frequency in the training text" not in _report_md(rows[1:], tmp_path / "b")


def test_gap_table_gives_each_runs_loss_to_its_teacher_by_group(tmp_path):
    """A run whose teacher (its config's model folder) is another row with groups gets its NLL less the teacher's
    per group, test / held out, and each group's share of the test gap: share of the targets times the gap, over
    the sum (here 3 x 0.5 and 1 x 2.0 of 3.5: 43% and 57%). A run from a teacher not in the results, and the
    teacher itself, get no line."""
    from quantgpt.report import gap_cells

    names = ["0-50%", "rest"]

    def row(name, out, model, test, held):
        return {"name": name, "method": "kd", "bits": "2-2-8", "perplexity": 20.0, "freq_groups": names,
                "group_nll": test, "group_tokens": [3, 1], "held_out_group_nll": held,
                "config": {"out": f"runs/study/{out}", "model": model, "train_data": ["a.txt"]}}

    rows = [row("teacher", "ft-s1", "smollm2-135m", [1.0, 2.0], [1.1, 2.5]),
            row("student", "q-s1", "runs/study/ft-s1", [1.5, 4.0], [1.2, 3.0]),
            row("orphan", "q-s2", "runs/study/ft-s2", [1.5, 4.0], [1.2, 3.0])]
    head, cells = gap_cells(rows)
    assert head == ["run", "teacher", "0-50%: test / held out (share)", "rest: test / held out (share)"]
    assert cells == [["student", "teacher", "0.500 / 0.100 (43%)", "2.000 / 0.500 (57%)"]]
    assert gap_cells(rows[:1]) == ([], [])
    assert "## The loss to the teacher by frequency group" in _report_md(rows, tmp_path)


def test_report_bad_input(tmp_path):
    bad = tmp_path / "r.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(QuantGPTError, match="not a JSON line"):
        make_report(bad, tmp_path / "o")
    with pytest.raises(QuantGPTError, match="cannot read"):
        make_report(tmp_path / "missing.jsonl", tmp_path / "o")


def test_report_reads_several_result_files(tmp_path):
    """A study made over several sessions: the files are read as one (rows of both in the tables)."""
    def row(name, method, ppl):
        return json.dumps({"name": name, "method": method, "bits": "2-2-8", "perplexity": ppl, "accuracy": 0.1,
                           "tokens_trained": 100})
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(row("pact@2-2-8", "pact", 130.0) + "\n")
    b.write_text(row("quantgpt@2-2-8", "quantgpt", 110.0) + "\n")
    r = make_report([a, b], tmp_path / "o")
    assert r["runs"] == 2
    md = (tmp_path / "o" / "report.md").read_text()
    assert "| 2-2-8 | 130 | 110 |" in md
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "o2")]) == 0


def test_report_of_ablations_only_has_no_main_table(tmp_path):
    """Every run an ablation: the report lists them, with no empty best-perplexity table or figure against bits."""
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"name": "ft", "method": "finetune", "bits": "16-16-16", "perplexity": 17.5,
                             "tokens_trained": 100, "ablation": "teacher adaptation"}) + "\n")
    r = make_report(a, tmp_path / "o")
    md = (tmp_path / "o" / "report.md").read_text()
    assert r["figures"] == [] and "## Best" not in md and "| ft | finetune | 16-16-16 |" in md


def test_report_reads_gzipped_train_logs(tmp_path):
    """A row's train_log may be a gzipped copy (benchmarks/results keeps them so): read_log gives its rows, and the
    report draws its loss curve and gamma from it as from the plain file."""
    from quantgpt.plots import read_log

    log = [{"step": s, "kd": 2.0 / (s + 1), "quant_params": {"m": 2.0 + s / 10}} for s in range(5)]
    gz = tmp_path / "run.train_log.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in log).encode()))
    assert read_log(gz) == log
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"name": "q", "method": "quantgpt", "bits": "2-2-8", "perplexity": 25.0,
                             "tokens_trained": 100, "train_log": str(gz)}) + "\n")
    assert make_report(a, tmp_path / "o")["figures"] == ["perplexity_vs_bits.png", "loss_curves.png", "gamma.png"]


def test_study_rows_run_compress_with_its_adaptation(tmp_path, model_dir):
    """paper_study runs a row as compress does: the teacher adapted first (forced here below the 300-step
    threshold), the row's config naming the adapted folder and its `adapt` the first stage."""
    from quantgpt.report import train_text

    out = tmp_path / "study.jsonl"
    cmd = [sys.executable, str(STUDY), "--model", str(model_dir), "--only", "kd@2-2-8", "--steps", "2",
           "--batch-size", "2", "--seq-len", "32", "--eval-seq-len", "64", "--device", "cpu", "--set", "adapt_steps=2",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--resume"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())
    teacher = tmp_path / "runs" / "kd_2-2-8" / "teacher"
    assert row["adapt"]["steps"] == 2 and row["adapt"]["out"] == str(teacher) and row["config"]["model"] == str(model_dir)
    assert (teacher / "finetune.json").is_file() and train_text(row) == "sample from the teacher adapted by kd_2-2-8"
