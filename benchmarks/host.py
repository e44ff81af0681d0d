"""The machine a benchmark row came from, beside its GPU: the host's CPU model, its cores and its load average when
the row was written. Steps of one commit on one GPU kind varied 5-15% between machines and sessions with the GPU's
clock flat (BENCHMARKS.md sections 38-41), and the parts the host launches op by op grew most, so the rows record
whether the host differed."""
from __future__ import annotations

import os
import platform


def host_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"host_cpu": model or platform.processor() or platform.machine(), "host_cores": os.cpu_count(),
            "host_load": None if load is None else round(load, 2)}
