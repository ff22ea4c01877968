"""Exponential moving average of the encoder and decoder weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``decay``-averaged copies of some modules; buffers (BN statistics) are copied."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.modules = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        for name, module in modules.items():
            shadow = self.modules[name]
            params = [p for p in shadow.parameters()]
            torch._foreach_lerp_(params, [p.detach() for p in module.parameters()], 1.0 - self.decay)
            for b_shadow, b in zip(shadow.buffers(), module.buffers()):
                b_shadow.copy_(b)

    def state_dict(self) -> dict:
        return {name: m.state_dict() for name, m in self.modules.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.modules.items():
            m.load_state_dict(state[name])
