"""The stride-4 feature level (``min_stride=4``) for objects of a few pixels."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.checkpoint import load_model, save_model
from detector.model import ModelConfig, build_model

SIZE = 128
CATEGORIES = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def _small_box_level(model) -> tuple[int, float]:
    """(pyramid map index, its scale) the box head pools a 10 px box from."""
    model.eval()
    image = [torch.rand(3, SIZE, SIZE)]
    with torch.no_grad():
        model(image, prev_images=image, flows=[torch.zeros(2, SIZE // 2, SIZE // 2)])
    pool = model.roi_heads.box_roi_pool
    level = int(pool.map_levels([torch.tensor([[40.0, 40.0, 50.0, 50.0]])])[0])
    return level, pool.scales[level]


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50", "mobilenet_v3"])
def test_every_backbone_gives_a_stride_4_map_on_request(backbone: str):
    for min_stride, maps in ((8, [16, 8, 4]), (4, [32, 16, 8, 4])):
        model = build_model(ModelConfig(backbone=backbone, size=SIZE, min_stride=min_stride))
        features = model.extract(model.prepare([torch.rand(3, SIZE, SIZE)]).tensors)
        assert [f.shape[-1] for f in features.values()] == maps
        assert all(f.shape[1] == 128 for f in features.values())


def test_small_boxes_are_pooled_from_the_finest_map():
    torch.manual_seed(0)
    assert _small_box_level(build_model(ModelConfig(size=SIZE))) == (0, 1 / 8)
    assert _small_box_level(build_model(ModelConfig(size=SIZE, min_stride=4))) == (0, 1 / 4)


def test_the_fine_level_has_its_own_small_anchors():
    config = ModelConfig(min_stride=4)
    assert config.anchor_sizes[0] == [8, 12] and config.anchor_sizes[1:] == ModelConfig().anchor_sizes
    with pytest.raises(ValueError, match="5 anchor levels"):
        ModelConfig(min_stride=4, anchor_sizes=ModelConfig().anchor_sizes)
    with pytest.raises(ValueError, match="min_stride"):
        ModelConfig(min_stride=2)


def test_a_stride_4_model_round_trips_and_older_checkpoints_stay_stride_8(tmp_path: Path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="two_frame", size=SIZE, min_stride=4)).eval()
    save_model(tmp_path / "model.pt", model, CATEGORIES)
    loaded, meta = load_model(tmp_path)
    assert meta["config"]["min_stride"] == 4
    image = [torch.rand(3, SIZE, SIZE)]
    flow = [torch.zeros(2, SIZE // 2, SIZE // 2)]
    with torch.no_grad():
        a = model(image, prev_images=image, flows=flow)[0]
        b = loaded(image, prev_images=image, flows=flow)[0]
    assert len(a["boxes"]) > 0 and torch.equal(a["boxes"], b["boxes"])
    # a checkpoint written before the option: its config has anchors for 3 maps + pool
    old = ModelConfig(size=SIZE).to_dict()
    del old["min_stride"]
    assert ModelConfig.from_dict(old).levels == ("0", "1", "2")
