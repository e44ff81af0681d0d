"""Code flips: the share of a quantized model's weights whose integer code changed between two moments.

At 2 bits a long run makes much of its last gain while the learning rate goes to zero, and a floor of 1e-6
undoes it (BENCHMARKS.md sections 26-27). One explanation is oscillation (Nagel et al., 2022, "Overcoming
Oscillations in Quantization-Aware Training"): latent weights next to a rounding threshold cross it back and
forth from step to step, so the model evaluated at any step is one random draw of their codes. Two numbers
tell this apart from ordinary learning. The first is the codes changed by one step. The second is the codes
changed over the ``log_every`` steps since the last log. A weight that flips back and forth counts in the
first at every step but not in the second, while one that moves across a threshold once counts in both. So
many one-step flips against few net changes mean oscillation (TrainConfig.track_flips logs both).
"""
from __future__ import annotations

import torch
from torch import nn

from .convert import weight_quantizers


def coded_weights(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(module, quantizer)`` for every weight quantizer of the model, once each (a tied head shares its
    embedding's quantizer and weight, so it is not counted twice)."""
    return [(model.get_submodule(name), q) for name, q in weight_quantizers(model)]


def latent_weight(m: nn.Module) -> torch.Tensor:
    """A quantized module's float master weight as its quantizer sees it, ``(out, in)``: GPT-2's Conv1D gives a
    transposed view, so writing to it writes the parameter."""
    return (m.weight_2d() if hasattr(m, "weight_2d") else m.weight).detach()


@torch.no_grad()
def codes_of(pairs) -> list[torch.Tensor]:
    """The integer codes each quantizer gives its module's weight now, as the forward rounds them."""
    return [q.codes(latent_weight(m)) for m, q in pairs]


def changed(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The share of all codes that differ between two snapshots of :func:`codes_of` (0 to 1)."""
    diff = torch.stack([(x != y).sum() for x, y in zip(a, b, strict=True)]).sum().item()  # one sync
    return diff / max(1, sum(x.numel() for x in a))
