"""The README's Python API example, on a tiny model instead of SmolLM2."""
import quantgpt
from quantgpt import QuantConfig, TrainConfig, compress, quantize_model


def test_readme_api_example(tmp_path, model_dir):
    model, tok = quantgpt.load_float(str(model_dir))
    quantize_model(model, QuantConfig(bits="2-2-8", quantizer="mds"))
    ids = quantgpt.tokenize_files("sample-eval", tok)
    r = quantgpt.evaluate(model, ids, seq_len=64, limit_tokens=2000, progress=False)
    assert {"perplexity", "accuracy"} <= set(r)
    quantgpt.save_packed(model, tok, tmp_path / "out")
    assert type(quantgpt.load(tmp_path / "out")).__name__ == type(model).__name__
    summary = compress(TrainConfig(model=str(model_dir), bits="2-2-8", method="quantgpt", train_data=["sample"],
                                   steps=2, seq_len=32, batch_size=2, negatives=32, out=str(tmp_path / "run"),
                                   device="cpu", progress=False))
    assert summary["steps"] == 2 and (tmp_path / "run" / "quantgpt.json").is_file()
