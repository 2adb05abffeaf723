"""Combining the previous frame's feature maps with the current ones, per FPN level.

Both aggregators work in two steps so a video can be processed one backbone pass per frame:
``frame_state(features)`` is computed once per frame (and kept for the next one), and
``combine(current_state, previous_state, flows)`` merges two states into the maps the RPN and
box head see. ``flows[level]`` is Nx2xHxW flow current -> previous in cells of that level's
map (see :mod:`detector.flow`).

* :class:`FlowGuidedAggregation` (FGFA, Zhu et al. 2017): warp the previous maps by the flow,
  embed with a small shared 1x1 -> 3x3 -> 1x1 network, per-pixel cosine similarity between
  the current embedding and the warped previous one, softmax over the two frames (the current
  frame's own similarity is 1), weighted sum. FGFA embeds the *warped* features; here the
  embedding of each frame is computed once, on its own maps, and warped together with them,
  so a streaming frame costs one embedding pass instead of two. The embedding is local
  (receptive field 3 cells) and bilinear warping nearly commutes with it.
* :class:`ConcatAggregation`, the paper's literal reading: unwarped previous maps and the flow
  channels concatenated to the current maps, through a bottleneck, added to the current maps.
  Its last layer starts at zero, so it starts as the single-frame detector.

Both share one set of weights across FPN levels (as the RPN head does): the levels share a
channel count and the paper has one aggregation layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detector.flow import warp

FrameState = dict[str, dict[str, torch.Tensor]]


class FlowGuidedAggregation(nn.Module):
    def __init__(self, channels: int, embed_channels: int | None = None):
        super().__init__()
        mid = max(16, channels // 4)
        out = embed_channels or max(32, channels // 2)
        self.embed = nn.Sequential(
            nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 1),
        )

    def frame_state(self, features: dict[str, torch.Tensor]) -> FrameState:
        return {"features": dict(features),
                "embeddings": {k: F.normalize(self.embed(v), dim=1) for k, v in features.items()}}

    def combine(self, current: FrameState, previous: FrameState,
                flows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for level, cur in current["features"].items():
            cur_emb = current["embeddings"][level]
            prev = torch.cat((previous["features"][level], previous["embeddings"][level]), 1)
            warped = warp(prev, flows[level])
            prev_feat, prev_emb = warped[:, :cur.shape[1]], warped[:, cur.shape[1]:]
            # bilinear warping shortens unit vectors a little; renormalise for a true cosine
            similarity = (cur_emb * F.normalize(prev_emb, dim=1)).sum(1, keepdim=True)
            weights = torch.softmax(torch.cat((torch.ones_like(similarity), similarity), 1), 1)
            out[level] = weights[:, :1] * cur + weights[:, 1:] * prev_feat
        return out


class ConcatAggregation(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        mid = max(16, channels // 4)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(2 * channels + 2, mid, 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1),
        )
        nn.init.zeros_(self.bottleneck[-1].weight)
        nn.init.zeros_(self.bottleneck[-1].bias)

    def frame_state(self, features: dict[str, torch.Tensor]) -> FrameState:
        return {"features": dict(features)}

    def combine(self, current: FrameState, previous: FrameState,
                flows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for level, cur in current["features"].items():
            x = torch.cat((cur, previous["features"][level], flows[level].to(cur.dtype)), 1)
            out[level] = cur + self.bottleneck(x)
        return out
