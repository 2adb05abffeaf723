"""Optical flow between two frames and warping by it.

Convention used throughout: ``flow`` maps the *current* frame to the *previous* one. For a
pixel ``p`` of the current frame, ``p + flow[p]`` is where the same tissue sat in the previous
frame, so sampling the previous frame (or its features) at ``p + flow[p]`` lines it up with
the current frame. OpenCV's ``calc(I0, I1)`` returns ``flow`` with ``I0(p) ~ I1(p + flow(p))``,
hence ``calc(current, previous)``.

Flow is computed with OpenCV's DIS at a reduced resolution (longest side ``max_side``, by
default half the detector's input) with the FAST preset, several times faster than MEDIUM or
Farneback (``bench/detector_speed.py`` times it). The detector's finest feature map has
stride 8, so flow finer than half resolution buys nothing. Displacements are in pixels of the
returned field; :func:`flow_for_level` rescales them to any feature map.

The annotator's box propagation uses :func:`shrink_pair` and :func:`dis_flow` too (MEDIUM,
both ways). torch is imported inside the functions on tensors only, so the web process can use
this module without loading torch.
"""
from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 HxW from HxW, HxWx1 or HxWx3 (RGB) uint8."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image, dtype=np.uint8)


# One DIS object per preset and thread: calc() is not safe on one object from two threads
# (the web server propagates in request threads while a worker pre-labels).
_DIS = threading.local()


def shrink_pair(a: np.ndarray, b: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Both images grey uint8 (any of the shapes :func:`to_grey` takes), shrunk alike so their
    longest side is at most ``max_side`` (None: full size)."""
    a, b = to_grey(a), to_grey(b)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    h, w = a.shape
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    return a, b


def dis_flow(i0: np.ndarray, i1: np.ndarray, preset: int) -> np.ndarray:
    """DIS flow (float32 hxwx2) with ``i0(p) ~ i1(p + flow(p))`` between two grey uint8 images
    of the same size; zero where they are too small for DIS to build its pyramid."""
    if i0.shape[0] < 8 or i0.shape[1] < 8:
        return np.zeros((*i0.shape, 2), np.float32)
    if not hasattr(_DIS, "by_preset"):
        _DIS.by_preset = {}
    if preset not in _DIS.by_preset:
        _DIS.by_preset[preset] = cv2.DISOpticalFlow_create(preset)
    return _DIS.by_preset[preset].calc(i0, i1, None)


def compute_flow(current: np.ndarray, previous: np.ndarray, max_side: int | None = 256,
                 preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> np.ndarray:
    """Flow current -> previous (float32 hxwx2, x then y), on both grey uint8 images shrunk
    so their longest side is at most ``max_side`` (None: full size)."""
    cur, prev = shrink_pair(current, previous, max_side)
    return dis_flow(cur, prev, preset)


def flow_tensor(flow: np.ndarray) -> torch.Tensor:
    """hxwx2 numpy flow -> 2xhxw float tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32))


def flow_for_level(flow: torch.Tensor, image_size: tuple[int, int],
                   map_size: tuple[int, int], stride: float) -> torch.Tensor:
    """Resize one image's flow (2xhxw over the whole image, in its own pixels) to a feature
    map of ``map_size`` whose top-left ``image_size / stride`` cells cover the image (the rest
    is batch padding, given zero flow), with displacements in feature-map cells."""
    import torch
    import torch.nn.functional as F

    img_h, img_w = image_size
    cells_h = min(map_size[0], max(1, math.ceil(img_h / stride)))
    cells_w = min(map_size[1], max(1, math.ceil(img_w / stride)))
    fh, fw = flow.shape[-2:]
    out = F.interpolate(flow[None], size=(cells_h, cells_w), mode="bilinear",
                        align_corners=False, antialias=(cells_h < fh or cells_w < fw))[0]
    # displacement in cells = displacement in flow pixels * image pixels per flow pixel / stride
    out = out * torch.tensor([img_w / fw / stride, img_h / fh / stride],
                             dtype=out.dtype, device=out.device).reshape(2, 1, 1)
    return F.pad(out, (0, map_size[1] - cells_w, 0, map_size[0] - cells_h))


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``features`` (NxCxHxW) at ``p + flow[p]`` (flow Nx2xHxW in cells of that map)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = features.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).reshape(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).reshape(1, 1, w)
    # align_corners=False: cell centre x sits at normalised (2x + 1) / W - 1
    gx = (2 * (xs + flow[:, 0]) + 1) / w - 1
    gy = (2 * (ys + flow[:, 1]) + 1) / h - 1
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(features, grid.to(features.dtype), mode="bilinear",
                         padding_mode="border", align_corners=False)
