"""B-mode image formation on the beam grid.

Scatterers: one fixed, periodic 3D complex Gaussian field per dataset seed (128^3 voxels of
0.4 mm, smoothed with a Gaussian of 1.2 voxels so trilinear sampling keeps its variance
nearly constant and a plane moved by a fraction of a millimetre still sees correlated
scatterers, like a real elevational beam). Each video views it through its own random rotation
and offset, so videos differ while the field is built once per process. Trilinear sampling is
one 4-channel ``cv2.remap`` on the volume laid out as a tall 2D image of z-slices (each pixel
holding its slice and the next; one padded row and column per slice for the wrap-around),
which is several times faster than gathering eight neighbours in numpy.

Per frame: complex scatterers times sqrt(echogenicity) are convolved with a separable Gaussian
point-spread function (axial along the beam; lateral width growing away from the focus, applied
per depth band), the envelope is the magnitude (a complex Gaussian gives a Rayleigh envelope:
mean/std = 1.91 in homogeneous tissue), a per-row gain calibrated once per geometry keeps the
speckle power flat with depth, the excess attenuation is integrated down each beam (shadows
below calcifications and the lung, enhancement below fluid and tumours; time-gain compensation
cancels the parenchyma's own attenuation, with a small per-video error), and log compression
over a dynamic range of about 50 dB gives 8-bit grey levels, then scan conversion.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .probe import Geometry, Pose

_DB = 20.0 / np.log(10.0)


class SpeckleField:
    """A periodic 3D complex Gaussian field with E|c|^2 = 1, sampled trilinearly."""

    def __init__(self, seed: int, n: int = 128, voxel_mm: float = 0.3, sigma_vox: float = 1.0):
        self.n, self.voxel_mm = n, voxel_mm
        rng = np.random.default_rng([int(seed), 0x5EED])
        vol = rng.standard_normal((2, n, n, n), dtype=np.float32)
        for c in range(2):
            vol[c] = ndimage.gaussian_filter(vol[c], sigma_vox, mode="wrap")
        vol /= np.sqrt((vol ** 2).sum(0).mean())
        # (z, y, x, [re_z, im_z, re_z+1, im_z+1]): one 4-channel bilinear lookup reads both
        # z-slices around a point, so trilinear sampling is a single remap plus a lerp.
        tall = np.empty((n, n + 1, n + 1, 4), np.float32)
        tall[:, :n, :n, :2] = vol.transpose(1, 2, 3, 0)
        tall[:, :n, :n, 2:] = np.roll(tall[:, :n, :n, :2], -1, axis=0)
        tall[:, n, :n] = tall[:, 0, :n]
        tall[:, :, n] = tall[:, :, 0]
        self.tall = np.ascontiguousarray(tall.reshape(n * (n + 1), n + 1, 4))

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field at voxel coordinates (any real numbers; the field wraps): (..., 2) float32."""
        n = np.float32(self.n)
        inv = np.float32(1.0 / self.n)
        x = x - n * np.floor(x * inv)      # cheaper than np.mod, same result for our range
        y = y - n * np.floor(y * inv)
        z = z - n * np.floor(z * inv)
        z0 = np.minimum(np.floor(z), n - 1)   # float rounding can give exactly n
        fz = z - z0
        rows = z0 * (n + 1)
        rows += y
        both = cv2.remap(self.tall, x, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lo = both[..., :2]
        diff = both[..., 2:] - lo
        diff *= fz[..., None]
        diff += lo
        return diff


@lru_cache(maxsize=2)
def speckle_field(seed: int) -> SpeckleField:
    """The dataset's scatterer field, built once per process (about half a second)."""
    return SpeckleField(seed)


def _gauss(sigma_px: float) -> np.ndarray:
    if sigma_px < 0.25:
        return np.ones(1, np.float32)
    r = int(np.ceil(3 * sigma_px))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    return (k / k.sum()).astype(np.float32)


class Renderer:
    """Turns an anatomy and a pose into a B-mode frame and its label image."""

    def __init__(self, geom: Geometry, anatomy: Anatomy, field: SpeckleField,
                 rng: np.random.Generator, *, axial_mm: float = 0.25, lateral_mm: float = 0.6,
                 focus_mm: float | None = None, dynamic_range_db: float | None = None,
                 elevation_mm: float = 0.7):
        self.geom, self.anatomy, self.field = geom, anatomy, field
        self.elevation_mm = elevation_mm
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        self._rot = q * np.sign(np.diag(r)) / field.voxel_mm
        self._off = rng.uniform(0, field.n, 3)
        self._off_tex = rng.uniform(0, field.n, (2, 3))
        self.gain_db = float(rng.uniform(-2.5, 2.5))
        self.dynamic_range_db = dynamic_range_db or float(rng.uniform(55, 65))
        depth = (np.arange(geom.n_samples) + 0.5) * geom.sample_mm
        # Imperfect TGC: a smooth random gain error over depth, plus a brighter near field.
        knots = rng.uniform(-2.0, 2.0, 5)
        self.tgc_db = (np.interp(depth, np.linspace(0, geom.depth_mm, 5), knots)
                       + 2.5 * np.exp(-depth / 12.0)).astype(np.float32)
        focus = focus_mm if focus_mm is not None else float(rng.uniform(60, 90))
        self._axial = _gauss(axial_mm / geom.sample_mm)
        lat_mm = lateral_mm * np.sqrt(1 + ((depth - focus) / 45.0) ** 2)
        lat_px = lat_mm / geom.beam_mm
        edges = np.linspace(0, geom.n_samples, 9).astype(int)
        self._shadow_px = float(max(0.5, 1.5 * np.median(lat_px)))
        self._bands = [(slice(a, b), _gauss(float(np.median(lat_px[a:b]))))
                       for a, b in zip(edges[:-1], edges[1:]) if b > a]
        self._smooth_px = (max(0.01, 0.6 * geom.size / 512), max(0.01, 0.5 * geom.size / 512))
        self._row_gain_db = np.zeros(geom.n_samples, np.float32)
        self._row_gain_db = self._calibrate()

    # -- pieces ----------------------------------------------------------------------------
    def _plane_coords(self, pose: Pose, step: int = 1, offset: np.ndarray | None = None,
                      scale: float = 1.0) -> tuple[np.ndarray, ...]:
        u, v = self.geom.u[::step, ::step], self.geom.v[::step, ::step]
        rot = self._rot / scale
        o = rot @ pose.origin + (self._off if offset is None else offset)
        a, d = rot @ pose.lateral, rot @ pose.depth
        return tuple(np.float32(o[k]) + u * np.float32(a[k]) + v * np.float32(d[k])
                     for k in range(3))

    def _textures(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Smooth unit-variance textures: parenchyma (~8 mm) and tumour mosaic (~4 mm)."""
        shape = (self.geom.n_beams, self.geom.n_samples)
        out = []
        for i, scale in enumerate((16.0, 8.0)):
            c = self.field.sample(*self._plane_coords(pose, 4, self._off_tex[i], scale))
            out.append(cv2.resize(c[..., 0] * np.float32(np.sqrt(2)), shape,
                                  interpolation=cv2.INTER_LINEAR))
        return out[0], out[1]

    def _speckle(self, pose: Pose, echo: np.ndarray, spec: np.ndarray | None = None) -> np.ndarray:
        if self.elevation_mm > 0:
            # The elevational beam integrates scatterers off the plane: a coherent sum of two
            # parallel slices keeps the field Gaussian and makes speckle survive small
            # out-of-plane motion between frames.
            c = None
            for side in (-0.5, 0.5):
                shifted = Pose(pose.origin + side * self.elevation_mm * pose.normal,
                               pose.lateral, pose.depth)
                part = self.field.sample(*self._plane_coords(shifted))
                c = part if c is None else cv2.add(c, part)
        else:
            c = self.field.sample(*self._plane_coords(pose))
        c *= np.sqrt(np.maximum(echo, 0))[..., None]
        if spec is not None:
            c[..., 0] += spec
        c = cv2.sepFilter2D(c, -1, np.ones(1, np.float32), self._axial,
                            borderType=cv2.BORDER_REFLECT)
        for rows, k in self._bands:
            c[rows] = cv2.sepFilter2D(c[rows], -1, k, np.ones(1, np.float32),
                                      borderType=cv2.BORDER_REFLECT)
        return c

    def _calibrate(self) -> np.ndarray:
        """Per-row gain (dB) making the speckle power of echo 1 flat over depth."""
        ones = np.ones(self.geom.u.shape, np.float32)
        power = np.zeros(self.geom.n_samples)
        for k in range(3):
            pose = Pose(origin=np.array([7.3 * k, -5.1 * k, 0.0]),
                        lateral=np.array([1.0, 0.0, 0.0]), depth=np.array([0.0, 0.0, 1.0]))
            c = self._speckle(pose, ones)
            power += (c ** 2).sum(-1).mean(1)
        power = ndimage.uniform_filter1d(power / 3, 9, mode="nearest")
        return (-10 * np.log10(power)).astype(np.float32)

    # -- public ----------------------------------------------------------------------------
    def grid(self, pose: Pose) -> dict[str, np.ndarray]:
        """Beam-grid maps: echo, specular, atten, labels, envelope (row-calibrated), db."""
        g = self.geom
        world = g.world(pose)
        tex, mosaic = self._textures(pose)
        echo, spec, atten, labels = self.anatomy.paint(g, pose, world, tex, mosaic)
        c = self._speckle(pose, echo, spec)
        env = cv2.magnitude(c[..., 0], c[..., 1])
        env *= (10 ** (self._row_gain_db / 20))[:, None]
        shadow = np.cumsum(atten, axis=0, dtype=np.float32) * np.float32(g.sample_mm)
        # A shadow is as wide as the beam that passed the obstacle: soften its sides.
        shadow = cv2.GaussianBlur(shadow, (0, 0), sigmaX=self._shadow_px, sigmaY=0.01)
        db = cv2.log(env + np.float32(1e-4)) * np.float32(_DB)
        db += (self.tgc_db + np.float32(self.gain_db))[:, None]
        db -= shadow
        return {"echo": echo, "specular": spec, "atten": atten, "labels": labels,
                "envelope": env, "db": db}

    def to_grey(self, db: np.ndarray) -> np.ndarray:
        """Log compression (parenchyma's mean near grey 70) after the mild smoothing that a
        scanner's speckle reduction applies to the log image."""
        dr = np.float32(self.dynamic_range_db)
        db = cv2.GaussianBlur(db, (0, 0), sigmaX=self._smooth_px[1], sigmaY=self._smooth_px[0])
        x = (db + np.float32(0.28 * dr)) * np.float32(255.0 / dr)
        return np.clip(x, 0, 255).astype(np.uint8)

    def render(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """(B-mode image uint8, label image uint16), both size x size, black outside the sector."""
        grid = self.grid(pose)
        image = self.geom.scan_convert(self.to_grey(grid["db"]))
        labels = self.geom.scan_convert(grid["labels"], nearest=True)
        return image, labels
