"""Saving and loading detectors.

``model.pt`` is a ``torch.save`` dict:

* ``format``: ``"sonolabel-detector"``, ``version``: 1;
* ``config``: :class:`detector.model.ModelConfig` as a dict (``arch``, ``backbone``, ``size``,
  ``num_classes`` ...);
* ``categories``: ``[{"id": coco_id, "name": ...}]`` in label order (label = index + 1);
* ``state_dict``: the model's weights;
* ``train``: what produced it (epoch, validation metrics, train config), informative only.

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from detector.model import ModelConfig, TwoFrameFasterRCNN, build_model

FORMAT = "sonolabel-detector"
MODEL_FILE = "model.pt"


def model_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/model.pt`` when it is a run directory."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(path: str | Path, model: TwoFrameFasterRCNN, categories: list[dict[str, Any]],
               train: dict[str, Any] | None = None) -> None:
    atomic_save({"format": FORMAT, "version": 1, "config": model.config.to_dict(),
                 "categories": categories, "state_dict": model.state_dict(),
                 "train": train or {}}, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = model_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a detector checkpoint")
    return data


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[TwoFrameFasterRCNN, dict[str, Any]]:
    """The model in eval mode and its metadata (the checkpoint without ``state_dict``, plus
    ``class_names``: label -> name, index 0 = background)."""
    data = read_checkpoint(path)
    model = build_model(ModelConfig.from_dict(data["config"]), load_backbone_weights=False)
    model.load_state_dict(data["state_dict"])
    model.to(device).eval()
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    meta["class_names"] = ["__background__"] + [c["name"] for c in data["categories"]]
    meta["path"] = str(model_path(path))
    return model, meta


def load_matching(model: torch.nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy every weight of checkpoint ``path`` whose name and shape match into ``model``
    (a two-frame model from a single-frame one). Returns (copied, model's total)."""
    state = read_checkpoint(path)["state_dict"]
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)
