"""Keep a device session's study rows and train logs in benchmarks/results: each run's train_log.jsonl trimmed to
every ``--every``-th step, its evaluations, its time budget's fits and its last step, gzipped into
``logs/TAG/<run>.train_log.jsonl.gz``; the calls' GPU samples (``runs/logs/gpu_*.csv``) beside them; and the rows,
their ``train_log`` pointing there, in ``study_<gpu>_TAG.jsonl`` (gpu: h100 or h200, from the rows' device). Run it
here on the files a device call brought back:

    tar xzf <files_at>/logs.tgz -C /tmp/sNN
    python benchmarks/keep_results.py <files_at>/study.jsonl --root /tmp/sNN --tag sNN
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from quantgpt.errors import QuantGPTError
from quantgpt.plots import read_log
from quantgpt.report import read_results

RESULTS = Path(__file__).resolve().parent / "results"


def trimmed(rows: list[dict], every: int) -> list[dict]:
    """The rows at every ``every``-th step, with an evaluation, with a time budget's fit, or at the last step."""
    last = max((r["step"] for r in rows), default=0)
    return [r for r in rows if r["step"] % every == 0 or "eval_ppl" in r or "budget_fit" in r or r["step"] == last]


def gpu_name(device: str) -> str:
    for name in ("h100", "h200"):
        if name in device.lower():
            return name
    raise SystemExit(f"device {device!r}: neither an H100 nor an H200")


def keep(study: Path, root: Path, tag: str, every: int = 100, results: Path = RESULTS) -> Path:
    rows = read_results(study)  # one-line errors for an unreadable, empty or broken file
    gpus = {gpu_name(r.get("device", "")) for r in rows}
    if len(gpus) != 1:
        raise SystemExit(f"{study}: rows from {sorted(gpus)}: keep each device's rows apart")
    logs = results / "logs" / tag
    logs.mkdir(parents=True, exist_ok=True)
    for r in rows:
        src = root / r["train_log"] if r.get("train_log") else None
        if src is None or not src.is_file():
            print(f"{r['name']}: no train log at {src}, row kept as it is")
            continue
        log = read_log(src)
        dest = logs / f"{src.parent.name}.train_log.jsonl.gz"
        text = "".join(json.dumps(x) + "\n" for x in trimmed(log, every))
        dest.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
        r["train_log"] = str(dest.relative_to(results.parent.parent))
    for csv in sorted((root / "runs" / "logs").glob("gpu_*.csv")):  # common.sh's GPU samples (gpu_clocks.py)
        (logs / csv.name).write_bytes(csv.read_bytes())
    out = results / f"study_{gpus.pop()}_{tag}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out} ({len(rows)} rows) and {logs}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path, help="the study.jsonl a device call brought back")
    p.add_argument("--root", type=Path, required=True, help="where its logs.tgz was unpacked (holds runs/)")
    p.add_argument("--tag", required=True, help="the session's tag (goals.sh's R), e.g. s26")
    p.add_argument("--every", type=int, default=100, help="keep every EVERY-th step (default 100)")
    a = p.parse_args()
    try:
        keep(a.study, a.root, a.tag, a.every)
    except QuantGPTError as e:
        raise SystemExit(f"keep_results: {e}") from None


if __name__ == "__main__":
    main()
