"""Probe geometry (convex sector or linear) and sweep trajectories.

World ("liver") coordinates are millimetres: x lateral (patient right to left), y cranio-caudal,
z depth from the skin (z = 0). A pose is the centre of the probe face plus two unit vectors,
``lateral`` and ``depth``, spanning the image plane; a pixel at in-plane position (u, v) lies
at ``origin + u * lateral + v * depth``.

Image formation works on a beam grid: rows are samples along a beam (depth), columns are beams.
For a convex probe the beams fan out from a virtual apex ``radius`` mm behind the face, so
attenuation is a cumulative sum down each column and the axial point-spread function runs along
rows; the grid is scan-converted to the square Cartesian output with one ``cv2.remap``. For a
linear probe the grid already is Cartesian and only gets resized.

Trajectories are built per frame in millimetres and degrees per frame, not per video, so that two
consecutive frames are as correlated in a 5-frame scene as in a 300-frame sweep: a slow
sinusoidal sweep (translation, fan tilt or rotation, mixed), smooth low-amplitude hand jitter
and breathing, which moves the liver, not the probe, cranio-caudally.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Pose:
    """One image plane in liver coordinates."""

    origin: np.ndarray   # centre of the probe face, mm
    lateral: np.ndarray  # unit vector along the image's x axis
    depth: np.ndarray    # unit vector pointing into the body along the image's y axis

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.lateral, self.depth)


@dataclass
class Geometry:
    """Beam grid, its in-plane coordinates and the scan conversion to a square image."""

    kind: str = "convex"           # "convex" or "linear"
    size: int = 512                # output image is size x size
    depth_mm: float = 160.0        # imaging depth below the probe face
    radius_mm: float = 45.0        # convex: radius of curvature of the face
    fov_deg: float = 58.0          # convex: sector opening angle
    width_mm: float = 60.0         # linear: aperture width
    n_beams: int = 0               # columns of the beam grid; 0 = chosen from size
    n_samples: int = 0             # rows of the beam grid; 0 = size
    u: np.ndarray = field(init=False, repr=False)    # in-plane lateral mm, beam grid
    v: np.ndarray = field(init=False, repr=False)    # in-plane depth below face centre, mm
    map_x: np.ndarray = field(init=False, repr=False)
    map_y: np.ndarray = field(init=False, repr=False)
    mm_per_px: float = field(init=False)
    sample_mm: float = field(init=False)             # radial spacing of the beam grid
    beam_mm: np.ndarray = field(init=False, repr=False)  # lateral spacing per row, mm

    def __post_init__(self) -> None:
        if self.kind not in {"convex", "linear"}:
            raise ValueError(f"probe geometry must be convex or linear, not {self.kind!r}")
        ns = self.n_samples or self.size
        # About as many beams as a real convex probe fires (128-256): lateral resolution is
        # coarser than axial anyway, and the scan conversion interpolates between beams.
        nb = self.n_beams or max(16, int(round(self.size * 0.5)))
        self.n_samples, self.n_beams = ns, nb
        rows = (np.arange(ns, dtype=np.float64) + 0.5) / ns
        cols = (np.arange(nb, dtype=np.float64) + 0.5) / nb
        self.sample_mm = self.depth_mm / ns
        if self.kind == "convex":
            half = np.deg2rad(self.fov_deg) / 2
            r = self.radius_mm + rows * self.depth_mm
            th = -half + cols * 2 * half
            rr, tt = np.meshgrid(r, th, indexing="ij")
            self.u = (rr * np.sin(tt)).astype(np.float32)
            self.v = (rr * np.cos(tt) - self.radius_mm).astype(np.float32)
            self.beam_mm = r * (2 * half / nb)
            r_max = self.radius_mm + self.depth_mm
            top = self.radius_mm * np.cos(half)
            width = 2 * r_max * np.sin(half)
            height = r_max - top
            self.mm_per_px = max(width, height) / self.size
            px = (np.arange(self.size) + 0.5 - self.size / 2) * self.mm_per_px
            py = top + (np.arange(self.size) + 0.5) * self.mm_per_px
            xx, yy = np.meshgrid(px, py)
            rad = np.hypot(xx, yy)
            ang = np.arctan2(xx, yy)
            mx = (ang + half) / (2 * half) * nb - 0.5
            my = (rad - self.radius_mm) / self.depth_mm * ns - 0.5
            outside = (rad < self.radius_mm) | (rad > r_max) | (np.abs(ang) > half)
        else:
            u = -self.width_mm / 2 + cols * self.width_mm
            v = rows * self.depth_mm
            uu, vv = np.meshgrid(u, v)
            self.u, self.v = uu.astype(np.float32), vv.astype(np.float32)
            self.beam_mm = np.full(ns, self.width_mm / nb)
            self.mm_per_px = max(self.width_mm, self.depth_mm) / self.size
            px = (np.arange(self.size) + 0.5 - self.size / 2) * self.mm_per_px
            py = (np.arange(self.size) + 0.5) * self.mm_per_px
            xx, yy = np.meshgrid(px, py)
            mx = (xx + self.width_mm / 2) / self.width_mm * nb - 0.5
            my = yy / self.depth_mm * ns - 0.5
            outside = (np.abs(xx) > self.width_mm / 2) | (yy > self.depth_mm)
        # Far outside the grid so both bilinear and nearest lookups return the border value 0.
        mx[outside] = -100.0
        my[outside] = -100.0
        self.map_x = mx.astype(np.float32)
        self.map_y = my.astype(np.float32)
        self.sector = ~outside

    def world(self, pose: Pose, rows: slice = slice(None), cols: slice = slice(None)
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Liver coordinates (x, y, z) of the beam-grid samples in ``rows`` x ``cols``."""
        u, v = self.u[rows, cols], self.v[rows, cols]
        o, a, d = (np.asarray(x, np.float32) for x in (pose.origin, pose.lateral, pose.depth))
        return tuple(o[k] + u * a[k] + v * d[k] for k in range(3))  # type: ignore[return-value]

    def grid_window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice] | None:
        """Beam-grid rows/cols covering the in-plane rectangle [u0,u1] x [v0,v1] (mm), or None."""
        ns, nb = self.n_samples, self.n_beams
        if self.kind == "convex":
            half = np.deg2rad(self.fov_deg) / 2
            y0, y1 = max(v0 + self.radius_mm, 1e-3), v1 + self.radius_mm
            if y1 <= 1e-3:
                return None
            cu = min(max(0.0, u0), u1)
            r_lo = np.hypot(cu, y0)
            r_hi = max(np.hypot(u, y) for u in (u0, u1) for y in (y0, y1))
            angles = [np.arctan2(u, y) for u in (u0, u1) for y in (y0, y1)]
            a_lo, a_hi = min(angles), max(angles)
            i0 = (r_lo - self.radius_mm) / self.depth_mm * ns - 1
            i1 = (r_hi - self.radius_mm) / self.depth_mm * ns + 1
            j0 = (a_lo + half) / (2 * half) * nb - 1
            j1 = (a_hi + half) / (2 * half) * nb + 1
        else:
            i0, i1 = v0 / self.depth_mm * ns - 1, v1 / self.depth_mm * ns + 1
            j0 = (u0 + self.width_mm / 2) / self.width_mm * nb - 1
            j1 = (u1 + self.width_mm / 2) / self.width_mm * nb + 1
        i0, i1 = max(0, int(np.floor(i0))), min(ns, int(np.ceil(i1)) + 1)
        j0, j1 = max(0, int(np.floor(j0))), min(nb, int(np.ceil(j1)) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def scan_convert(self, grid: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Beam grid -> size x size image; black (0) outside the sector."""
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.remap(grid, self.map_x, self.map_y, interp, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _smooth_noise(rng: np.random.Generator, n: int, corr_frames: float) -> np.ndarray:
    """Zero-mean unit-std noise, smooth over about ``corr_frames`` frames (hand tremor/drift)."""
    pad = int(3 * corr_frames) + 1
    raw = rng.standard_normal(n + 2 * pad)
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / max(corr_frames, 1e-3)) ** 2)
    sm = np.convolve(raw, k / np.sqrt((k ** 2).sum()), mode="same")[pad:pad + n]
    return sm


@dataclass(frozen=True)
class Sweep:
    """Parameters of one video's probe motion (all rates per frame)."""

    start: np.ndarray          # face centre at frame 0, mm
    yaw_deg: float             # image plane's lateral axis angle about z
    tilt_deg: float            # fan tilt of the plane towards its normal
    roll_deg: float            # in-plane rocking
    elev_mm: float             # elevational translation amplitude, mm
    elev_period: float         # frames per full back-and-forth sweep
    fan_deg: float             # fan tilt amplitude, degrees
    rot_deg: float             # rotation amplitude about the beam axis, degrees
    phase: float               # where in the sweep frame 0 lies, radians
    breath_mm: float           # cranio-caudal liver excursion amplitude
    breath_period: float       # frames per breath
    jitter_mm: float
    jitter_deg: float


def random_sweep(rng: np.random.Generator, fps: float = 15.0) -> Sweep:
    """A plausible free-hand sweep: mostly elevational translation or fanning, some rotation."""
    mode = rng.choice(["translate", "fan", "rotate"], p=[0.45, 0.35, 0.2])
    speed = rng.uniform(0.35, 0.9)  # mm (or equivalent) of plane travel per frame at mid depth
    period = rng.uniform(90, 220)
    amp_mm = speed * period / (2 * np.pi)
    return Sweep(
        start=np.array([rng.uniform(-25, 25), rng.uniform(-20, 20), 0.0]),
        yaw_deg=float(rng.choice([0.0, 90.0]) + rng.uniform(-30, 30)),
        tilt_deg=float(rng.uniform(-12, 12)),
        roll_deg=float(rng.uniform(-6, 6)),
        elev_mm=float(amp_mm if mode == "translate" else amp_mm * 0.2),
        elev_period=float(period),
        fan_deg=float(np.rad2deg(amp_mm / 80.0) if mode == "fan" else rng.uniform(0, 3)),
        rot_deg=float(np.rad2deg(amp_mm / 60.0) if mode == "rotate" else rng.uniform(0, 4)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        breath_mm=float(rng.uniform(3, 9)),
        breath_period=float(fps * rng.uniform(3.5, 5.5)),
        jitter_mm=float(rng.uniform(0.08, 0.25)),
        jitter_deg=float(rng.uniform(0.1, 0.35)),
    )


def trajectory(sweep: Sweep, n_frames: int, rng: np.random.Generator) -> list[Pose]:
    """Poses of ``n_frames`` consecutive frames in liver coordinates (breathing included)."""
    t = np.arange(n_frames, dtype=np.float64)
    s = np.sin(2 * np.pi * t / sweep.elev_period + sweep.phase)
    jit = [_smooth_noise(rng, n_frames, 4.0) for _ in range(6)]
    breath = sweep.breath_mm * 0.5 * (1 - np.cos(2 * np.pi * t / sweep.breath_period
                                                 + rng.uniform(0, 2 * np.pi)))
    poses = []
    yaw = np.deg2rad(sweep.yaw_deg)
    lateral0 = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    normal0 = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    for k in range(n_frames):
        tilt = np.deg2rad(sweep.tilt_deg + sweep.fan_deg * s[k] + sweep.jitter_deg * jit[0][k])
        roll = np.deg2rad(sweep.roll_deg + sweep.jitter_deg * jit[1][k])
        rot = np.deg2rad(sweep.rot_deg * s[k] + sweep.jitter_deg * jit[2][k])
        depth = np.array([0.0, 0.0, 1.0])
        # rotate about the beam axis, then fan about the lateral axis, then rock in plane
        r_rot = _rot(depth, rot)
        lat, nrm = r_rot @ lateral0, r_rot @ normal0
        r_tilt = _rot(lat, tilt)
        depth, nrm = r_tilt @ depth, r_tilt @ nrm
        r_roll = _rot(nrm, roll)
        lat, depth = r_roll @ lat, r_roll @ depth
        origin = sweep.start + normal0 * sweep.elev_mm * s[k] + np.array(
            [jit[3][k], jit[4][k], 0.3 * jit[5][k]]) * sweep.jitter_mm
        # Breathing moves the liver caudally under a still probe: shift the plane the other way.
        origin = origin - np.array([0.0, breath[k], 0.15 * breath[k]])
        poses.append(Pose(origin=origin, lateral=lat / np.linalg.norm(lat),
                          depth=depth / np.linalg.norm(depth)))
    return poses
