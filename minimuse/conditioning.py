"""How a condition enters a generator, and classifier-free guidance, which needs both halves of it.

Classifier-free guidance (Ho & Salimans 2022; Muse §2.7) trains one model on p(x | c) and p(x): in training the
condition is replaced by a "null" one with probability p (`drop_labels`), and in sampling the conditional and
null predictions are mixed, l_g = (1 + s) l_c - s l_u (`cfg_mix`), with a scale s that may ramp over the steps
(`guidance_at`).

Today the condition is a class id; its embedding has one learned extra row, the null class. Text encoders,
whose output is a sequence read through cross-attention, will join this module behind the same two steps:
embed, and drop to a null condition that guidance also uses.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.compiler.disable                # an eager draw: the same drops compiled or not (see `minimuse.masking`)
def drop_labels(labels: torch.Tensor, p: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability p, so one model learns p(x | c) and p(x)
    (Muse §2.7 uses p = 0.1)."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


class ClassEmbedding(nn.Embedding):
    """Class ids (B,) in [0, C] -> vectors (B, D), where id C = `null_class` is the learned "no class", the
    unconditional half of a guided batch. `drop(labels)` is the training-time label dropout for guidance."""

    def __init__(self, num_classes: int, dim: int, drop_prob: float):
        super().__init__(num_classes + 1, dim)
        self.null_class, self.drop_prob = num_classes, drop_prob

    def drop(self, labels: torch.Tensor) -> torch.Tensor:
        return drop_labels(labels, self.drop_prob, self.null_class)


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, Muse §2.7: l_g = (1 + s) * l_c - s * l_u. s = 0 gives the conditional output."""
    return (1.0 + scale) * cond - scale * uncond


def guidance_at(step: int, steps: int, scale: float, schedule: str = "linear") -> float:
    """Guidance scale at `step` of `steps`: constant, or ramped linearly from 0 at the first step to `scale` at
    the last (Muse §2.7: low guidance early keeps diversity, high guidance late sharpens the details).

    The ramp follows the step index for every generator. MAR ramps by the fraction of tokens already revealed
    instead, (1 - masked / L) * s; under the cosine schedule that fraction lags the step index (few tokens are
    revealed early), so MAR's own ramp stays lower for longer than ours at the same s.
    """
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return scale * step / (steps - 1) if steps > 1 else scale
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose linear or constant")
