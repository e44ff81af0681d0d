"""Freezing oscillating weights: the iterative freezing of Nagel et al. (2022, "Overcoming Oscillations in
Quantization-Aware Training", Sec. 4.2), for every weight quantizer of a student.

After each optimizer step, each weight's integer code is compared with the one it had before the step. An
oscillation is a change of code opposite to the weight's last change (a weight crossing a rounding threshold
and straight back). Its frequency ``freq`` is an exponential moving average of that event (``MOMENTUM``).
The codes get their own moving average, ``ema``. Once ``freq`` passes the threshold (checked every ``CHECK_EVERY``
steps), the weight is frozen. As in their code, nothing is frozen in the first quarter of the run (``start``),
and the threshold then falls along a cosine from START_THRESHOLD to the final one (:func:`threshold_at`). Its latent value is set to the level of its rounded ``ema`` code (the side it
spent most time on) and put back there after every later step, so the optimizer cannot move it. The other
weights train on with it fixed. Why: at 2-2-8 a long run makes its largest gains only as the learning rate goes
to zero, and a floor of 1e-6 undoes them (BENCHMARKS.md sections 26-27). That is what weights flipping at
thresholds would do. Freezing brings the quiet of the last steps to the weights that oscillate, earlier.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .flips import coded_weights, latent_weight
from .quantizers.base import Encoded
from .schedules import cosine, progress

# the frequency and the code average span about the last 100 steps; Nagel et al.'s 0.001 spans 1000 of runs 100
# times as long as ours. They keep the threshold at 2-3 times the momentum or more
MOMENTUM = 0.01
CHECK_EVERY = 10  # steps between freezing decisions (the averages move every step; this saves a pass)
START_THRESHOLD = 0.1  # their starting threshold: a flip back every 10 steps


def freeze_begin(total: int, start: float = 0.25) -> int:
    """The step from which a run of ``total`` steps freezes: ``start`` of its steps."""
    return int(start * total)


def threshold_at(step: int, total: int, final: float, start: float = 0.25) -> float | None:
    """The freezing threshold after ``step`` of ``total`` steps: None (nothing frozen) before ``start`` of the
    steps, then a cosine from max(START_THRESHOLD, final) down to ``final`` at the last step."""
    begin = freeze_begin(total, start)
    if step < begin:
        return None
    high = max(START_THRESHOLD, final)
    return final + (high - final) * cosine(progress(step, begin, total))


def _track(q, w, frozen, value, code, last, freq, ema, momentum: float) -> None:
    """One matrix after an optimizer step, in place: put its frozen weights back, then move the averages by the
    change of its codes. A function of tensors and the quantizer alone, so that torch.compile makes one graph per
    kind of matrix (the quantizer's parameters are graph inputs) instead of some 30 eager kernels per matrix."""
    w.copy_(torch.where(frozen, value, w))
    codes = q.codes(w)
    move = torch.sign(codes.to(torch.int16) - code).to(torch.int8)
    moved = move != 0
    freq.lerp_((moved & (move == -last)).float(), momentum)  # a change straight back
    ema.lerp_(codes.float(), momentum)
    last.copy_(torch.where(moved, move, last))
    code.copy_(codes)


def _freeze(q, w, frozen, value, code, freq, ema, threshold: torch.Tensor) -> None:
    """Freeze the weights of one matrix whose frequency passed ``threshold`` (a 0-d tensor, so that its changing
    value is no reason to compile again), at the level of their rounded average code: the centre of its bin, so
    that small drifts of the clip keep the code."""
    new = (freq > threshold) & ~frozen
    _, scale, zero, qmin, qmax = q.encode_rows(q.to_rows(w))
    target = ema.round().clamp(qmin, qmax).to(torch.int8)
    level = Encoded(target, scale, zero, qmin, qmax, q.granularity, q.group_size).dequantize().to(w.dtype)
    value.copy_(torch.where(new, level, value))
    frozen.copy_(frozen | new)
    w.copy_(torch.where(new, level, w))
    code.copy_(torch.where(new, target, code))


class OscillationFreezer:
    """Tracks every quantized weight of ``model`` and freezes those whose oscillation frequency passes the
    threshold that :meth:`step` is given (a share of steps: 0.03 is a flip back every 33 steps).

    ``compile``: run the per-matrix updates through torch.compile (the trainer does so where it compiles its
    blocks). Eager, the tracking is about 30 small kernels per matrix and step, over 200 matrices for SmolLM2:
    at a step of 150 ms on an H100 their launches alone would cost a large share of it."""

    def __init__(self, model: nn.Module, momentum: float = MOMENTUM, compile: bool = False, graph: bool = False):
        self.pairs = coded_weights(model)
        self.momentum = momentum
        self.state = []
        self._track = torch.compile(_track, dynamic=False) if compile else _track
        self._freeze = torch.compile(_freeze, dynamic=False) if compile else _freeze
        # graph (CUDA only): each kind of step (tracking alone; tracking and a check) runs once as it is, which
        # compiles and warms it, is then captured whole into a CUDA graph, and replayed from then on: one launch
        # a step instead of one Python call per matrix. The graph reads the weights, the quantizers' parameters
        # and the state where they are, so they are only ever written in place (the optimizer, resume's loads).
        self.graph = graph
        self._graphs: dict = {}  # check -> the replay of its captured step
        self._warm: set[bool] = set()
        with torch.no_grad():
            for m, q in self.pairs:
                w = latent_weight(m)
                code = q.codes(w)
                self.state.append({
                    "code": code,  # the codes after the last step
                    "last": torch.zeros_like(code),  # the direction of each weight's last change of code (-1, 0, 1)
                    "freq": torch.zeros_like(w, dtype=torch.float32),  # the moving average of changes straight back
                    "ema": code.float(),  # the moving average of the codes
                    "frozen": torch.zeros_like(code, dtype=torch.bool),
                    "value": torch.zeros_like(w),  # where the frozen weights are held
                })
        # the check's threshold, a tensor each check fills, so that its fall along the cosine compiles nothing again
        self._thr = torch.full((), float("inf"), device=self.state[0]["freq"].device) if self.state else None
        if compile:
            self._compile_now()

    @torch.no_grad()
    def _compile_now(self) -> None:
        """Run both kinds of step once on the state as just built, where both change nothing (each code is its
        own last one, and no frequency passes an infinite threshold): compiled, their graphs are made here, before
        a run's first step, and not at the first freezing check a quarter into the run. There the compile stalled
        a step for about 9 s on an H100 (BENCHMARKS.md section 35), inside the rate a time budget fits its steps to;
        compiled here, no ten steps near that check ran more than 0.17 s slow (section 36).
        The threshold is still the infinite one it was built with."""
        if self.state:
            self._all(True)

    @torch.no_grad()
    def step(self, step: int, threshold: float | None) -> None:
        """After the optimizer's step ``step`` (1-based): put frozen weights back, update the averages from the new
        codes, and every CHECK_EVERY steps freeze the weights past ``threshold`` (None: none)."""
        check = threshold is not None and step % CHECK_EVERY == 0 and bool(self.state)
        if check:
            self._thr.fill_(threshold)
        if not self.graph:
            return self._all(check)
        if check not in self._warm:  # the first of its kind runs as it is (compiling, allocating)
            self._warm.add(check)
            return self._all(check)
        if check not in self._graphs:
            try:
                self._graphs[check] = self._capture(check)
            except Exception as e:  # nothing ran in the capture: this step's update is still to do, as it is
                warnings.warn(f"the freezer's step could not be captured in a CUDA graph ({e}); it runs without one")
                self.graph = False
                return self._all(check)
        self._graphs[check]()

    def _capture(self, check: bool):
        """Record one step of a kind into a CUDA graph, which runs nothing, and return its replay."""
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._all(check)
        return g.replay

    def _all(self, check: bool) -> None:
        for (mod, q), st in zip(self.pairs, self.state):
            w = latent_weight(mod)
            self._track(q, w, st["frozen"], st["value"], st["code"], st["last"], st["freq"], st["ema"], self.momentum)
            if check:
                self._freeze(q, w, st["frozen"], st["value"], st["code"], st["freq"], st["ema"], self._thr)

    def frozen_share(self) -> float:
        """The share of all quantized weights frozen so far."""
        n = sum(st["frozen"].numel() for st in self.state)
        return torch.stack([st["frozen"].sum() for st in self.state]).sum().item() / max(1, n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, st in enumerate(self.state) for k, v in st.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, st in enumerate(self.state):
            for k in st:
                st[k].copy_(tensors[f"{i}.{k}"])
