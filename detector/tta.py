"""Test-time augmentation: the horizontal flip.

With ``tta="flip"`` the model sees each frame twice in one batch, as it is and mirrored left
to right; the mirrored pass's boxes are mirrored back (``x -> width - x``, exact) and the two
sets are merged per class. For ``two_frame`` and ``concat`` the previous frame is mirrored
with the current one and the flow by :func:`mirror_flow` (the same motion estimate, not a
second DIS run), so the mirrored pass is the model applied to the mirrored video; the
streaming :class:`detector.predict.Predictor` keeps the mirrored frame's features as its own
previous-frame state (batch entry 1 beside the plain frame's entry 0).

The merge (:func:`merge_detections`), chosen by measurement on BUSI cross-validation folds 1
and 2 (``single``, 256 px, 197 test images each; both raw passes dumped once, the rules
compared on the same boxes):

* boxes of one class from the two passes are paired one-to-one, highest IoU first, while the
  IoU is at least ``MERGE_IOU`` (0.55); a pair becomes one box, the score-weighted mean of
  the two (weighted box fusion), with the mean of the two scores;
* a box found by only one pass is kept as it is, with its own score;
* the result is sorted by score and cut at the model's detections per image.

Measured AP (fold 1 / fold 2): no TTA 0.513 / 0.521; fusion as above 0.531 / 0.535 (AP75
0.515 -> 0.565 / 0.553 -> 0.559); concatenation + per-class NMS at IoU 0.5-0.6 0.505-0.506 /
0.521-0.522, no gain: NMS keeps one of two nearly equal boxes, while averaging them is what
sharpens the localisation (fusion keeping the better box of a pair instead: 0.511 / 0.521).
Fusion at IoU 0.5 and 0.7 was within 0.003 of 0.55. Scoring a pair by the max or noisy-or of
its scores, or halving the score of a box seen once (WBF's rule for two models), moved AP by
under 0.006. The mean with lone boxes unchanged is kept because it keeps scores on the scale
the run was calibrated on: a merged score lies between two raw scores of the same model, so
the run's calibration (a monotone map per class) is applied after merging and its stored
threshold keeps its meaning. At that threshold the mean found nearly the same true
positives (139 -> 137, 131 -> 131) with fewer false positives (14 -> 12, 13 -> 10); the max
and noisy-or raise paired scores and let more false positives over it (max: 20 and 20).

torch is imported inside the functions that make tensors, so the command lines can offer
:func:`add_tta_option` without loading it (as :mod:`detector.flow` does).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    Detection = dict[str, torch.Tensor]  # boxes (Nx4 xyxy), labels (N), scores (N)

TTA_CHOICES = ("none", "flip")
MERGE_IOU = 0.55


def add_tta_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--tta`` for a command line whose model predicts ``what``."""
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help=f"test-time augmentation of {what}: flip also predicts on the mirrored "
                             "images and merges the boxes (about twice the time); default none")


def check_tta(tta: str | None) -> str:
    """``tta`` as one of :data:`TTA_CHOICES` (None means "none"); ValueError otherwise."""
    tta = tta or "none"
    if tta not in TTA_CHOICES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; "
                         f"choose from {', '.join(TTA_CHOICES)}")
    return tta


def mirror_image(image: torch.Tensor) -> torch.Tensor:
    """The image (...xHxW) mirrored left to right."""
    return image.flip(-1)


def mirror_flow(flow: torch.Tensor) -> torch.Tensor:
    """The flow (2xhxw, x then y) of the mirrored frames: the field mirrored, x negated."""
    out = flow.flip(-1).clone()
    out[0] = -out[0]
    return out


def mirror_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Nx4 xyxy boxes of an image ``width`` pixels wide, mirrored: ``x -> width - x``
    (pixel edges, so mirroring twice gives the boxes back)."""
    import torch

    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack((width - x1, y0, width - x0, y1), -1)


def views(image: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The images the model sees for one frame: itself, then its mirror under ``flip``."""
    return [image, mirror_image(image)] if tta == "flip" else [image]


def flow_views(flow: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The flows that go with :func:`views` of a current and a previous frame."""
    return [flow, mirror_flow(flow)] if tta == "flip" else [flow]


def merge_detections(a: Detection, b: Detection, iou_threshold: float = MERGE_IOU,
                     limit: int | None = None) -> Detection:
    """One set of detections from two of the same image (the rule: module docstring)."""
    import torch
    from torchvision.ops import box_iou

    boxes, labels, scores = [], [], []
    for label in torch.unique(torch.cat((a["labels"], b["labels"]))):
        in_a, in_b = a["labels"] == label, b["labels"] == label
        box_a, score_a = a["boxes"][in_a], a["scores"][in_a]
        box_b, score_b = b["boxes"][in_b], b["scores"][in_b]
        iou = box_iou(box_a, box_b)
        pairs = []
        while iou.numel() and iou.max() >= iou_threshold:
            i, j = divmod(int(iou.argmax()), iou.shape[1])
            pairs.append((i, j))
            iou[i, :] = -1.0
            iou[:, j] = -1.0
        device = box_a.device
        lone_a = torch.ones(len(box_a), dtype=torch.bool, device=device)
        lone_b = torch.ones(len(box_b), dtype=torch.bool, device=device)
        if pairs:
            ia, ib = (torch.tensor(p, dtype=torch.long, device=device) for p in zip(*pairs))
            lone_a[ia], lone_b[ib] = False, False
            # weights floored so two zero scores (threshold 0) still average the boxes
            wa = score_a[ia].clamp_min(1e-6)[:, None]
            wb = score_b[ib].clamp_min(1e-6)[:, None]
            boxes.append((wa * box_a[ia] + wb * box_b[ib]) / (wa + wb))
            scores.append((score_a[ia] + score_b[ib]) / 2)
        boxes += [box_a[lone_a], box_b[lone_b]]
        scores += [score_a[lone_a], score_b[lone_b]]
        n = len(pairs) + int(lone_a.sum()) + int(lone_b.sum())
        labels.append(label.repeat(n))
    if not labels:
        return {"boxes": a["boxes"][:0], "labels": a["labels"][:0], "scores": a["scores"][:0]}
    out_scores = torch.cat(scores)
    order = out_scores.argsort(descending=True, stable=True)[:limit]
    return {"boxes": torch.cat(boxes)[order], "labels": torch.cat(labels)[order],
            "scores": out_scores[order]}


def combine(detections: list[Detection], width: float, limit: int | None = None) -> Detection:
    """The detections of one frame from those of its :func:`views` (boxes in pixels of an
    image ``width`` wide): the plain pass's alone, or both passes merged."""
    if len(detections) == 1:
        return detections[0]
    plain, mirrored = detections
    return merge_detections(plain, {**mirrored, "boxes": mirror_boxes(mirrored["boxes"], width)},
                            limit=limit)
