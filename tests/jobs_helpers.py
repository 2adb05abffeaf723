"""Shared set-up for the job tests: a labelled tiny scene frozen into a dataset version, and an
untrained detector registered as a model version (for pre-label tests that need boxes, not
accuracy)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from scene_seed import seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource, ModelVersion, SceneStatus


def lesion_box(i: int, width: int, height: int) -> dict[str, float]:
    """Where scene_seed draws frame i's lesion (a disc drifting 2 px a frame), as a box."""
    r = 0.12 * height
    cx, cy = 0.4 * width + 2 * i, 0.5 * height
    return {"x": round(cx - r, 1), "y": round(cy - r, 1), "w": round(2 * r, 1), "h": round(2 * r, 1)}


def labelled_scene(app, frames: int = 4, width: int = 160, height: int = 120, patient: str = "P001",
                   status: SceneStatus = SceneStatus.new):
    """A seeded scene with a manual tumour box on every frame."""
    seeded = seed_scene(app, frames=frames, width=width, height=height, patient=patient, status=status)
    with app.app_context():
        for i, frame_id in enumerate(seeded.frame_ids):
            db.session.add(Box(frame_id=frame_id, class_id=1, source=BoxSource.manual,
                               **lesion_box(i, width, height)))
        db.session.commit()
    return seeded


def tiny_version(app, name: str = "tiny", **kw):
    """A one-part (train) dataset version of a labelled scene; returns (seeded, version id)."""
    from annotator.services.datasets import Selection, SplitSpec, create_version

    seeded = labelled_scene(app, **kw)
    with app.app_context():
        version = create_version(name, Selection(statuses=()), SplitSpec(ratios=(1.0, 0.0, 0.0)))
        return seeded, version.id


def untrained_model(app, kind: str = "two_frame", size: int = 64, active: bool = True) -> tuple[int, str]:
    """An untrained detector saved and registered as a model version; returns (id, name)."""
    import torch

    from detector.checkpoint import save_model
    from detector.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=kind, num_classes=3, size=size), load_backbone_weights=False)
    categories = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]
    with app.app_context():
        version = ModelVersion(name=f"pending-{kind}", kind=kind, config={"size": size}, metrics={},
                               file_sha256="0" * 64, active=active)
        db.session.add(version)
        db.session.flush()
        version.name = f"{kind}-v{version.id}"
        folder = Path(app.config["SONOLABEL_DATA_DIR"]) / "models" / str(version.id)
        folder.mkdir(parents=True)
        save_model(folder / "model.pt", model, categories)
        version.file_sha256 = hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
        db.session.commit()
        return version.id, version.name
