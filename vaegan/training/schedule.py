"""Learning-rate schedule: an optional linear warm-up, then constant, cosine or linear decay.

The factor multiplies every network's base rate (``optim.lr``, ``optim.lr_dis``) at each step. A
decaying schedule runs to ``train.max_steps``: resuming a run with a larger ``train.max_steps``
stretches what is left of it (the rate goes back up to where the longer run would be).
"""
from __future__ import annotations

import math

from vaegan.config import OptimConfig


def lr_factor(optim: OptimConfig, step: int, max_steps: int) -> float:
    """The factor on the base learning rate for the update that starts at ``step`` (0-based).

    Warm-up: ``(step + 1) / lr_warmup_steps`` over the first ``lr_warmup_steps`` steps (the first
    update already moves). Then ``constant`` stays at 1; ``cosine`` and ``linear`` fall from 1 at the
    end of the warm-up to ``lr_final`` at ``max_steps``, and stay there for any step past it.
    """
    warm = optim.lr_warmup_steps
    if step < warm:
        return (step + 1) / warm
    if optim.lr_schedule == "constant":
        return 1.0
    t = min((step - warm) / max(max_steps - warm, 1), 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * t)) if optim.lr_schedule == "cosine" else 1.0 - t
    return optim.lr_final + (1.0 - optim.lr_final) * shape
