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

import math

import torch
from torch import nn

from .flips import coded_weights, latent_weight
from .quantizers.base import Encoded

# the frequency and the code average span about the last 100 steps; Nagel et al.'s 0.001 spans 1000 of runs 100
# times as long as ours. They keep the threshold at 2-3 times the momentum or more
MOMENTUM = 0.01
CHECK_EVERY = 10  # steps between freezing decisions (the averages move every step; this saves a pass)
START_THRESHOLD = 0.1  # their starting threshold: a flip back every 10 steps


def threshold_at(step: int, total: int, final: float, start: float = 0.25) -> float | None:
    """The freezing threshold after ``step`` of ``total`` steps: None (nothing frozen) before ``start`` of the
    steps, then a cosine from max(START_THRESHOLD, final) down to ``final`` at the last step."""
    begin = int(start * total)
    if step < begin:
        return None
    high = max(START_THRESHOLD, final)
    p = min(1.0, (step - begin) / max(1, total - begin))
    return final + (high - final) * 0.5 * (1 + math.cos(math.pi * p))


class OscillationFreezer:
    """Tracks every quantized weight of ``model`` and freezes those whose oscillation frequency passes the
    threshold that :meth:`step` is given (a share of steps: 0.03 is a flip back every 33 steps)."""

    def __init__(self, model: nn.Module, momentum: float = MOMENTUM):
        self.pairs = coded_weights(model)
        self.momentum = momentum
        self.state = []
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

    @torch.no_grad()
    def step(self, step: int, threshold: float | None) -> None:
        """After the optimizer's step ``step`` (1-based): put frozen weights back, update the averages from the new
        codes, and every CHECK_EVERY steps freeze the weights past ``threshold`` (None: none)."""
        m = self.momentum
        for (mod, q), st in zip(self.pairs, self.state):
            w = latent_weight(mod)
            torch.where(st["frozen"], st["value"], w, out=w)
            codes = q.codes(w)
            move = torch.sign(codes.to(torch.int16) - st["code"]).to(torch.int8)
            moved = move != 0
            st["freq"].lerp_((moved & (move == -st["last"])).float(), m)  # a change straight back
            st["ema"].lerp_(codes.float(), m)
            st["last"] = torch.where(moved, move, st["last"])
            st["code"] = codes
            if threshold is not None and step % CHECK_EVERY == 0:
                self._freeze(w, q, st, threshold)

    def _freeze(self, w: torch.Tensor, q, st: dict, threshold: float) -> None:
        """Freeze the weights of one matrix whose frequency passed the threshold, at the level of their rounded
        average code (the centre of its bin, so that small drifts of the clip keep the code)."""
        new = (st["freq"] > threshold) & ~st["frozen"]
        enc = q.encode(w)
        target = st["ema"].round().clamp(enc.qmin, enc.qmax).to(torch.int8)
        level = Encoded(target, enc.scale, enc.zero, enc.qmin, enc.qmax, enc.granularity,
                        enc.group_size).dequantize().to(w.dtype)
        st["value"] = torch.where(new, level, st["value"])
        st["frozen"] |= new
        torch.where(new, level, w, out=w)
        st["code"] = torch.where(new, target, st["code"])

    def frozen_share(self) -> float:
        """The share of all quantized weights frozen so far."""
        n = sum(st["frozen"].numel() for st in self.state)
        return torch.stack([st["frozen"].sum() for st in self.state]).sum().item() / max(1, n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, st in enumerate(self.state) for k, v in st.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, st in enumerate(self.state):
            for k in st:
                st[k] = tensors[f"{i}.{k}"].to(st[k].device)
