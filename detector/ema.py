"""An exponential moving average of the weights (``--ema DECAY``).

The averaged weights are what is validated, kept as ``model.pt`` and used for prediction;
the optimiser steps the raw weights. ``decay`` is reached after a warm-up
(``min(decay, (1 + step) / (10 + step))``, as in the TensorFlow / YOLO implementations),
so the average does not hold on to the random first weights. Integer buffers (batch-norm
counters) are copied, not averaged.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


class WeightEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError("ema decay must be between 0 and 1")
        self.decay, self.steps = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                shadow.copy_(value)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """The averaged weights in ``model`` for the duration; the raw ones back after."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(raw)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.steps = state["decay"], state["steps"]
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
