"""Optical flow direction, warping and per-level flow scaling."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from detector.backbones import build_body, fuse_conv_bn
from detector.data import grey_to_tensor
from detector.flow import compute_flow, flow_for_level, flow_tensor, warp

DX, DY = 16, 8  # multiples of the stride-8 map, so features shift by whole cells


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def _moving_pair(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The probe moved by (DX, DY): what sat at p + (DX, DY) in the previous frame is at p now."""
    big = cv2.normalize(_texture(size + 64, size + 64), None, 0, 255, cv2.NORM_MINMAX)
    prev = big[16:16 + size, 16:16 + size]
    cur = big[16 + DY:16 + DY + size, 16 + DX:16 + DX + size]
    return np.ascontiguousarray(cur), np.ascontiguousarray(prev)


def test_dis_flow_points_from_current_to_previous():
    cur, prev = _moving_pair()
    flow = compute_flow(cur, prev, max_side=None)
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(DX, abs=0.5)
    assert np.median(inner[..., 1]) == pytest.approx(DY, abs=0.5)


def test_flow_at_reduced_resolution_is_in_its_own_pixels():
    cur, prev = _moving_pair()
    flow = compute_flow(cur, prev, max_side=128)
    assert flow.shape[:2] == (128, 128)
    assert np.median(flow[16:-16, 16:-16, 0]) == pytest.approx(DX / 2, abs=0.5)


def test_identical_frames_have_no_flow():
    cur, _ = _moving_pair()
    assert np.abs(compute_flow(cur, cur)).max() < 0.05


def test_warping_the_previous_image_lines_it_up_with_the_current_one():
    cur, prev = _moving_pair()
    flow = flow_tensor(compute_flow(cur, prev, max_side=None))[None]
    prev_t = torch.from_numpy(prev).float()[None, None]
    cur_t = torch.from_numpy(cur).float()[None, None]
    warped = warp(prev_t, flow)
    inner = (slice(None), slice(None), slice(16, -24), slice(16, -24))
    aligned = (warped - cur_t)[inner].abs().mean()
    unaligned = (prev_t - cur_t)[inner].abs().mean()
    assert aligned < 0.2 * unaligned


def test_warping_previous_features_by_level_flow_lines_them_up():
    cur, prev = _moving_pair()
    body = build_body("efficientnet_lite0").module.eval()
    with torch.no_grad():
        f_cur = body(grey_to_tensor(cur)[None] * 2 - 1)["0"]
        f_prev = body(grey_to_tensor(prev)[None] * 2 - 1)["0"]
    flow = flow_tensor(compute_flow(cur, prev, max_side=128))  # half resolution, as in use
    level = flow_for_level(flow, (256, 256), tuple(f_cur.shape[-2:]), 8)
    assert float(level[0].median()) == pytest.approx(DX / 8, abs=0.2)
    assert float(level[1].median()) == pytest.approx(DY / 8, abs=0.2)
    warped = warp(f_prev, level[None])
    inner = (slice(None), slice(None), slice(2, -4), slice(2, -4))
    aligned = (warped - f_cur)[inner].abs().mean()
    unaligned = (f_prev - f_cur)[inner].abs().mean()
    assert aligned < 0.25 * unaligned


def test_level_flow_covers_the_image_part_of_a_padded_map():
    flow = torch.ones(2, 30, 40) * torch.tensor([4.0, 2.0]).reshape(2, 1, 1)
    # image 120x160 resized, batch padded to 128x160, stride 16 -> map 8x10, image 7.5x10
    level = flow_for_level(flow, (120, 160), (8, 10), 16)
    assert level.shape == (2, 8, 10)
    # 4 flow pixels x (160 / 40) image pixels each / 16 = 1 cell
    assert torch.allclose(level[0, :8], torch.ones(8, 10))
    assert torch.allclose(level[1, :8], torch.full((8, 10), 0.5))
    padded = flow_for_level(flow, (100, 160), (8, 10), 16)
    assert torch.all(padded[:, 7:] == 0)


def test_folding_batch_norm_keeps_the_features():
    body = build_body("efficientnet_lite0").module.eval()
    fused = fuse_conv_bn(copy.deepcopy(body))
    x = torch.rand(1, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        a, b = body(x), fused(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3)
