"""The detectors: single-frame Faster R-CNN + FPN, and two-frame variants of it.

Architectures (``ModelConfig.arch``):

* ``single``: torchvision ``FasterRCNN`` on a backbone body with an FPN over strides 8/16/32
  (4/8/16/32 with ``min_stride=4``) plus a max-pooled stride-64 level for the RPN.
* ``two_frame`` (default): the same, with FGFA-style aggregation on each FPN level before the
  RPN and box head (:class:`detector.aggregation.FlowGuidedAggregation`).
* ``concat``: the paper's literal wording (:class:`detector.aggregation.ConcatAggregation`).

Where the paper (Karako et al., HBSN 2022) is vague and what was chosen:

* "Optical flow" is unspecified: OpenCV DIS (FAST preset) between the grey frames at half the
  detector's input size, current -> previous (:mod:`detector.flow`).
* The "aggregation layer" is a bottleneck on concatenated features. Concatenating *unwarped*
  features asks a few convolutions to learn motion compensation; FGFA warps first and
  weights per pixel, which is the better-tested reading (FGFA, MEGA, UltraDet), so
  ``two_frame`` is FGFA per FPN level (flow resized to each map, displacements divided by
  its stride, ``grid_sample`` with border padding), embedding 1x1 -> 3x3 -> 1x1 shared
  across levels, cosine weights, softmax over the two frames, weighted sum. ``concat`` is
  kept for comparison.
* Where the two frames meet: after the FPN, so both the RPN and the box head see aggregated
  maps; the stride-64 pool level is recomputed from the aggregated stride-32 map.
* The first frame of a video (and a still image) uses itself as the previous frame with zero
  flow; for ``two_frame`` the aggregated maps then equal the current ones (both weights 0.5
  on the same map), so such frames are detected as by the single-frame path.
* Training: the single-frame detector first, then ``two_frame`` initialised from it (every
  matching weight; only the aggregation starts fresh), as UltraDet and TransVOD do.
* Classes come from the data: label k is the k-th category of the training COCO file
  (tumour = 1, vessel = 2 by default); 0 is background.

Sized for speed on a CPU (chosen with the torch profiler; figures in the README's speed table
and ``bench/detector_speed.py``). torchvision's defaults are sized for 800 px COCO with 80
classes, and most of their time went to the box head (1000 RoIs x 12544 inputs x 1024).
Chosen here:

* 128-channel FPN on strides 8/16/32, plus a max-pooled stride-64 level for the RPN only
  (``min_stride=4`` adds a stride-4 map, for objects of a few pixels, at more time a frame);
* 300 / 150 RPN proposals before / after NMS at test time (1000 / 500 in training),
  at most 100 detections;
* a 512-wide two-layer box head on 7x7 RoIAlign of the 128-channel maps;
* batch norm folded into the convolutions for inference
  (:func:`detector.backbones.fuse_conv_bn`);
* every convolution weight in channels-last (NHWC) layout, oneDNN's own;
* in a CPU training step, RoI pooling by ``embedding_bag`` (:mod:`detector.roi_align`):
  torchvision's CPU RoIAlign backward had taken half of the step;
* DIS flow at half the input size with the FAST preset.

Input size is explicit (``min_size = max_size = size``): torchvision would otherwise upscale
to 800 px.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork

from detector.aggregation import ConcatAggregation, FlowGuidedAggregation, FrameState
from detector.backbones import BACKBONES, build_body, fuse_conv_bn
from detector.flow import flow_for_level
from detector.recipe import MIN_STRIDE, MIN_STRIDES
from detector.roi_align import BagMultiScaleRoIAlign

ARCHS = ("single", "two_frame", "concat")
DEFAULT_ANCHORS = [[16, 32], [48, 64], [96, 128], [192, 320]]  # strides 8, 16, 32, 64
FINE_ANCHORS = [[8, 12]]  # stride 4, with min_stride=4


@dataclass
class ModelConfig:
    arch: str = "two_frame"
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    pretrained: bool | None = None  # None: efficientnet_lite0 yes, others if weights given
    num_classes: int = 3  # with background
    size: int = 512
    flow_side: int | None = None  # None: size // 2
    fpn_channels: int = 128
    box_head_dim: int = 512
    # stride of the finest FPN map: 8, or 4 for objects of a few pixels (a 10 px vessel spans
    # one cell at stride 8: its RoI is pooled from a single cell), at more cost a frame
    min_stride: int = MIN_STRIDE
    anchor_sizes: list[list[int]] | None = None  # per level, finest first; None: the defaults
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 500
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 150
    box_batch_size_per_image: int = 256
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown model {self.arch!r}; choose from {', '.join(ARCHS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; "
                             f"choose from {', '.join(BACKBONES)}")
        if self.size < 32 or self.size % 32:
            raise ValueError(f"size must be a multiple of 32, at least 32 (got {self.size})")
        if self.num_classes < 2:
            raise ValueError("num_classes counts background and at least one class")
        if self.pretrained is None:
            self.pretrained = self.backbone == "efficientnet_lite0" or bool(self.backbone_weights)
        if self.min_stride not in MIN_STRIDES:
            raise ValueError(f"min_stride must be one of {MIN_STRIDES} (got {self.min_stride})")
        if self.anchor_sizes is None:
            self.anchor_sizes = (FINE_ANCHORS if self.min_stride == 4 else []) + DEFAULT_ANCHORS
        if len(self.anchor_sizes) != len(self.levels) + 1:
            raise ValueError(f"{len(self.levels) + 1} anchor levels needed (the FPN maps and the "
                             f"pool level), got {len(self.anchor_sizes)}")

    @property
    def levels(self) -> tuple[str, ...]:
        """Names of the FPN maps, finest first; the RPN also sees a "pool" level (stride 64)."""
        return tuple(str(i) for i in range(4 if self.min_stride == 4 else 3))

    @property
    def flow_max_side(self) -> int:
        return self.flow_side or self.size // 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class _BodyFPN(nn.Module):
    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class TwoFrameFasterRCNN(FasterRCNN):
    """Faster R-CNN whose FPN maps may be merged with the previous frame's before detection.

    ``forward(images, targets=None, prev_images=None, flows=None)``: ``images`` and
    ``prev_images`` lists of 3xHxW float tensors in [0, 1] (a pair of the same size),
    ``flows`` a list of 2xhxw current -> previous flows over each whole image (any h, w; in
    pixels of that field). ``single`` ignores the previous frame and flow.
    """

    def __init__(self, config: ModelConfig, load_backbone_weights: bool = True):
        body = build_body(config.backbone, config.backbone_weights, config.pretrained,
                          load=load_backbone_weights, min_stride=config.min_stride)
        c = config.fpn_channels
        anchors = AnchorGenerator(tuple(tuple(s) for s in config.anchor_sizes),
                                  (tuple(config.aspect_ratios),) * len(config.anchor_sizes))
        super().__init__(
            _BodyFPN(body.module, body.channels, c), num_classes=None,
            min_size=config.size, max_size=config.size,
            image_mean=body.mean, image_std=body.std,
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
            box_roi_pool=BagMultiScaleRoIAlign(list(config.levels), output_size=7,
                                               sampling_ratio=2),
            box_head=TwoMLPHead(c * 7 * 7, config.box_head_dim),
            box_predictor=FastRCNNPredictor(config.box_head_dim, config.num_classes),
            box_batch_size_per_image=config.box_batch_size_per_image,
            box_detections_per_img=config.detections_per_img,
        )
        self.config = config
        self.aggregator: nn.Module | None = {
            "single": None,
            "two_frame": FlowGuidedAggregation(c) if config.arch == "two_frame" else None,
            "concat": ConcatAggregation(c) if config.arch == "concat" else None,
        }[config.arch]
        # oneDNN's convolutions skip a layout reorder per call on NHWC weights: on 2 CPU
        # cores a training step took 29 % less time (0.52 -> 0.37 s) and a frame 27 % less
        self.to(memory_format=torch.channels_last)

    @property
    def temporal(self) -> bool:
        return self.aggregator is not None

    # -- the steps, shared by forward() and the streaming predictor -------------------------

    def prepare(self, images: list[torch.Tensor]) -> ImageList:
        """Normalise, resize to the configured size and batch (no targets)."""
        return self.transform(images)[0]

    def extract(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """FPN maps (strides 8/16/32, or 4/8/16/32) of a prepared batch tensor, in float32 (under
        autocast the body and FPN run in reduced precision, see :func:`full_precision`)."""
        return {k: v.float() for k, v in self.backbone(batch).items()}

    def frame_state(self, features: dict[str, torch.Tensor]) -> FrameState:
        if self.aggregator is None:
            return {"features": features}
        return self.aggregator.frame_state(features)

    def level_flows(self, flows: list[torch.Tensor], images: ImageList,
                    features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        padded_h = images.tensors.shape[-2]
        out = {}
        for level, fmap in features.items():
            size = tuple(fmap.shape[-2:])
            stride = padded_h / size[0]
            out[level] = torch.stack([
                flow_for_level(f.to(fmap.device), tuple(s), size, stride)
                for f, s in zip(flows, images.image_sizes)])
        return out

    def aggregate(self, current: FrameState, previous: FrameState, flows: list[torch.Tensor],
                  images: ImageList) -> dict[str, torch.Tensor]:
        if self.aggregator is None:
            return current["features"]
        level_flows = self.level_flows(flows, images, current["features"])
        return self.aggregator.combine(current, previous, level_flows)

    def detect(self, images: ImageList, features: dict[str, torch.Tensor],
               original_sizes: list[tuple[int, int]],
               targets: list[dict[str, torch.Tensor]] | None = None):
        levels = self.config.levels
        feats = OrderedDict((k, features[k]) for k in levels)
        feats["pool"] = F.max_pool2d(feats[levels[-1]], 1, 2, 0)
        proposals, rpn_losses = self.rpn(images, feats, targets)
        detections, head_losses = self.roi_heads(feats, proposals, images.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)

    def forward(self, images, targets=None, prev_images=None, flows=None):  # type: ignore[override]
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(list(images), targets)
        if not self.temporal:
            feats = self.extract(image_list.tensors)
            with full_precision(image_list.tensors):
                return self.detect(image_list, feats, original_sizes, targets)
        if prev_images is None or flows is None:
            raise ValueError(f"{self.config.arch} needs prev_images and flows")
        if [tuple(p.shape[-2:]) for p in prev_images] != original_sizes:
            raise ValueError("each previous frame must have its current frame's size")
        prev_list = self.prepare(list(prev_images))
        n = len(images)
        both = self.extract(torch.cat((image_list.tensors, prev_list.tensors)))
        with full_precision(image_list.tensors):
            current = self.frame_state({k: v[:n] for k, v in both.items()})
            previous = self.frame_state({k: v[n:] for k, v in both.items()})
            feats = self.aggregate(current, previous, list(flows), image_list)
            return self.detect(image_list, feats, original_sizes, targets)

    def fuse_for_inference(self) -> "TwoFrameFasterRCNN":
        """Fold the body's batch norms into its convolutions (eval only; see backbones)."""
        self.eval()
        fuse_conv_bn(self.backbone.body)
        return self


def full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast off on ``like``'s device: mixed precision training (:mod:`detector.devices`)
    covers the backbone and FPN only. Box coordinates need float32 (in bfloat16, anchors and
    proposals at 256-512 px fall on a 2 px grid) and so does the flow warp's sampling grid.
    Without autocast this changes nothing."""
    return torch.autocast(like.device.type, enabled=False)


def build_model(config: ModelConfig, load_backbone_weights: bool = True) -> TwoFrameFasterRCNN:
    return TwoFrameFasterRCNN(config, load_backbone_weights)
