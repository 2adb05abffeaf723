"""Detections from a trained run: a streaming :class:`Predictor` for video, a batch
:func:`predict_coco` for every image of a COCO file, and the ``predict`` subcommand.

The streaming path keeps the previous frame's FPN maps (and embeddings) and its grey image,
so a new frame costs one backbone pass, one DIS flow and the aggregation. The batch path
reads each image's predecessor by the dataset's rules (:mod:`detector.data`) and runs both
frames through the backbone; for a sequence whose predecessors are its own earlier frames both
paths give the same boxes.

Frames are shrunk to the model's input size with area averaging before anything else, as in
training, and boxes are mapped back to the frame's own pixels.

``tta="flip"`` (``--tta flip``) also runs each frame mirrored and merges the two sets of boxes
before calibrating (:mod:`detector.tta`); it costs about twice the model time.

``python -m detector predict --run RUN_DIR [--tta flip] FRAME... | VIDEO`` prints one JSON
object per frame and line: ``{"frame": path or index, "detections": [{"box": [x, y, w, h],
"label": 1, "category": "tumor", "score": 0.93}, ...]}``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from detector.calibration import Calibration
from detector.checkpoint import load_model
from detector.cli import CliParser
from detector.data import PairDataset, grey_to_tensor, load_coco
from detector.devices import DEVICE_CHOICES, resolve_device
from detector.flow import compute_flow, flow_tensor, to_grey
from detector.model import TwoFrameFasterRCNN
from detector.transforms import shrink
from detector.tta import add_tta_option, check_tta, combine, flow_views, views

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".m4v"}


def _detections(det: dict[str, torch.Tensor], scale: tuple[float, float],
                names: list[str], calibration: Calibration | None = None,
                min_score: float = 0.0) -> list[dict[str, Any]]:
    """Boxes in the frame's pixels; with ``calibration``, calibrated scores (before rounding,
    so that it makes no ties) of at least ``min_score``."""
    fx, fy = scale
    out = []
    for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(),
                                 det["scores"].tolist()):
        category = names[label] if label < len(names) else str(label)
        if calibration is not None:
            score = calibration.score(score, category)
            if score < min_score:
                continue
        x0, y0, x1, y1 = box[0] / fx, box[1] / fy, box[2] / fx, box[3] / fy
        out.append({"box": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "label": int(label), "category": category, "score": round(float(score), 5)})
    return out


class Predictor:
    """Frame-by-frame detection over one video; call :meth:`reset` between videos.

    ``step(image)`` takes HxW grey or HxWx3 RGB uint8 and returns ``[{"box": [x, y, w, h],
    "label": int, "category": str, "score": float}]`` in the image's pixels.

    Scores are calibrated by the run's calibration (:mod:`detector.calibration`; raw when the
    run has none), and ``score_threshold`` applies to the calibrated scores.

    ``tta="flip"`` adds the mirrored frame (:mod:`detector.tta`) as a second stream: the
    previous-frame state holds both frames, plain and mirrored, as batch entries 0 and 1."""

    def __init__(self, run_dir_or_model_pt: str | Path, device: str | torch.device = "cpu",
                 score_threshold: float = 0.05, fuse: bool = True, tta: str = "none"):
        self.tta = check_tta(tta)
        self.device = resolve_device(device)
        self.model, self.meta = load_model(run_dir_or_model_pt, self.device)
        if fuse:
            self.model.fuse_for_inference()
        self.calibration = Calibration.from_dict(self.meta.get("calibration"))
        self.score_threshold = score_threshold
        self.model.roi_heads.score_thresh = self.calibration.raw_floor(score_threshold)
        self.names: list[str] = self.meta["class_names"]
        self.reset()

    def reset(self) -> None:
        self._previous: tuple[np.ndarray, dict] | None = None

    @torch.no_grad()
    def step(self, image: np.ndarray) -> list[dict[str, Any]]:
        model, cfg = self.model, self.model.config
        grey = to_grey(np.asarray(image))
        small = shrink(grey, cfg.size)
        frames = views(grey_to_tensor(small).to(self.device), self.tta)
        images = model.prepare(frames)
        state = model.frame_state(model.extract(images.tensors))
        features = state["features"]
        if model.temporal:
            if self._previous is None or self._previous[0].shape != small.shape:
                prev_grey, prev_state, flow = small, state, torch.zeros(2, 1, 1)
            else:
                prev_grey, prev_state = self._previous
                flow = flow_tensor(compute_flow(small, prev_grey, cfg.flow_max_side))
            flows = [f.to(self.device) for f in flow_views(flow, self.tta)]
            features = model.aggregate(state, prev_state, flows, images)
        dets = model.detect(images, features, [small.shape] * len(frames))
        det = combine(dets, small.shape[1], model.roi_heads.detections_per_img)
        self._previous = (small, state) if model.temporal else None
        scale = (small.shape[1] / grey.shape[1], small.shape[0] / grey.shape[0])
        return _detections(det, scale, self.names, self.calibration, self.score_threshold)


@torch.no_grad()
def predict_dataset(model: TwoFrameFasterRCNN, dataset: PairDataset,
                    categories: list[dict[str, Any]],
                    progress: Callable[[int, int], None] | None = None,
                    calibration: Calibration | None = None,
                    min_score: float = 0.0, tta: str = "none") -> list[dict[str, Any]]:
    """COCO results (image_id, category_id, bbox xywh, score) for every item of ``dataset``,
    each with its own predecessor run through the backbone; raw scores unless
    ``calibration`` is given (then those of at least ``min_score``); ``tta`` as in
    :class:`Predictor`."""
    tta = check_tta(tta)
    model.eval()
    device = next(model.parameters()).device
    names = ["__background__"] + [c["name"] for c in categories]
    results = []
    for i in range(len(dataset)):
        item = dataset[i]
        image = item["image"].to(device)
        kwargs = {}
        if model.temporal:
            kwargs = {"prev_images": views(item["prev_image"].to(device), tta),
                      "flows": flow_views(item["flow"], tta)}
        det = combine(model(views(image, tta), **kwargs), image.shape[-1],
                      model.roi_heads.detections_per_img)
        h, w = item["orig_size"]
        scale = (image.shape[-1] / w, image.shape[-2] / h)
        for d in _detections(det, scale, names, calibration, min_score):
            results.append({"image_id": item["image_id"],
                            "category_id": categories[d["label"] - 1]["id"],
                            "bbox": d["box"], "score": d["score"]})
        if progress:
            progress(i + 1, len(dataset))
    return results


def predict_coco(run_dir: str | Path, coco_path: str | Path, images_dir: str | Path,
                 score_threshold: float = 0.001, device: str | torch.device = "cpu",
                 progress: Callable[[int, int], None] | None = None,
                 calibrated: bool = True, tta: str = "none") -> list[dict[str, Any]]:
    """COCO detection results of the run's model over all images of ``coco_path``, each
    paired with its predecessor by the dataset's rules (itself at a video's start); scores
    calibrated by the run's calibration unless ``calibrated`` is False, and
    ``score_threshold`` applies to the scores returned, and ``tta``, as in :class:`Predictor`."""
    tta = check_tta(tta)
    model, meta = load_model(run_dir, resolve_device(device))
    model.fuse_for_inference()
    calibration = Calibration.from_dict(meta.get("calibration")) if calibrated else None
    model.roi_heads.score_thresh = calibration.raw_floor(score_threshold) if calibration \
        else score_threshold
    dataset = PairDataset(load_coco(coco_path), images_dir, categories=meta["categories"],
                          size=model.config.size, flow_side=model.config.flow_max_side,
                          augment=None, temporal=model.temporal)
    return predict_dataset(model, dataset, meta["categories"], progress, calibration,
                           score_threshold, tta)


# -- command line -----------------------------------------------------------------------------

def _video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            index += 1
    finally:
        capture.release()


def _frame_count(path: Path) -> int | None:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count if count > 0 else None


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    parser = CliParser(prog="python -m detector predict",
                       description="Detections per frame as JSON lines; frames are taken as "
                                   "one video, in the order given.")
    parser.add_argument("--run", required=True, help="run directory or model.pt")
    parser.add_argument("inputs", nargs="+", metavar="FRAME_OR_VIDEO")
    parser.add_argument("--score-threshold", type=float, default=0.05)
    parser.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    add_tta_option(parser, "each frame")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    paths = [Path(p) for p in args.inputs]
    for p in paths:
        if not p.is_file():
            parser.error(f"no such file: {p}")
    is_video = len(paths) == 1 and paths[0].suffix.lower() in VIDEO_SUFFIXES
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in paths) and not is_video:
        parser.error("give either one video or image frames")
    try:
        predictor = Predictor(args.run, device=device,
                              score_threshold=args.score_threshold, tta=args.tta)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if is_video:
        if not cv2.VideoCapture(str(paths[0])).isOpened():
            parser.error(f"cannot open video {paths[0]}")
        frames = _video_frames(paths[0])
        total = _frame_count(paths[0])
    else:
        frames = ((str(p), p) for p in paths)
        total = len(paths)
    for key, frame in tqdm(frames, total=total, unit="frame", file=sys.stderr,
                           disable=None):
        if isinstance(frame, Path):
            image = cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE)
            if image is None:
                print(f"error: cannot read image {frame}", file=sys.stderr)
                return 2
            frame = image
        print(json.dumps({"frame": key, "detections": predictor.step(frame)}), flush=True)
    return 0
