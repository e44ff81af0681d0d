"""The machine a benchmark row came from, beside its GPU: the host's CPU model, its cores and its load average when
the row was written. Steps of one commit on one GPU kind varied 5-15% between machines and sessions with the GPU's
clock flat (BENCHMARKS.md sections 38-41), and the parts the host launches op by op grew most, so the rows record
whether the host differed. ``host_py_ms`` times a fixed piece of pure Python (the interpreter's speed on this host,
as the trainer's launches see it), so that hosts of one CPU name but different clocks or loads tell apart too."""
from __future__ import annotations

import os
import platform
import statistics
import time


def python_ms(repeats: int = 5) -> float:
    """The median ms of a fixed pure-Python workload (attribute lookups, calls, a dict and a list: what dispatching a
    step's operators costs the interpreter): 10 ms on the 2-core Xeon the tests run on."""
    class Box:
        def __init__(self, v):
            self.v = v

        def get(self):
            return self.v

    def work():
        d, out = {}, []
        for i in range(40_000):
            b = Box(i)
            d[i & 1023] = b.get() + len(out)
            out.append(d[i & 1023])
        return len(out)

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 2)


def host_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"host_cpu": model or platform.processor() or platform.machine(), "host_cores": os.cpu_count(),
            "host_load": None if load is None else round(load, 2), "host_py_ms": python_ms()}
