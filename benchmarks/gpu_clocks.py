"""Whether a run's steps slow when the GPU's clock falls: a train log's step times lined up with the GPU samples
that benchmarks/sweeps/common.sh takes every 2 s (``runs/logs/gpu_<start>.csv``: epoch second, GPU index, SM MHz,
W, the power limit in W, C; files from before the index, one GPU's, have no index and count as GPU 0).

The run is cut into ``--parts`` stretches of about equal training rows; for each, the ms a step (from the log's
train_seconds) and the median SM clock, median and highest power, the power limit and the highest temperature of
the samples taken between its first and last training row (the log's ``time``). Section 35's real run took 7%
longer a step after the time budget's probe than in it, which a random model did not (section 36); a clock lower
by about as much in the later parts would say the GPU, not the trainer, made the difference.

    python benchmarks/gpu_clocks.py runs/study/<run>/train_log.jsonl runs/logs/gpu_*.csv [--gpu 0] [--parts 6] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from quantgpt.plots import read_log


def read_samples(paths, gpu: int = 0) -> list[tuple[float, float, float, float, float]]:
    """(epoch second, SM MHz, W, W limit, C) of GPU ``gpu`` from every readable line of the sampler's files, in time
    order (a line whose nvidia-smi call failed has too few fields and is skipped; a line of five fields, from before
    the sampler wrote the index, is GPU 0's)."""
    out = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            try:
                values = [float(x) for x in line.split(",")]
            except ValueError:
                continue
            if len(values) == 5:
                values.insert(1, 0.0)
            if len(values) != 6 or values[1] != gpu:
                continue
            t, _, mhz, watts, limit, temp = values
            out.append((t, mhz, watts, limit, temp))
    return sorted(out)


def stretches(log: list[dict], samples, parts: int = 6) -> list[dict]:
    """The run's training rows that carry ``time`` cut into ``parts`` stretches of about equal steps: each one's
    steps, ms a step and the GPU samples between its first and last row."""
    rows = [r for r in log if "train_seconds" in r and "time" in r]
    if len(rows) < 2:
        raise SystemExit("gpu_clocks: the log has fewer than two training rows with `time` (a log from before it)")
    parts = max(1, min(parts, len(rows) - 1))
    cuts = [round(i * (len(rows) - 1) / parts) for i in range(parts + 1)]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        ra, rb = rows[a], rows[b]
        inside = [s for s in samples if ra["time"] <= s[0] <= rb["time"]]
        part = {"steps": [ra["step"], rb["step"]],
                "ms_per_step": round(1000 * (rb["train_seconds"] - ra["train_seconds"]) / max(rb["step"] - ra["step"], 1), 1),
                "samples": len(inside)}
        if inside:
            part.update(sm_mhz=statistics.median(s[1] for s in inside), watts=round(statistics.median(s[2] for s in inside), 1),
                        watts_max=max(s[2] for s in inside), watts_limit=min(s[3] for s in inside),
                        temp_max=max(s[4] for s in inside))
        out.append(part)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="a train_log.jsonl (or its .gz copy)")
    p.add_argument("samples", nargs="+", help="the sampler's gpu_*.csv files of the calls the run spanned")
    p.add_argument("--gpu", type=int, default=0, help="the GPU's index, where the samples have several (PART=4)")
    p.add_argument("--parts", type=int, default=6)
    p.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    a = p.parse_args()
    parts = stretches(read_log(a.log), read_samples(a.samples, a.gpu), a.parts)
    if a.json:
        print(json.dumps(parts))
        return
    print(f"{'steps':>13} {'ms/step':>8} {'SM MHz':>7} {'W med':>6} {'W max':>6} {'W cap':>6} {'C max':>5} {'n':>4}")
    for x in parts:
        print(f"{x['steps'][0]:>6}-{x['steps'][1]:<6} {x['ms_per_step']:>8} {x.get('sm_mhz', '-'):>7} "
              f"{x.get('watts', '-'):>6} {x.get('watts_max', '-'):>6} {x.get('watts_limit', '-'):>6} {x.get('temp_max', '-'):>5} "
              f"{x['samples']:>4}")


if __name__ == "__main__":
    main()
