"""The 3D liver: analytic objects painted onto each image plane.

Everything is analytic in liver coordinates (mm; see ``probe``), so a frame is exact at any
pose and the ground truth comes from the very masks that set the echoes:

- tumours: ellipsoids (HCC-like, 1-4 cm, round or oval), iso-, hypo- or hyperechoic, often with
  a hypoechoic halo (capsule) shell, a mosaic interior (compartments with bright septa, from a
  smooth 3D texture) and less attenuation than parenchyma (posterior enhancement);
- vessels: branching polylines of capsules (tube segments with radius); portal branches have
  bright walls, hepatic veins do not; lumens are anechoic and barely attenuate (enhancement);
- calcifications: small bright spheres that attenuate strongly (acoustic shadow), unlabelled;
- abdominal wall: skin, fat, fascia and muscle bands measured along the beam from the face,
  ending at the bright liver capsule, whose depth undulates with the world position;
- diaphragm: a spherical dome; beyond it the lung (faint mirror-like texture, strong attenuation).

Per frame, ``paint`` culls objects that cannot meet the plane (distance from the plane against
the object's extent) and evaluates each survivor only on the beam-grid window covering its
in-plane footprint, which keeps a frame with dozens of vessel segments cheap.
Attenuation is returned as *excess* over the parenchyma's, in dB per mm round trip; the
scanner's time-gain compensation is assumed to cancel the parenchyma's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .probe import Geometry, Pose

TUMOR, VESSEL = 1, 2
CATEGORIES = [{"id": TUMOR, "name": "tumor", "supercategory": "lesion"},
              {"id": VESSEL, "name": "vessel", "supercategory": "anatomy"}]

LUMEN_ECHO = 0.012
FLUID_ATTEN = -0.3       # dB/mm round trip relative to parenchyma: fluid hardly attenuates
CALC_ECHO, CALC_ATTEN = 6.0, 8.0
CALC_SPECULAR = 5.0
LUNG_ECHO, LUNG_ATTEN = 0.3, 0.5
DIAPHRAGM_ECHO, DIAPHRAGM_MM, DIAPHRAGM_SPECULAR = 3.0, 4.0, 3.2
CAPSULE_ECHO, CAPSULE_SPECULAR = 2.0, 2.0


@dataclass
class Tumour:
    center: np.ndarray
    semi_axes: np.ndarray                 # mm, along the columns of ``rotation``
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    echo: float = 0.4                     # relative to parenchyma (1.0)
    kind: str = "hypo"                    # hypo / iso / hyper
    halo_mm: float = 0.0                  # hypoechoic capsule thickness, 0 = none
    halo_echo: float = 0.15
    mosaic: float = 0.0                   # strength of the mosaic interior, 0..0.8
    atten: float = -0.12                  # excess attenuation, dB/mm (negative: enhancement)

    @property
    def extent(self) -> float:
        return float(self.semi_axes.max() + self.halo_mm)

    def attributes(self) -> dict:
        return {"echogenicity": self.kind, "halo": self.halo_mm > 0,
                "diameter_mm": round(float(2 * self.semi_axes.max()), 1),
                "mosaic": self.mosaic > 0.2}


@dataclass
class Branch:
    points: np.ndarray                    # (K, 3) polyline, K >= 2
    radius: float                         # lumen radius at the first point, mm
    taper: float = 0.85                   # radius at the last point / first
    kind: str = "portal"                  # portal (bright wall) / hepatic
    wall_mm: float = 0.0
    wall_echo: float = 1.0                # specular amplitude of the wall (0: none)

    def attributes(self) -> dict:
        return {"vessel": self.kind, "radius_mm": round(self.radius, 1)}


@dataclass
class Anatomy:
    tumours: list[Tumour] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    calcifications: list[tuple[np.ndarray, float]] = field(default_factory=list)
    wall_mm: float = 18.0
    wall_undulation_mm: float = 2.0
    wall_phase: tuple[float, float] = (0.0, 0.0)
    fat_mm: float = 7.0
    muscle_mm: float = 6.0
    diaphragm_center: np.ndarray | None = None
    diaphragm_radius: float = 0.0
    texture: float = 0.18                 # large-scale parenchymal heterogeneity

    def __post_init__(self) -> None:
        self._build_segments()

    # -- objects and their ground-truth identity -------------------------------------------
    def objects(self) -> list[dict]:
        """Labelled objects in label order (label value = index + 1): tumours, then vessels."""
        objs = [{"category_id": TUMOR, "local_id": i + 1, "attributes": t.attributes()}
                for i, t in enumerate(self.tumours)]
        objs += [{"category_id": VESSEL, "local_id": 101 + i, "attributes": b.attributes()}
                 for i, b in enumerate(self.branches)]
        return objs

    def _build_segments(self) -> None:
        p0, p1, rad, wall, wecho, label = [], [], [], [], [], []
        base = len(self.tumours)
        for bi, b in enumerate(self.branches):
            k = len(b.points) - 1
            for s in range(k):
                p0.append(b.points[s])
                p1.append(b.points[s + 1])
                rad.append(b.radius * (1 - (1 - b.taper) * (s + 0.5) / k))
                wall.append(b.wall_mm)
                wecho.append(b.wall_echo)
                label.append(base + bi + 1)
        self._p0 = np.array(p0, dtype=np.float64).reshape(-1, 3)
        self._p1 = np.array(p1, dtype=np.float64).reshape(-1, 3)
        self._rad = np.array(rad, dtype=np.float64)
        self._wall = np.array(wall, dtype=np.float64)
        self._wecho = np.array(wecho, dtype=np.float64)
        self._label = np.array(label, dtype=np.int64)

    # -- per-frame evaluation ----------------------------------------------------------------
    def paint(self, geom: Geometry, pose: Pose, world: tuple[np.ndarray, ...],
              tex: np.ndarray, mosaic_tex: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Echogenicity, specular amplitude, excess attenuation (dB/mm) and object labels on
        the beam grid.

        Echogenicity scales diffuse scatterers (speckle); the specular amplitude is a coherent
        reflection added to them, which is what makes vessel walls, the capsule and the
        diaphragm continuous bright lines instead of bright speckle.
        ``world`` is the grid's liver coordinates; ``tex`` and ``mosaic_tex`` are smooth
        zero-mean unit-variance 3D textures sampled on the grid.
        """
        shape = geom.u.shape
        echo = (1.0 + self.texture * tex).astype(np.float32)
        spec = np.zeros(shape, np.float32)
        atten = np.zeros(shape, np.float32)
        labels = np.zeros(shape, np.uint16)
        o, a, d, n = pose.origin, pose.lateral, pose.depth, pose.normal
        self._paint_vessels(geom, pose, echo, spec, atten, labels)
        for ti, t in enumerate(self.tumours):
            rel = t.center - o
            if abs(rel @ n) > t.extent:
                continue
            cu, cv, e = rel @ a, rel @ d, t.extent
            win = geom.grid_window(cu - e, cu + e, cv - e, cv + e)
            if win is None:
                continue
            rows, cols = win
            q = [world[k][rows, cols] - np.float32(t.center[k]) for k in range(3)]
            loc = [q[0] * t.rotation[0, j] + q[1] * t.rotation[1, j] + q[2] * t.rotation[2, j]
                   for j in range(3)]
            s_in = sum((loc[j] / t.semi_axes[j]) ** 2 for j in range(3))
            s_out = sum((loc[j] / (t.semi_axes[j] + t.halo_mm)) ** 2 for j in range(3))
            inside, shell = s_in < 1.0, (s_out < 1.0) & (s_in >= 1.0)
            if not shell.any() and not inside.any():
                continue
            ew, aw, lw = echo[rows, cols], atten[rows, cols], labels[rows, cols]
            body = np.float32(t.echo) * np.exp(np.float32(t.mosaic) * mosaic_tex[rows, cols])
            if t.mosaic > 0.2:
                # Septa between the mosaic compartments: thin bright bands along level sets.
                septa = np.abs(mosaic_tex[rows, cols]) < 0.07 * (1 + t.mosaic)
                body = np.where(septa, body * 2.2 + 0.3, body)
            ew[inside] = body[inside]
            aw[inside] = t.atten
            ew[shell] = t.halo_echo
            aw[shell] = 0.0
            lw[inside | shell] = ti + 1
        for center, radius in self.calcifications:
            rel = center - o
            if abs(rel @ n) > radius:
                continue
            cu, cv = rel @ a, rel @ d
            win = geom.grid_window(cu - radius, cu + radius, cv - radius, cv + radius)
            if win is None:
                continue
            rows, cols = win
            r2 = sum((world[k][rows, cols] - np.float32(center[k])) ** 2 for k in range(3))
            hit = r2 < radius ** 2
            echo[rows, cols][hit] = CALC_ECHO
            spec[rows, cols][hit] = CALC_SPECULAR
            atten[rows, cols][hit] = CALC_ATTEN
        self._paint_wall(geom, pose, world, tex, echo, spec, atten, labels)
        self._paint_diaphragm(geom, world, tex, echo, spec, atten, labels)
        return echo, spec, atten, labels

    def _paint_vessels(self, geom: Geometry, pose: Pose, echo: np.ndarray, spec: np.ndarray,
                       atten: np.ndarray, labels: np.ndarray) -> None:
        if not len(self._p0):
            return
        o, a, d, n = pose.origin, pose.lateral, pose.depth, pose.normal
        rel0, rel1 = self._p0 - o, self._p1 - o
        w0, w1 = rel0 @ n, rel1 @ n
        outer = self._rad + self._wall
        hit = (np.minimum(w0, w1) <= outer) & (np.maximum(w0, w1) >= -outer)
        jobs = []
        for s in np.nonzero(hit)[0]:
            dw = w1[s] - w0[s]
            if abs(dw) > 1e-9:
                ta, tb = (-outer[s] - w0[s]) / dw, (outer[s] - w0[s]) / dw
                t_lo, t_hi = max(0.0, min(ta, tb)), min(1.0, max(ta, tb))
            else:
                t_lo, t_hi = 0.0, 1.0
            q = np.stack([rel0[s] + t * (rel1[s] - rel0[s]) for t in (t_lo, t_hi)])
            us, vs, r = q @ a, q @ d, outer[s]
            win = geom.grid_window(us.min() - r, us.max() + r, vs.min() - r, vs.max() + r)
            if win is None:
                continue
            rows, cols = win
            x, y, z = geom.world(pose, rows, cols)
            seg = (self._p1[s] - self._p0[s]).astype(np.float32)
            qx, qy, qz = (x - np.float32(self._p0[s, 0]), y - np.float32(self._p0[s, 1]),
                          z - np.float32(self._p0[s, 2]))
            t = np.clip((qx * seg[0] + qy * seg[1] + qz * seg[2]) / np.float32(seg @ seg), 0, 1)
            d2 = (qx - t * seg[0]) ** 2 + (qy - t * seg[1]) ** 2 + (qz - t * seg[2]) ** 2
            # Specular walls shine where the beam meets them head-on (top and bottom of a
            # cross-section) and fade where it grazes them.
            dx, dy, dz = qx - t * seg[0], qy - t * seg[1], qz - t * seg[2]
            facing = np.abs(dx * d[0] + dy * d[1] + dz * d[2]) / np.sqrt(d2 + np.float32(1e-6))
            jobs.append((s, rows, cols, d2, facing))
        # Walls first, lumens after, so a lumen is never covered by a neighbour's wall.
        for s, rows, cols, d2, facing in jobs:
            if self._wall[s] > 0:
                ring = d2 < (self._rad[s] + self._wall[s]) ** 2
                echo[rows, cols][ring] = 1.5
                spec[rows, cols][ring] = (self._wecho[s] * (0.25 + 0.75 * facing[ring]))
                atten[rows, cols][ring] = 0.0
                labels[rows, cols][ring] = self._label[s]
        for s, rows, cols, d2, _ in jobs:
            lumen = d2 < self._rad[s] ** 2
            echo[rows, cols][lumen] = LUMEN_ECHO
            spec[rows, cols][lumen] = 0.0
            atten[rows, cols][lumen] = FLUID_ATTEN
            labels[rows, cols][lumen] = self._label[s]

    def _paint_wall(self, geom: Geometry, pose: Pose, world: tuple[np.ndarray, ...],
                    tex: np.ndarray, echo: np.ndarray, spec: np.ndarray, atten: np.ndarray,
                    labels: np.ndarray) -> None:
        # Depth along the beam from the face; the skin follows the (pressed-in) face.
        beam_depth = (np.arange(geom.n_samples) + 0.5) * geom.sample_mm
        # Breathing lifts the liver towards the probe a little: its surface follows the world.
        surface = self.wall_mm - pose.origin[2]
        n_rows = int(np.searchsorted(beam_depth, surface + self.wall_undulation_mm + 1.0))
        if n_rows <= 0:
            return
        rows = slice(0, n_rows)
        x, y = world[0][rows], world[1][rows]
        und = self.wall_undulation_mm * (np.sin(0.07 * x + self.wall_phase[0])
                                         * np.cos(0.045 * y + self.wall_phase[1]))
        depth = beam_depth[:n_rows, None].astype(np.float32) - und.astype(np.float32)
        dep = depth * (self.wall_mm / max(surface, 1.0))  # layers keep their proportions
        f, m = self.fat_mm, self.muscle_mm
        t = tex[rows]
        layer = np.select(
            [dep < 1.2, dep < f, dep < f + 0.9, dep < f + 0.9 + m, dep < f + 1.8 + m],
            [np.float32(3.0), 0.35 + 0.25 * t, np.float32(2.0),
             0.8 * (1 + 0.55 * np.sin(dep * 4.2 + 0.8 * t)), np.float32(2.0)],
            default=0.5 + 0.15 * t).astype(np.float32)
        fascia = ((dep >= f) & (dep < f + 0.9)) | ((dep >= f + 0.9 + m) & (dep < f + 1.8 + m))
        wall = depth < surface
        capsule = (depth >= surface) & (depth < surface + 0.9)
        ew, sw, aw, lw = echo[rows], spec[rows], atten[rows], labels[rows]
        ew[wall] = layer[wall]
        sw[wall] = np.where(fascia[wall], np.float32(1.8), np.float32(0))
        aw[wall] = 0.04
        lw[wall] = 0
        ew[capsule] = CAPSULE_ECHO
        sw[capsule] = CAPSULE_SPECULAR
        lw[capsule] = 0

    def _paint_diaphragm(self, geom: Geometry, world: tuple[np.ndarray, ...], tex: np.ndarray,
                         echo: np.ndarray, spec: np.ndarray, atten: np.ndarray,
                         labels: np.ndarray) -> None:
        if self.diaphragm_center is None:
            return
        c = self.diaphragm_center.astype(np.float32)
        # Cheap cull: the grid's corners and edge midpoints bound the plane's extent.
        picks = ([0, 0, -1, -1, -1], [0, -1, 0, -1, world[0].shape[1] // 2])
        corners = np.stack([w[picks] for w in world], 1)
        if np.linalg.norm(corners - c, axis=1).max() < self.diaphragm_radius - 1:
            return
        dist = np.sqrt(sum((world[k] - c[k]) ** 2 for k in range(3)))
        beyond = dist >= self.diaphragm_radius
        if not beyond.any():
            return
        line = beyond & (dist < self.diaphragm_radius + DIAPHRAGM_MM)
        lung = dist >= self.diaphragm_radius + DIAPHRAGM_MM
        echo[line] = DIAPHRAGM_ECHO
        spec[line] = DIAPHRAGM_SPECULAR
        spec[lung] = 0.0
        atten[line] = 0.6
        echo[lung] = (LUNG_ECHO * (1 + 0.4 * tex[lung])).astype(np.float32)
        atten[lung] = LUNG_ATTEN
        labels[beyond] = 0


# -- random anatomy ---------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perturb(rng: np.random.Generator, v: np.ndarray, deg: float) -> np.ndarray:
    return _unit(v + rng.normal(0, np.deg2rad(deg), 3))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _grow(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, radius: float,
          length: float, levels: int, kind: str, inside, out: list[Branch]) -> None:
    pts = [start]
    dvec = direction
    for _ in range(3):
        dvec = _perturb(rng, dvec, 10)
        nxt = pts[-1] + dvec * length / 3
        if not inside(nxt):
            break
        pts.append(nxt)
    if len(pts) < 2:
        return
    portal = kind == "portal"
    out.append(Branch(points=np.array(pts), radius=radius, taper=0.85, kind=kind,
                      wall_mm=float(np.clip(0.25 * radius, 0.6, 1.5)) if portal else 0.35,
                      wall_echo=float(rng.uniform(2.0, 3.5)) if portal else 0.0))
    if levels <= 0 or len(pts) < 4 or radius * 0.7 < 1.2:
        return
    for sign in (-1, 1):
        perp = _unit(np.cross(dvec, rng.normal(size=3)))
        ang = np.deg2rad(rng.uniform(25, 50)) * sign
        child = _unit(np.cos(ang) * dvec + np.sin(ang) * perp)
        _grow(rng, pts[-1], child, radius * rng.uniform(0.62, 0.8), length * rng.uniform(0.7, 0.9),
              levels - 1, kind, inside, out)


def random_anatomy(rng: np.random.Generator, poses: list[Pose], geom: Geometry) -> Anatomy:
    """An anatomy whose tumours lie where the sweep passes, so they enter and leave the plane."""
    centre = np.mean([p.origin for p in poses], axis=0)
    wall = float(rng.uniform(13, 24))
    dia_c = centre + np.array([rng.uniform(-20, 20), rng.uniform(30, 70), rng.uniform(-40, 0)])
    mid = centre + np.array([0.0, 0.0, 80.0])
    dia_r = float(np.linalg.norm(dia_c - mid) + rng.uniform(45, 110))

    def inside(p: np.ndarray, margin: float = 4.0) -> bool:
        return bool(p[2] > wall + margin and np.linalg.norm(p - dia_c) < dia_r - margin)

    branches: list[Branch] = []
    hilum = centre + np.array([rng.uniform(-25, 25), rng.uniform(10, 40), rng.uniform(95, 120)])
    if not inside(hilum, 8):
        hilum = dia_c + _unit(hilum - dia_c) * (dia_r - 15)
    _grow(rng, hilum, _unit(np.array([rng.uniform(-0.6, 0.6), -0.7, -0.6])),
          rng.uniform(5.0, 7.0), rng.uniform(32, 48), 3, "portal", inside, branches)
    confluence = centre + np.array([rng.uniform(-20, 20), rng.uniform(-60, -40),
                                    rng.uniform(90, 115)])
    if not inside(confluence, 8):
        confluence = dia_c + _unit(confluence - dia_c) * (dia_r - 15)
    for lat in (-0.8, 0.0, 0.8):
        direction = _perturb(rng, _unit(np.array([lat, 0.9, -0.45])), 12)
        _grow(rng, confluence, direction, rng.uniform(3.5, 5.5), rng.uniform(40, 60), 2,
              "hepatic", inside, branches)
    seg_p = [(b.points[:-1], b.points[1:], b.radius) for b in branches]

    def clear_of_vessels(c: np.ndarray, extent: float) -> bool:
        for p0, p1, r in seg_p:
            if r < 2.5:
                continue
            s = p1 - p0
            t = np.clip(((c - p0) * s).sum(1) / (s * s).sum(1), 0, 1)
            if (np.linalg.norm(c - (p0 + t[:, None] * s), axis=1) < extent + r - 2).any():
                return False
        return True

    def random_point_in_sweep(depth_lo: float, depth_hi: float) -> np.ndarray:
        pose = poses[int(rng.integers(len(poses)))]
        v = rng.uniform(depth_lo, depth_hi) * geom.depth_mm
        if geom.kind == "convex":
            half_w = (geom.radius_mm + v) * np.sin(np.deg2rad(geom.fov_deg) / 2)
        else:
            half_w = geom.width_mm / 2
        u = rng.uniform(-0.6, 0.6) * half_w
        return pose.origin + u * pose.lateral + v * pose.depth + rng.uniform(-3, 3) * pose.normal

    tumours: list[Tumour] = []
    n_tumours = int(rng.choice(4, p=[0.15, 0.4, 0.3, 0.15]))
    for _ in range(60):
        if len(tumours) >= n_tumours:
            break
        diameter = rng.uniform(10, 40)
        semi = diameter / 2 * np.array([1.0, rng.uniform(0.72, 1.0), rng.uniform(0.72, 1.0)])
        kind = str(rng.choice(["hypo", "iso", "hyper"], p=[0.45, 0.25, 0.3]))
        echo = {"hypo": rng.uniform(0.22, 0.5), "iso": rng.uniform(0.8, 1.15),
                "hyper": rng.uniform(3.0, 6.0)}[kind]
        p_halo = 0.75 if kind == "iso" else 0.6
        halo = float(rng.uniform(1.0, 2.5)) if rng.random() < p_halo else 0.0
        mosaic = float(rng.uniform(0.3, 0.7)) if diameter > 18 and rng.random() < 0.6 else float(
            rng.uniform(0.0, 0.15))
        t = Tumour(center=random_point_in_sweep(0.3, 0.72), semi_axes=semi,
                   rotation=_random_rotation(rng), echo=float(echo), kind=kind, halo_mm=halo,
                   halo_echo=float(rng.uniform(0.08, 0.2)), mosaic=mosaic,
                   atten=float(rng.uniform(-0.2, -0.06)))
        if not inside(t.center, t.extent + 4):
            continue
        if any(np.linalg.norm(t.center - o.center) < t.extent + o.extent + 4 for o in tumours):
            continue
        if not clear_of_vessels(t.center, t.extent):
            continue
        tumours.append(t)
    calcs: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.choice(3, p=[0.55, 0.3, 0.15]))):
        c, r = random_point_in_sweep(0.2, 0.6), float(rng.uniform(0.9, 2.0))
        if inside(c) and all(np.linalg.norm(c - t.center) > t.extent + r + 3 for t in tumours):
            calcs.append((c, r))
    return Anatomy(tumours=tumours, branches=branches, calcifications=calcs, wall_mm=wall,
                   wall_undulation_mm=float(rng.uniform(0.8, 2.5)),
                   wall_phase=(float(rng.uniform(0, 6.3)), float(rng.uniform(0, 6.3))),
                   fat_mm=float(rng.uniform(0.25, 0.45) * wall),
                   muscle_mm=float(rng.uniform(0.3, 0.45) * wall),
                   diaphragm_center=dia_c, diaphragm_radius=dia_r,
                   texture=float(rng.uniform(0.1, 0.25)))
