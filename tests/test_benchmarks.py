"""Smoke tests of the benchmark scripts whose GPU runs cannot be repeated here: each variant must at least run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


def test_train_speed_variants_run(tmp_path, model_dir):
    """train_speed.py's variants each take training steps through the trainer's own step (on the CPU, eager): the
    plain loop patched in as the trainer's loss, the fused losses, and the teacher cache (whose row gives the
    cache's size). A variant that fails records an error row instead of stopping the script, so check for it."""
    out = tmp_path / "speed.jsonl"
    r = subprocess.run([sys.executable, str(SPEED), "--model", str(model_dir), "--data", "sample", "--steps", "2",
                        "--warmup", "1", "--batch-size", "2", "--seq-len", "32", "--variants", "plain", "fused", "cached",
                        "--out", str(out)], capture_output=True, text=True,
                       env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["variant"] for x in rows] == ["plain", "fused", "cached"]
    assert all("error" not in x and x["tok_per_s"] > 0 for x in rows), rows
    assert rows[2]["teacher_cache_gib"] > 0 and "teacher_cache_gib" not in rows[1]


def test_benchmark_scripts_import_and_parse():
    """Every argparse benchmark script gets as far as --help (imports and helpers it takes from other scripts
    resolve), all in one process. init_probe.py reads its arguments without argparse and is left out."""
    scripts = sorted(p for p in SPEED.parent.glob("*.py") if p.name != "init_probe.py")
    code = ("import runpy, sys\n"
            f"sys.path.insert(0, {str(SPEED.parent)!r})\n"
            f"for s in {[str(p) for p in scripts]!r}:\n"
            "    sys.argv = [s, '--help']\n"
            "    try:\n"
            "        runpy.run_path(s, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), (s, e.code)\n"
            "    print('ok', s)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("ok ") == len(scripts) >= 5


def test_study_adapts_the_teacher_then_compresses_from_it(tmp_path, model_dir):
    """paper_study's two-stage protocol: finetune@16-16-16 writes the fine-tuned float model as a transformers
    folder and a row for it; a second study run takes that folder as --model (teacher and starting point)."""
    study = SPEED.parent / "paper_study.py"
    out, runs = tmp_path / "study.jsonl", tmp_path / "runs"
    common = ["--train-data", "sample", "--eval-data", "sample-eval", "--test-data", "sample-eval", "--steps", "3",
              "--seq-len", "32", "--batch-size", "2", "--eval-seq-len", "64", "--device", "cpu",
              "--runs-dir", str(runs), "--out", str(out), "--set", "eval_tokens=256", "negatives=16"]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "QG_COMMIT": "test"}
    for model, only in ((model_dir, "finetune@16-16-16"), (runs / "finetune_16-16-16", "quantgpt@2-2-8")):
        r = subprocess.run([sys.executable, str(study), "--model", str(model), "--only", only, *common],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["name"], x["method"], x["bits"]) for x in rows] == [
        ("finetune@16-16-16", "finetune", "16-16-16"), ("quantgpt@2-2-8", "quantgpt", "2-2-8")]
    assert rows[1]["config"]["model"] == str(runs / "finetune_16-16-16")
    assert all(x["perplexity"] > 1 and x["tokens_trained"] == 3 * 2 * 32 for x in rows)
    # the held-out text in the test's windows: here the same file as the test, so the same number
    assert all(x["held_out_perplexity"] == pytest.approx(x["perplexity"], rel=1e-6) for x in rows)
    assert all(x["held_out_tokens"] == x["tokens_scored"] for x in rows)
    # each test window's mean NLL, for the report's paired comparison: they average to the row's perplexity
    for x in rows:
        assert x["host_cpu"] and x["host_cores"] >= 1
        assert len(x["window_nll"]) == len(x["held_out_window_nll"]) >= 1
        assert math.exp(sum(x["window_nll"]) / len(x["window_nll"])) == pytest.approx(x["perplexity"], rel=1e-4)
        # the NLL by the targets' training frequency, on both texts: the groups' tokens are the scored ones
        assert x["freq_groups"][-1] == "unseen" and sum(x["group_tokens"]) == x["tokens_scored"]
        assert sum(x["held_out_group_tokens"]) == x["held_out_tokens"] and len(x["held_out_group_nll"]) == len(x["group_nll"])


def test_step_profile_variants_and_kernel_table_on_the_cpu(tmp_path):
    """step_profile's flags, which only a GPU session uses, work before that session: a +unshared+synced+evals+static variant,
    a failing one (its error recorded, the next still timed), an inductor setting, the kernel table beside the rows."""
    script = Path(__file__).parents[1] / "benchmarks" / "step_profile.py"
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--layers", "1", "--vocab", "512", "--batch-size", "1",
                        "--seq-len", "16", "--blocks", "4", "--steps", "1", "--warmup", "1", "--variants",
                        "kd@2-2-8+unshared+synced+evals+static", "kd@1-1-8", "quantgpt@2-2-8", "--inductor", "combo_kernels=True", "--kernels", "5", "--out", str(out)],
                       capture_output=True, text=True, cwd=script.parent,
                       env={**os.environ, "PYTHONPATH": str(script.parents[1] / "src")})
    assert r.returncode == 0, r.stderr[-2000:]
    row, bad, qrow = [json.loads(line) for line in out.read_text().splitlines()]
    # a variant that fails is a row with its error, and the variants after it still run
    assert bad["variant"] == "kd@1-1-8" and "bad bit setting" in bad["error"] and "step_ms" not in bad
    assert row["variant"] == "kd@2-2-8+unshared+synced+evals+static" and row["inductor"] == ["combo_kernels=True"]
    assert qrow["variant"] == "quantgpt@2-2-8"
    assert row["step_ms"] > 0 and abs(row["parts_ms"] - row["step_ms"]) < 0.2 * row["step_ms"]
    assert row["evals_s"] > 0  # the evaluation ran before the timed steps
    assert row["host_cpu"] and row["host_cores"] >= 1 and row["host_py_ms"] > 0  # the host beside the GPU
    # on the CPU the marks are the host's clock, so the host's forward is the forward's span; kd has no prepare
    assert row["host_forward"] == pytest.approx(row["forward"], rel=0.05) and "prepare" not in row
    assert 0 < qrow["host_prepare"] <= qrow["prepare"] < qrow["forward"] == pytest.approx(qrow["host_forward"], rel=0.05)
    table = (tmp_path / "kernels_kd_2-2-8_unshared_synced_evals_static.txt").read_text()
    assert table.startswith("kd@2-2-8+unshared+synced+evals+static cpu") and "aten::" in table


def test_compile_blocks_can_leave_the_embeddings_eager(tiny):
    """compile_blocks(embeddings=False) (step_profile's +eager_embed, the step before the table's quantizer was
    compiled, for a side-by-side timing): the blocks are compiled, the quantized embedding's quantizer is not."""
    from quantgpt.blockwise import block_lists
    from quantgpt.config import QuantConfig
    from quantgpt.convert import quantize_model
    from quantgpt.modules import quant_embeddings
    from quantgpt.trainer import compile_blocks

    model = quantize_model(tiny("llama"), QuantConfig(bits="2-2-8"))
    compile_blocks(model, embeddings=False)
    assert all(b._compiled_call_impl is not None for blocks in block_lists(model) for b in blocks)
    tables = quant_embeddings(model)
    assert tables and all(m.weight_quantizer._compiled_call_impl is None for m in tables)


def test_keep_results_trims_and_gzips_a_sessions_logs(tmp_path):
    """keep_results.py: a run's log keeps every 100th step, its evaluations, its time budget's fits and its last
    step, gzipped under logs/TAG, and its row points there, in study_<gpu>_TAG.jsonl; rows of two GPU kinds are refused."""
    sys.path.insert(0, str(SPEED.parent))
    from keep_results import keep
    from quantgpt.plots import read_log

    run = tmp_path / "root" / "runs" / "study" / "quantgpt_2-2-8-x"
    run.mkdir(parents=True)
    log = [{"step": s, "kd": 1.0 / (s + 1)} for s in range(250)] + [{"step": 125, "eval_ppl": 30.0},
                                                                     {"step": 126, "budget_fit": 250}]
    (tmp_path / "root" / "runs" / "logs").mkdir(parents=True)
    (tmp_path / "root" / "runs" / "logs" / "gpu_17.csv").write_text("17.0,1980, 650.50, 55\n")
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    rows = [{"name": "q", "device": "NVIDIA H100 80GB HBM3", "train_log": "runs/study/quantgpt_2-2-8-x/train_log.jsonl"},
            {"name": "ptq", "device": "NVIDIA H100 80GB HBM3"}]
    study = tmp_path / "study.jsonl"
    study.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = tmp_path / "repo" / "benchmarks" / "results"
    out = keep(study, tmp_path / "root", "s9", results=results)
    assert out == results / "study_h100_s9.jsonl"
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert kept[0]["train_log"] == "benchmarks/results/logs/s9/quantgpt_2-2-8-x.train_log.jsonl.gz"
    assert "train_log" not in kept[1]
    steps = [r["step"] for r in read_log(tmp_path / "repo" / kept[0]["train_log"])]
    assert steps == [0, 100, 200, 249, 125, 126]
    assert (results / "logs" / "s9" / "gpu_17.csv").read_text() == "17.0,1980, 650.50, 55\n"
    study.write_text("".join(json.dumps({**r, "device": d}) + "\n" for r, d in zip(rows, ["H100", "NVIDIA H200"])))
    with pytest.raises(SystemExit, match="keep each device's rows apart"):
        keep(study, tmp_path / "root", "s9", results=results)


def test_compile_cold_runs_each_method_in_its_own_process_on_one_cache(tmp_path):
    """compile_cold.py (eager here, to check the script quickly): a row a run, in the order given, the first on the
    empty cache and the rest on the cache it filled, each with its start's parts timed."""
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, str(SPEED.parent / "compile_cold.py"), "--eager", "--device", "cpu", "--runs",
                        "kd", "quantgpt", "--layers", "1", "--vocab", "256", "--batch-size", "2", "--seq-len", "16",
                        "--steps", "3", "--static", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(SPEED.parents[1] / "src")})
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["method"], x["order"], x["cache"]) for x in rows] == [("kd", 0, "empty"), ("quantgpt", 1, "filled")]
    for x in rows:
        assert x["device"] == "cpu" and x["graphs"] == 0 and x["symbolic"] == []  # eager: nothing compiled
        assert x["static"] is True
        assert x["setup_s"] > 0 and x["eval0_s"] >= 0 and x["first_step_s"] > 0 and x["later_step_ms"] > 0


def test_budget_probe_windows_and_a_run_on_the_cpu(tmp_path):
    """budget_probe.py: the ms a step of each stretch between training rows, from train_seconds alone (an
    evaluation row between them changes nothing), the pause near the first freezing check found; and a whole
    time-budgeted run on the CPU records its fits (read from its log), the first at the probe's end, and every
    evaluation's cost."""
    sys.path.insert(0, str(SPEED.parent))
    from budget_probe import summary, windows

    log = [{"step": 0, "eval_seconds": 2.0}, {"step": 10, "train_seconds": 1.0}, {"step": 20, "train_seconds": 2.5},
           {"step": 20, "eval_seconds": 0.5}, {"step": 25, "budget_seconds": 3.2, "ms_per_step": 140.0, "budget_fit": 44,
           "freeze_begin": 11}, {"step": 30, "train_seconds": 12.5}, {"step": 40, "train_seconds": 14.0}]
    assert windows(log) == [(20, 150.0), (30, 1000.0), (40, 150.0)]
    log.insert(5, {"step": 31, "budget_seconds": 13.0, "ms_per_step": 400.0, "budget_fit": 44, "freeze_begin": 22})
    s = summary(log)
    assert s["fits"] == [{"step": 25, "seconds": 3.2, "total_steps": 44, "ms_per_step": 140.0},
                         {"step": 31, "seconds": 13.0, "total_steps": 44, "ms_per_step": 400.0}]
    assert s["probe_ms"] == 140.0 and s["freeze_begin"] == 22  # the last fit's
    assert s["steps"] == 40 and s["first_fit_over"] == 0.1 and s["slowest"][0] == [30, 1000.0]
    assert s["slowest_at_first_check"] == [30, 1000.0] and s["eval_seconds"] == [[0, 2.0], [20, 0.5]]
    short = summary([{"step": 0, "eval_seconds": 2.0}, {"step": 10, "train_seconds": 1.0}])  # a run cut before a window
    assert short["median_ms_after_100"] is None and short["windows_ms"] == [] and short["steps"] == 10

    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, str(SPEED.parent / "budget_probe.py"), "--device", "cpu", "--layers", "1",
                        "--vocab", "256", "--batch-size", "1", "--seq-len", "16", "--blocks", "4", "--eval-tokens", "64",
                        "--budget", "12", "--out", str(out)], capture_output=True, text=True, cwd=SPEED.parent,
                       env={**os.environ, "PYTHONPATH": str(SPEED.parents[1] / "src"), "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["fits"][0]["step"] == 25 and row["steps"] >= 25
    assert row["fits"][-1]["total_steps"] == row["steps"] or row["run_seconds"] >= 12
    assert row["eval_seconds"][0][0] == 0 and row["eval_seconds"][-1][0] == row["steps"]


def test_gpu_clocks_lines_up_step_times_with_gpu_samples(tmp_path):
    """gpu_clocks.py: the training rows cut into stretches of about equal rows, each with its ms a step (from
    train_seconds) and the median clock and power, highest power, power limit and temperature of the samples between its first
    and last row's `time` (a sample on a boundary counts in both; an unreadable line is skipped), of one GPU (the
    sampler writes each GPU's index; a line without one is GPU 0's)."""
    sys.path.insert(0, str(SPEED.parent))
    from gpu_clocks import read_samples, stretches

    log = [{"step": 0, "eval_seconds": 9.0}, {"step": 10, "train_seconds": 1.0, "time": 100.0},
           {"step": 20, "train_seconds": 2.0, "time": 101.0}, {"step": 30, "train_seconds": 4.0, "time": 103.5},
           {"step": 40, "train_seconds": 6.0, "time": 106.0}, {"step": 40, "eval_ppl": 3.0}]
    csv = tmp_path / "gpu_1.csv"
    csv.write_text("105.0,0, 1800, 700.00, 700.00, 62\n100.5,0, 1980, 600.00, 700.00, 50\n101.0,\n101.5,0\n"
                   "103.5,0, 1900, 700.00, 700.00, 60\n103.5,1, 1200, 300.00, 700.00, 45\n")
    old = tmp_path / "gpu_0.csv"  # a file from before the index: GPU 0's
    old.write_text("102.0,1960, 640.00, 650.00, 55\n110.0,1000, 100.00, 700.00, 40\n")
    samples = read_samples([csv, old])
    assert [s[0] for s in samples] == [100.5, 102.0, 103.5, 105.0, 110.0]
    assert read_samples([csv, old], gpu=1) == [(103.5, 1200.0, 300.0, 700.0, 45.0)]
    a, b = stretches(log, samples, parts=2)
    assert a == {"steps": [10, 30], "ms_per_step": 150.0, "samples": 3, "sm_mhz": 1960.0, "watts": 640.0,
                 "watts_max": 700.0, "watts_limit": 650.0, "temp_max": 60.0}
    assert b == {"steps": [30, 40], "ms_per_step": 200.0, "samples": 2, "sm_mhz": 1850.0, "watts": 700.0,
                 "watts_max": 700.0, "watts_limit": 700.0, "temp_max": 62.0}
    with pytest.raises(SystemExit, match="fewer than two training rows"):
        stretches([{"step": 1, "train_seconds": 1.0}], samples)


def test_sweep_calls_sample_the_gpu_and_finish_stops_the_sampler(tmp_path):
    """common.sh, sourced with an nvidia-smi on the PATH (a stand-in here), samples it every 2 s into
    runs/logs/gpu_<start>.csv, each line led by the epoch second; finish stops the sampler (the call returns and
    the file grows no more) and logs.tgz carries the samples."""
    import tarfile
    import time

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "valid_held_nounk.txt").write_text("held\n")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '0, 1980, 650.50, 700.00, 55'\necho '1, 1400, 300.00, 700.00, 41'\n")
    fake.chmod(0o755)
    common = SPEED.parent / "sweeps" / "common.sh"
    t0 = time.time()
    r = subprocess.run(["timeout", "60", "bash", "-c", f"source {common}; sleep 2.5; finish"], cwd=tmp_path,
                       capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "QG_DATA": str(tmp_path),
                            "OUT": str(tmp_path / "out")})
    assert r.returncode == 0, r.stderr
    (csv,) = (tmp_path / "runs" / "logs").glob("gpu_*.csv")
    lines = csv.read_text().splitlines()
    assert len(lines) >= 4 and len(lines) % 2 == 0
    for i, line in enumerate(lines):  # every GPU at each sample, each line led by the sample's time
        t, rest = line.split(",", 1)
        assert t0 - 1 <= float(t) <= time.time()
        assert rest == ("0, 1980, 650.50, 700.00, 55" if i % 2 == 0 else "1, 1400, 300.00, 700.00, 41")
        assert i % 2 == 0 or t == lines[i - 1].split(",", 1)[0]
    time.sleep(2.5)
    assert csv.read_text().splitlines() == lines  # the sampler was stopped
    with tarfile.open(tmp_path / "out" / "logs.tgz") as tar:
        assert f"runs/logs/{csv.name}" in tar.getnames()


def _goals(tmp_path, **env) -> subprocess.CompletedProcess:
    """goals.sh run with stand-ins on the PATH: a python (and torchrun) that records the study's arguments in
    ``args`` (a line a call) and runs the rest (heredocs, stage_model.py), and an nvidia-smi, so that common.sh's
    GPU sampler runs as on the device; an adapted teacher's folder is in place for PART=2."""
    (tmp_path / "runs" / "study" / "finetune_16-16-16-t").mkdir(parents=True)
    (tmp_path / "runs" / "study" / "finetune_16-16-16-t" / "finetune.json").write_text("{}")
    (tmp_path / "runs" / "valid_held_nounk.txt").write_text("held\n")
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\ncase "$1" in -|*/stage_model.py) exec {sys.executable} "$@";; esac\n'
                    f'echo "$@" >> {tmp_path}/args\n'
                    f'echo "$QG_SHARED_GPU" >> {tmp_path}/shared\n')
    stub.chmod(0o755)
    (stub.parent / "torchrun").symlink_to(stub)  # PART=4's launcher
    smi = stub.parent / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, 1980, 650.50, 700.00, 55'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "QG_DATA": str(tmp_path),
           "OUT": str(tmp_path / "out"), "LIMIT": "300", "R": "t", **env}
    return subprocess.run(["timeout", "30", "bash", str(SPEED.parent / "sweeps" / "goals.sh")], cwd=tmp_path,
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("part, reserve, budget", [("2", None, 240), ("3", None, 180), ("4", None, 180),
                                                    ("3", "30", 270)])
def test_goals_runs_keep_their_reserve_outside_the_time_budget(tmp_path, part, reserve, budget):
    """goals.sh's long runs train to time_budget = LIMIT - RESERVE: 60 s by default for PART=2 (an adapted folder
    loaded), 120 s for PART=3 and 4 (the GGUF and the mix loaded before compress's own adaptation; section 39's
    60 s left its export and test outside the call)."""
    r = _goals(tmp_path, PART=part, **({} if reserve is None else {"RESERVE": reserve}))
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args").read_text().split()
    assert "benchmarks/paper_study.py" in args and "--only" in args
    # TB = LIMIT - SECONDS - RESERVE: bash's SECONDS is whole seconds since the script started, so the setup before
    # it may have crossed a second or two (a loaded machine); RESERVE's values differ by 60
    tb = [int(a.split("=")[1]) for a in args if a.startswith("time_budget=")]
    assert len(tb) == 1 and budget - 3 <= tb[0] <= budget, tb


def test_goals_long_run_brings_back_its_packed_model_in_parts(tmp_path):
    """PART=2 (KEEP=1 by default) returns its run's packed model under the device's 16 MiB-a-file limit: 15 MiB
    parts that concatenate to the file, and its small files (config, manifest, tokenizer) in model_files.tgz
    without the train log or plots, which fetch_model.py joins again; KEEP=0 returns none."""
    import tarfile

    import torch
    from safetensors.torch import save_file

    run = tmp_path / "runs" / "study" / "kd_2-2-8-tb-x-t"  # METHOD=kd TAG=-x, R=t: the run's folder
    run.mkdir(parents=True)
    save_file({"w": torch.arange(70 * 2**16, dtype=torch.float32)}, run / "model.safetensors")  # 17.5 MiB
    model = (run / "model.safetensors").read_bytes()
    for name in ("config.json", "quantgpt.json", "tokenizer.json", "train_log.jsonl", "loss.png"):
        (run / name).write_text("{}")
    r = _goals(tmp_path, PART="2", METHOD="kd", TAG="-x")
    assert r.returncode == 0, r.stderr
    parts = sorted((tmp_path / "out").glob("model.safetensors.part*"))
    assert [p.name for p in parts] == ["model.safetensors.part00", "model.safetensors.part01"]
    assert parts[0].stat().st_size == 15 * 2**20 and b"".join(p.read_bytes() for p in parts) == model
    with tarfile.open(tmp_path / "out" / "model_files.tgz") as t:
        assert sorted(t.getnames()) == ["config.json", "kept_run.txt", "quantgpt.json", "tokenizer.json"]
        assert t.extractfile("kept_run.txt").read().decode().strip() == "kd_2-2-8-tb-x-t"
    sys.path.insert(0, str(SPEED.parent))
    from fetch_model import fetch

    back = fetch(tmp_path / "out", tmp_path / "models")  # as here from the call's files
    assert back.name == run.name and (back / "model.safetensors").read_bytes() == model
    other = tmp_path / "no" / "runs" / "study" / "quantgpt_2-2-8-tb-t"
    other.mkdir(parents=True)
    (other / "model.safetensors").write_bytes(model)
    assert _goals(tmp_path / "no", PART="2", KEEP="0").returncode == 0
    assert (tmp_path / "no" / "out" / "logs.tgz").is_file() and not list((tmp_path / "no" / "out").glob("model*"))


def test_goals_teacher_call_returns_when_its_run_ends_though_the_gpu_sampler_runs(tmp_path):
    """PART=1 waits for its teacher's run before it starts the baselines; a bare `wait` also waited for common.sh's
    GPU sampler, which only finish stops, and session 34's call hung until its 300 s limit (timeout's 124 here)."""
    r = _goals(tmp_path, PART="1", BASELINES="0")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in (tmp_path / "args").read_text().splitlines()]
    (teacher,) = [a for a in lines if "finetune@16-16-16" in a]  # the two start together: in either order
    (warm,) = [a for a in lines if a is not teacher]
    assert teacher[teacher.index("--steps") + 1] == "300"
    # beside it the short run that warms the compile cache, from the model as given (its graphs do not depend on
    # the weights), its row kept out of the study's; the two share the GPU
    assert warm[warm.index("--only") + 1] == "quantgpt@2-2-8" and warm[warm.index("--steps") + 1] == "10"
    assert "--model" not in warm
    assert (tmp_path / "shared").read_text().split() == ["2", "2"]
    assert [v for k, v in zip(warm, warm[1:]) if k == "--out"][-1] == "runs/warm.jsonl"  # the last --out wins
    assert "eval_every=10" in warm  # evaluated at its end only
    assert (tmp_path / "out" / "logs.tgz").is_file()
    assert _goals(tmp_path / "cold", PART="1", BASELINES="0", WARM="0").returncode == 0
    assert len((tmp_path / "cold" / "args").read_text().splitlines()) == 1
    assert (tmp_path / "cold" / "shared").read_text().split() == ["1"]  # the teacher alone
    assert _goals(tmp_path / "long", PART="1", BASELINES="0", WARM="0", FT_STEPS="600").returncode == 0
    teacher = (tmp_path / "long" / "args").read_text().split()
    assert teacher[teacher.index("--steps") + 1] == "600"


def test_cudagraph_check_runs_its_model_and_reports_each_variant():
    """cudagraph_check (rerun on a newer torch to see whether reduce-overhead survives training): its eager variant
    trains the stock Llama on the CPU and reports ok; an unknown variant is an error naming the known ones."""
    script = Path(__file__).parents[1] / "benchmarks" / "cudagraph_check.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--variants", "eager", "--steps", "2"],
                       capture_output=True, text=True, cwd=script.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["variant"] == "eager" and row["ok"] is True and row["cudagraph_trees"] is True
    bad = subprocess.run([sys.executable, str(script), "--device", "cpu", "--variants", "graphs"], capture_output=True,
                         text=True, cwd=script.parent)
    assert bad.returncode != 0 and "blocks, whole, clone or eager" in bad.stderr


def test_fetch_model_rebuilds_a_packed_model_from_its_parts(tmp_path, tiny, tokenizer):
    """fetch_model.py: the parts and model_files.tgz a PART=2 call returns become a folder named by kept_run.txt
    that loads as the packed model it was (the same logits); a gap in the parts, or a missing last part, is an
    error before anything is written."""
    import tarfile

    import torch

    sys.path.insert(0, str(SPEED.parent))
    from fetch_model import fetch

    from quantgpt.config import QuantConfig
    from quantgpt.convert import quantize_model
    from quantgpt.models import load_any
    from quantgpt.packed import save_packed

    src = save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8", group_size=16)), tokenizer, tmp_path / "p")
    data = (src / "model.safetensors").read_bytes()
    files = tmp_path / "files"
    files.mkdir()
    third = len(data) // 3 + 1
    for i in range(3):
        (files / f"model.safetensors.part{i:02d}").write_bytes(data[i * third:(i + 1) * third])
    (tmp_path / "kept_run.txt").write_text("quantgpt_2-2-8-tb-x-t\n")
    with tarfile.open(files / "model_files.tgz", "w:gz") as t:
        for f in src.iterdir():
            if f.name != "model.safetensors":
                t.add(f, f.name)
        t.add(tmp_path / "kept_run.txt", "kept_run.txt")
    folder = fetch(files, tmp_path / "models")
    assert folder == tmp_path / "models" / "quantgpt_2-2-8-tb-x-t" and not (folder / "kept_run.txt").exists()
    assert (folder / "model.safetensors").read_bytes() == data
    x = torch.randint(3, 300, (1, 12))
    with torch.no_grad():
        a, b = (load_any(str(d))[0](input_ids=x).logits for d in (src, folder))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (files / "model.safetensors.part02").unlink()
    with pytest.raises(SystemExit, match="parts missing"):
        fetch(files, tmp_path / "other")
    (files / "model.safetensors.part03").write_bytes(b"")
    with pytest.raises(SystemExit, match="not 00 to"):
        fetch(files, tmp_path / "other")
    assert not (tmp_path / "other" / "quantgpt_2-2-8-tb-x-t").exists()


def test_stage_model_cuts_a_packed_folder_that_fetch_model_rebuilds(tmp_path, tiny, tokenizer):
    """stage_model.py: a packed folder becomes g0, g1, g2 (one part each, model_files.tgz with the last), whose files
    copied into one folder, as the device calls do into /root/g, fetch_model.py rebuilds byte for byte under the
    folder's own name; a part over --room is an error, and so is a folder without weights."""
    import shutil

    sys.path.insert(0, str(SPEED.parent))
    from fetch_model import fetch
    from stage_model import stage

    from quantgpt.config import QuantConfig
    from quantgpt.convert import quantize_model
    from quantgpt.packed import save_packed

    src = save_packed(quantize_model(tiny("llama"), QuantConfig(bits="2-2-8", group_size=16)), tokenizer,
                      tmp_path / "quantgpt_2-2-8-tb-y-t")
    (src / "train_log.jsonl").write_text("{}\n")  # not part of the model: left behind
    folders = stage(src, tmp_path / "cache", parts=3)
    assert [f.name for f in folders] == ["g0", "g1", "g2"]
    assert [sorted(p.name for p in f.iterdir()) for f in folders] == [
        ["model.safetensors.part00"], ["model.safetensors.part01"], ["model.safetensors.part02", "model_files.tgz"]]
    sizes = [(f / f"model.safetensors.part{i:02d}").stat().st_size for i, f in enumerate(folders)]
    assert sizes[0] == sizes[1] >= sizes[2] > 0 and sum(sizes) == (src / "model.safetensors").stat().st_size
    g = tmp_path / "g"
    g.mkdir()
    for f in folders:
        for p in f.iterdir():
            shutil.copy(p, g / p.name)
    folder = fetch(g, tmp_path / "models")
    assert folder.name == src.name
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in src.iterdir() if p.suffix != ".jsonl")
    for p in folder.iterdir():
        assert p.read_bytes() == (src / p.name).read_bytes(), p.name
    with pytest.raises(SystemExit, match="over --room"):
        stage(src, tmp_path / "small", parts=2, room_mb=sizes[0] / 1e6)
    (src / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match="no model.safetensors"):
        stage(src, tmp_path / "none")
