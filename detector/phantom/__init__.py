"""Synthetic liver ultrasound sweeps with exact ground truth.

A seeded 3D liver (tumours, vessel tree, abdominal wall, diaphragm; ``anatomy``) is cut by a
moving image plane (``probe``: convex or linear geometry, free-hand sweeps with jitter and
breathing), each cut becomes a B-mode frame (``bmode``: speckle from a fixed 3D scatterer field,
point-spread function, envelope, attenuation with TGC, shadowing and enhancement, log
compression, scan conversion) and boxes come from the same cut (``truth``). ``writer`` stores
MP4 + PNG + COCO. Entry points: ``generate(...)`` and ``main(argv)`` for
``python -m detector phantom``.
"""
from __future__ import annotations

from .anatomy import CATEGORIES, TUMOR, VESSEL, Anatomy, Branch, Tumour, random_anatomy
from .bmode import Renderer, SpeckleField, speckle_field
from .cli import main
from .probe import Geometry, Pose, random_sweep, trajectory
from .truth import boxes_from_labels
from .video import PhantomVideo
from .writer import decoded_frame_count, generate, video_codec

__all__ = ["CATEGORIES", "TUMOR", "VESSEL", "Anatomy", "Branch", "Tumour", "random_anatomy",
           "Renderer", "SpeckleField", "speckle_field", "main", "Geometry", "Pose",
           "random_sweep", "trajectory", "boxes_from_labels", "PhantomVideo", "generate",
           "decoded_frame_count", "video_codec"]
