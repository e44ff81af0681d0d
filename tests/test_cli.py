"""The quantgpt command end to end on a tiny model folder, and every bad input it must refuse cleanly."""
import json
import subprocess
import sys

import pytest
import torch

from quantgpt import load
from quantgpt.cli import main
from quantgpt.plots import read_log

SMALL = ["--calib-seq-len", "64", "--calib-samples", "8", "--device", "cpu", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_eval_generate(capsys, tmp_path, model_dir, method):
    out = tmp_path / method
    code, stdout, err = run(capsys, "quantize", model_dir, "--method", method, "--bits", "4-4-8", "--group-size", "16",
                            "--out", out, "--json", *SMALL)
    assert code == 0, err
    assert json.loads(stdout)["method"] == method
    assert (out / "quantgpt.json").is_file() and (out / "model.safetensors").is_file()
    code, stdout, err = run(capsys, "eval", out, "--data", "sample", "--seq-len", "64", "--limit-tokens", "2000", "--json",
                            "--device", "cpu", "--quiet")
    assert code == 0, err
    r = json.loads(stdout)
    assert {"perplexity", "accuracy", "tokens", "seq_len"} <= set(r) and r["seq_len"] == 64 and r["tokens"] == 31 * 63
    code, stdout, err = run(capsys, "generate", out, "--prompt", "The people", "--max-new-tokens", "5", "--device", "cpu",
                            "--quiet")
    assert code == 0, err
    assert stdout.startswith("The people")


def test_eval_by_frequency_splits_the_nll_by_target_group(capsys, model_dir):
    """eval --by-frequency TEXT: the targets' NLL per group of TEXT's token frequency, in the JSON (their counts add
    up to the scored tokens and their weighted mean is the text's NLL) and as lines of the plain output."""
    args = ["eval", model_dir, "--data", "sample", "--seq-len", "64", "--limit-tokens", "2000", "--device", "cpu",
            "--quiet", "--by-frequency", "sample-eval"]
    code, stdout, err = run(capsys, *args, "--json")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["freq_groups"][0] == "0-50%" and len(r["freq_groups"]) == len(r["group_nll"])
    assert sum(r["group_tokens"]) == r["tokens"]
    assert sum(v * k for v, k in zip(r["group_nll"], r["group_tokens"]) if k) / r["tokens"] == pytest.approx(r["nll"], rel=1e-5)
    code, stdout, err = run(capsys, *args)
    assert code == 0 and "NLL by the target's frequency" in stdout and "   0-50%: " in stdout


def test_saved_model_reloads_to_identical_logits(tmp_path, model_dir, tokenizer):
    from quantgpt import QuantConfig, quantize_model, save_fakequant
    from quantgpt.models import load_float

    m, tok = load_float(str(model_dir))
    quantize_model(m, QuantConfig(bits="2-2-8"))
    with torch.no_grad():
        m.model.layers[0].mlp.up_proj.weight_quantizer.gamma.fill_(1.7)  # a "trained" parameter
    save_fakequant(m, tok, tmp_path / "q")
    m2 = load(tmp_path / "q")
    x = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        assert torch.equal(m(x).logits, m2(x).logits)
    assert m2.lm_head.weight is m2.model.embed_tokens.weight


def test_compress_16_16_16_writes_a_float_model_that_compress_and_eval_take(capsys, tmp_path, model_dir):
    """The teacher adapted at 16-16-16 is a plain transformers folder: eval reads it, compress starts from it."""
    adapted, q = tmp_path / "adapted", tmp_path / "q"
    common = ("--seq-len", "32", "--batch-size", "2", "--train-data", "sample", "--device", "cpu", "--quiet")
    code, stdout, err = run(capsys, "compress", model_dir, "--bits", "16-16-16", "--steps", "2", "--out", adapted, *common)
    assert code == 0, err
    assert stdout.startswith(f"wrote the fine-tuned float model to {adapted}:"), stdout
    assert (adapted / "config.json").is_file() and not (adapted / "quantgpt.json").exists()
    code, stdout, err = run(capsys, "eval", adapted, "--data", "sample-eval", "--seq-len", "32", "--limit-tokens", "500",
                            "--json", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["perplexity"] > 1
    code, stdout, err = run(capsys, "compress", adapted, "--steps", "1", "--negatives", "16", "--out", q, "--json", *common)
    assert code == 0, err
    assert json.loads((q / "quantgpt.json").read_text())["source"] == str(adapted)


@pytest.mark.parametrize("argv,match", [
    (["--bits", "5-2-8"], "bad bit setting"),
    (["--bits", "2-2"], "bad bit setting"),
    (["--bits", "4-16-16", "--method", "awq"], "unknown method"),
    (["--bits", "4-16-16", "--group-size", "24"], "does not divide"),
])
def test_quantize_bad_settings(capsys, tmp_path, model_dir, argv, match):
    out = tmp_path / "o"
    code, _, err = run(capsys, "quantize", model_dir, *argv, "--out", out, *SMALL)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not any(tmp_path.iterdir())  # nothing left behind


def test_bad_models(capsys, tmp_path, model_dir):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage" * 10)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for model in (tmp_path / "missing", "./nowhere/model", bad, broken, tmp_path):
        code, _, err = run(capsys, "quantize", model, "--bits", "4-16-16", "--out", tmp_path / "o", *SMALL)
        assert code == 2, (model, err)
        assert err.startswith("quantgpt: error:") and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_corrupt_quantized_folder(capsys, tmp_path, model_dir):
    out = tmp_path / "q"
    assert run(capsys, "quantize", model_dir, "--bits", "4-16-16", "--out", out, *SMALL)[0] == 0
    f = out / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    code, _, err = run(capsys, "eval", out, "--data", "sample", "--seq-len", "64", "--device", "cpu")
    assert code == 2 and "model.safetensors" in err and "checksum" in err


def test_bad_data(capsys, tmp_path, model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(capsys, "eval", model_dir, "--data", empty, "--seq-len", "64", "--device", "cpu")
    assert code == 2 and "empty" in err
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    code, _, err = run(capsys, "eval", model_dir, "--data", short, "--seq-len", "64", "--device", "cpu")
    assert code == 2 and "fewer than one window" in err
    code, _, err = run(capsys, "quantize", model_dir, "--method", "gptq", "--bits", "4-16-16", "--calib-data", empty,
                       "--out", tmp_path / "o", *SMALL)
    assert code == 2 and "empty" in err and not (tmp_path / "o").exists()


def test_console_script_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "quantgpt.cli", "quantize", str(tmp_path / "nope"), "--bits", "2-2-8",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such" in r.stderr


def test_compress_end_to_end_with_yaml(capsys, tmp_path, model_dir):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("bits: 2-2-8\nmethod: quantgpt\nsteps: 2\nseq-len: 32\nbatch_size: 4\nnegatives: 32\n"
                   "eval_tokens: 2000\nlog_every: 1\nlr: 1e-4\n")  # YAML 1.1 reads 1e-4 as text: still a number
    out = tmp_path / "c"
    code, stdout, err = run(capsys, "compress", model_dir, "--config", cfg, "--steps", "4", "--train-data", "sample",
                            "--eval-data", "sample-eval", "--out", out, "--device", "cpu", "--json", "--quiet")
    assert code == 0, err
    r = json.loads(stdout)
    assert r["steps"] == 4 and r["tokens"] == 4 * 4 * 32  # the flag overrode the file's 2 steps
    assert (out / "train_log.jsonl").is_file() and (out / "loss_curve.png").is_file() and (out / "quant_params.png").is_file()
    rows = read_log(out / "train_log.jsonl")
    assert any("cont" in x for x in rows) and any("eval_ppl" in x for x in rows) and any("cos_student" in x for x in rows)
    code, stdout, err = run(capsys, "eval", out, "--data", "sample-eval", "--seq-len", "32", "--limit-tokens", "1000",
                            "--json", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["perplexity"] > 1
    manifest = json.loads((out / "quantgpt.json").read_text())
    assert manifest["method"] == "quantgpt" and manifest["quant_config"]["bits"] == "2-2-8"
    assert manifest["train_config"]["lr"] == 1e-4
    # extending the run: --resume with more steps continues from the checkpoint
    code, stdout, err = run(capsys, "compress", model_dir, "--config", cfg, "--steps", "6", "--train-data", "sample",
                            "--out", out, "--device", "cpu", "--json", "--quiet", "--resume")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 6


@pytest.mark.parametrize("argv,match", [
    (["--bits", "2-2"], "bad bit setting"),
    (["--method", "magic"], "unknown method"),
    (["--train-data", "nothing.txt"], "no such data"),
    (["--seq-len", "5000000"], "fewer than one block"),
    (["--resume"], "no checkpoint"),
    (["--grid", "nf4"], "unknown grid"),
    (["--method", "lsq", "--scale-bits", "8"], "8-bit scales apply to the mds quantizer"),
    (["--freeze-threshold", "1"], "freeze-threshold is a share of steps"),
])
def test_compress_bad_input(capsys, tmp_path, model_dir, argv, match):
    out = tmp_path / "c"
    code, _, err = run(capsys, "compress", model_dir, "--steps", "2", "--seq-len", "32", "--out", out, "--device", "cpu",
                       "--quiet", *argv)
    assert code == 2 and match in err, err
    assert not out.exists()


def test_compress_data_free(capsys, tmp_path, model_dir):
    out = tmp_path / "c"
    code, stdout, err = run(capsys, "compress", model_dir, "--steps", "1", "--seq-len", "16", "--batch-size", "2",
                            "--train-data", "generated:4", "--negatives", "16", "--out", out, "--device", "cpu",
                            "--json", "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["tokens"] == 32


def test_ragged_groups_flag(capsys, tmp_path, model_dir):
    out = tmp_path / "r"
    code, _, err = run(capsys, "quantize", model_dir, "--method", "gptq", "--bits", "4-16-16", "--group-size", "24",
                       "--ragged-groups", "--out", out, *SMALL)
    assert code == 0, err
    manifest = json.loads((out / "quantgpt.json").read_text())
    mod = manifest["modules"]["model.layers.0.self_attn.q_proj"]
    assert mod["group_size"] == 24 and mod["shape"] == [32, 32]
    code, stdout, err = run(capsys, "eval", out, "--data", "sample-eval", "--seq-len", "64", "--limit-tokens", "1000",
                            "--json", "--device", "cpu", "--quiet")
    assert code == 0, err


def test_compress_head_scale_flag_reaches_the_checkpoint(capsys, tmp_path, model_dir):
    out = tmp_path / "hs"
    code, _, err = run(capsys, "compress", model_dir, "--head-scale", "--steps", "1", "--seq-len", "32", "--batch-size", "2",
                       "--calib-samples", "2", "--negatives", "16", "--train-data", "sample", "--out", out,
                       "--device", "cpu", "--quiet")
    assert code == 0, err
    manifest = json.loads((out / "quantgpt.json").read_text())
    assert manifest["quant_config"]["head_scale"] and manifest["train_config"]["head_scale"]
    code, _, err = run(capsys, "info", out)
    assert code == 0, err


def test_compress_track_flips_flag_logs_the_flips(capsys, tmp_path, model_dir):
    out = tmp_path / "fl"
    code, _, err = run(capsys, "compress", model_dir, "--track-flips", "--adapt-steps", "0", "--steps", "2",
                       "--log-every", "1", "--seq-len", "32", "--batch-size", "2", "--negatives", "16",
                       "--train-data", "sample", "--out", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    rows = [r for r in read_log(out / "train_log.jsonl") if "loss" in r]
    assert [sorted(k for k in r if k.startswith("flips")) for r in rows] == [["flips_log"], ["flips_log", "flips_step"]]
    assert (out / "flips.png").is_file()


def test_compress_scale_bits_flag_writes_eight_bit_scales(capsys, tmp_path, model_dir):
    out = tmp_path / "s8"
    code, _, err = run(capsys, "compress", model_dir, "--scale-bits", "8", "--group-size", "16", "--steps", "1",
                       "--seq-len", "32", "--batch-size", "2", "--negatives", "16", "--train-data", "sample",
                       "--out", out, "--device", "cpu", "--quiet")
    assert code == 0, err
    manifest = json.loads((out / "quantgpt.json").read_text())
    assert manifest["quant_config"]["scale_bits"] == 8 and manifest["train_config"]["scale_bits"] == 8
    assert manifest["modules"]["model.layers.0.self_attn.q_proj"]["scale_bits"] == 8
    code, stdout, err = run(capsys, "eval", out, "--data", "sample-eval", "--seq-len", "64", "--limit-tokens", "1000",
                            "--json", "--device", "cpu", "--quiet")
    assert code == 0 and json.loads(stdout)["perplexity"] > 1, err


def test_compress_adapts_the_teacher_first(capsys, tmp_path, model_dir):
    out = tmp_path / "ad"
    common = ("--steps", "1", "--seq-len", "32", "--batch-size", "2", "--negatives", "16", "--train-data", "sample",
              "--out", out, "--device", "cpu", "--quiet")
    code, stdout, err = run(capsys, "compress", model_dir, "--adapt-steps", "2", *common)
    assert code == 0, err
    assert stdout.startswith(f"adapted the teacher in {out / 'teacher'} (2 steps, "), stdout
    code, stdout, err = run(capsys, "compress", model_dir, "--adapt-steps", "2", "--resume", "--json", *common)
    assert code == 0, err
    r = json.loads(stdout)
    assert r["adapt"]["out"] == str(out / "teacher") and r["adapt"]["kept"] and r["steps"] == 1
    assert r["adapt"]["steps"] == 2 and r["adapt"]["best"] is None
    info = json.loads((out / "teacher" / "finetune.json").read_text())  # the first stage's time, kept for the row
    assert r["adapt"]["run_seconds_all"] == info["run_seconds_all"] >= info["train_seconds"] >= 0


def test_compress_cont_schedule_flag(capsys, tmp_path, model_dir):
    """--cont-schedule reaches the config (a bad value is a one-line error before anything is written)."""
    code, _, err = run(capsys, "compress", model_dir, "--bits", "2-2-8", "--cont-schedule", "linear",
                       "--out", tmp_path / "o")
    assert code == 2 and "unknown contrastive schedule 'linear'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
