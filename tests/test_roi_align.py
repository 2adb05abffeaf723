"""The training-time RoI pooling gives torchvision's values and gradients, so a model trained with
it is the model torchvision's kernel would have trained."""
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from detector.roi_align import BagMultiScaleRoIAlign


def _inputs(seed: int, batch: int = 3, size: int = 256):
    gen = torch.Generator().manual_seed(seed)
    maps = OrderedDict((name, torch.randn(batch, 16, size // s, size // s, generator=gen,
                                          requires_grad=True))
                       for name, s in (("0", 8), ("1", 16), ("2", 32)))
    boxes = []
    for _ in range(batch):
        n = 40
        xy = torch.rand(n, 2, generator=gen) * (size + 40) - 30  # some start off the image
        wh = torch.rand(n, 2, generator=gen) * 1.3 * size + 0.2  # tiny to larger than the image
        boxes.append(torch.cat([xy, xy + wh], 1))
    boxes[1] = torch.cat([boxes[1], torch.tensor([[size - 1.0, size - 1.0, size + 5.0, size + 9.0],
                                                  [0.0, 0.0, 0.5, 0.5]])])
    # the stride-32 level takes boxes of about 448 px and more
    boxes[2] = torch.cat([boxes[2], torch.tensor([[-50.0, -40.0, 460.0, 470.0],
                                                  [10.0, 20.0, 600.0, 500.0]])])
    return maps, boxes, [(size, size)] * batch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_pooling_matches_torchvision_in_values_and_gradients(seed):
    maps, boxes, shapes = _inputs(seed)
    reference = MultiScaleRoIAlign(list(maps), output_size=7, sampling_ratio=2)
    fast = BagMultiScaleRoIAlign(list(maps), output_size=7, sampling_ratio=2)
    want = reference(maps, boxes, shapes)
    got = fast(maps, boxes, shapes)
    assert got.shape == want.shape == (sum(len(b) for b in boxes), 16, 7, 7)
    assert torch.allclose(got, want, atol=1e-5)
    upstream = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, list(maps.values()), upstream)
    got_grads = torch.autograd.grad(got, list(maps.values()), upstream)
    for w, g in zip(want_grads, got_grads):
        assert w.abs().sum() > 0  # every level pooled some boxes
        assert torch.allclose(g, w, atol=1e-4)


def test_inference_keeps_torchvisions_kernel(monkeypatch):
    maps, boxes, shapes = _inputs(3)
    fast = BagMultiScaleRoIAlign(list(maps), output_size=7, sampling_ratio=2)
    calls = []
    monkeypatch.setattr("torch.nn.functional.embedding_bag",
                        lambda *a, **k: calls.append(1) or pytest.fail("bag used"))
    with torch.no_grad():
        out = fast(maps, boxes, shapes)
    assert calls == [] and out.shape[0] == sum(len(b) for b in boxes)
