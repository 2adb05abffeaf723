"""One synthetic sweep: a random liver, a probe trajectory and the renderer, all from one seed.

Seeds: the dataset seed fixes the shared scatterer field; ``(seed, video index)`` fixes the
video's sweep, anatomy and scanner settings through a ``numpy.random.SeedSequence``, so a
video is reproducible on its own, whatever the number of videos or worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .anatomy import Anatomy, random_anatomy
from .bmode import Renderer, speckle_field
from .probe import Geometry, Pose, random_sweep, trajectory
from .truth import boxes_from_labels


@dataclass
class PhantomVideo:
    geom: Geometry
    anatomy: Anatomy
    poses: list[Pose]
    renderer: Renderer
    min_box_mm: float = 3.0

    @classmethod
    def random(cls, seed: int, index: int, n_frames: int, size: int = 512,
               probe: str = "convex", fps: float = 15.0, min_box_mm: float = 3.0) -> "PhantomVideo":
        streams = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
        sweep_rng, traj_rng, anat_rng, scan_rng = (np.random.default_rng(s) for s in streams)
        geom = Geometry(kind=probe, size=size,
                        depth_mm=165.0 if probe == "convex" else 70.0)
        poses = trajectory(random_sweep(sweep_rng, fps), n_frames, traj_rng)
        anatomy = random_anatomy(anat_rng, poses, geom)
        renderer = Renderer(geom, anatomy, speckle_field(int(seed)), scan_rng)
        return cls(geom, anatomy, poses, renderer, min_box_mm)

    @property
    def min_box_px(self) -> int:
        return max(2, int(round(self.min_box_mm / self.geom.mm_per_px)))

    def frame(self, k: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """Frame ``k``: (grey image, boxes, label image)."""
        image, labels = self.renderer.render(self.poses[k])
        return image, boxes_from_labels(labels, self.anatomy.objects(), self.min_box_px), labels

    def frames(self) -> Iterator[tuple[np.ndarray, list[dict]]]:
        for k in range(len(self.poses)):
            image, boxes, _ = self.frame(k)
            yield image, boxes
