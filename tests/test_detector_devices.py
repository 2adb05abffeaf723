"""Devices, mixed precision and DistributedDataParallel training (detector.devices, train)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detector import evaluate as evaluate_module
from detector import predict as predict_module
from detector import train as train_module
from detector.checkpoint import load_model, save_model
from detector.devices import Distributed, autocast_dtype, resolve_device
from detector.model import ModelConfig, build_model
from detector.train import TrainConfig, train
from helpers import make_tiny_coco

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# -- choosing the device and precision ---------------------------------------------------------

def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "cuda0", "mps", "tpu:0"])
def test_a_device_of_another_name_is_refused(spec):
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_in_one_line(no_gpu, spec):
    with pytest.raises(ValueError, match="sees no CUDA GPU") as exc:
        resolve_device(spec)
    assert "\n" not in str(exc.value) and "--device cpu" in str(exc.value)


def test_gpus_are_chosen_by_index_or_local_rank(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="no GPU 2, torch sees 2"):
        resolve_device("cuda:2")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        resolve_device("cuda:0", local_rank=1)


def test_mixed_precision_on_a_gpu_only_unless_asked(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(cpu, "half")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(gpu) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(gpu) is torch.float16 and autocast_dtype(gpu, "fp32") is None


def test_the_place_among_processes_comes_from_torchruns_environment():
    alone = Distributed.from_environment({})
    assert (alone.rank, alone.world_size, alone.active, alone.main) == (0, 1, False, True)
    assert Distributed.from_environment({"RANK": "0", "WORLD_SIZE": "1"}) == alone
    second = Distributed.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (second.rank, second.world_size, second.local_rank) == (1, 2, 1)
    assert second.active and not second.main
    for env in ({"WORLD_SIZE": "two"}, {"RANK": "2", "WORLD_SIZE": "2"}):
        with pytest.raises(ValueError, match="environment"):
            Distributed.from_environment(env)
    value = torch.tensor(3.0)
    assert alone.mean(value) is value and alone.share({"a": 1}) == {"a": 1}


def test_autocast_covers_the_backbone_only():
    """Under bf16 autocast the FPN maps come back as float32 and the losses are float32:
    anchors, proposals and the flow warp are not computed in reduced precision."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="two_frame", size=64)).train()
    image = torch.rand(3, 64, 64)
    target = {"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0]]), "labels": torch.tensor([1])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = model.extract(model.prepare([image]).tensors)
        losses = model([image], [target], prev_images=[image], flows=[torch.zeros(2, 8, 8)])
    assert {m.dtype for m in maps.values()} == {torch.float32}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


# -- the command lines -------------------------------------------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("device, message", [("cuda", "sees no CUDA GPU"),
                                             ("gpu", "unknown device")])
def test_train_cli_refuses_a_device_with_exit_2(no_gpu, tmp_path, capsys, device, message):
    tiny = make_tiny_coco(tmp_path / "data", videos=1, frames=2)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_module.main(["--coco", str(tiny), "--images", str(tiny.parent / "img"),
                           "--out", str(out), "--device", device])
    assert exc.value.code == 2 and message in _one_error_line(capsys)
    assert not out.exists()


def test_predict_and_evaluate_cli_refuse_cuda_without_a_gpu(no_gpu, tmp_path, capsys):
    tiny = make_tiny_coco(tmp_path / "data", videos=1, frames=2)
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model.pt", build_model(ModelConfig(arch="single", size=64)),
               [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}])
    with pytest.raises(SystemExit) as exc:
        predict_module.main(["--run", str(run), str(tiny.parent / "img" / "v0_000.png"),
                             "--device", "cuda"])
    assert exc.value.code == 2 and "sees no CUDA GPU" in _one_error_line(capsys)
    assert evaluate_module.main(["--run", str(run), "--coco", str(tiny), "--images",
                                 str(tiny.parent / "img"), "--out", str(tmp_path / "r.json"),
                                 "--device", "cuda:0"]) == 2
    assert "sees no CUDA GPU" in _one_error_line(capsys)
    assert not (tmp_path / "r.json").exists()


# -- training: mixed precision and two processes -----------------------------------------------

def _config(tiny: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"coco": str(tiny), "images": str(tiny.parent / "img"), "out": str(out),
                          "model": "single", "size": 64, "batch": 4, "epochs": 1, **kw})


@pytest.mark.slow
def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    tiny = make_tiny_coco(tmp_path / "data")
    summary = train(_config(tiny, tmp_path / "run", precision="bf16", batch=8))
    assert summary["iterations"] == 1 and summary["epochs"][0]["loss"] > 0
    assert "autocast torch.bfloat16" in (tmp_path / "run" / "train.log").read_text()
    load_model(tmp_path / "run")


@pytest.mark.slow
def test_fp16_loss_scaling_is_saved_and_resumed(tmp_path, monkeypatch):
    """The GradScaler path (fp16, as on a GPU without bf16), run on the CPU."""
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device, precision: torch.float16)
    tiny = make_tiny_coco(tmp_path / "data")
    train(_config(tiny, tmp_path / "run", batch=8))
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["scaler"]["scale"] > 0
    summary = train(_config(tiny, tmp_path / "run", epochs=2, resume=True))
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2] and summary["iterations"] == 2
    assert all(e["loss"] is not None and e["loss"] == e["loss"] for e in summary["epochs"])


def _shape(value):
    """The keys and value types of a JSON document, without the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else \
        type(value).__name__


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes(tmp_path):
    tiny = make_tiny_coco(tmp_path / "data")
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "detector", "train", "--coco", str(tiny), "--images", str(tiny.parent / "img"),
         "--model", "two_frame", "--out", str(out), "--val-coco", str(tiny), "--epochs", "2",
         "--batch", "2", "--size", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # one run directory, written once, by rank 0
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.json", "model.pt",
                                                     "train.log"]
    log = (out / "train.log").read_text()
    assert log.count("epoch 1: {") == 1 and log.count("done (") == 1  # the epoch's metrics row
    assert "device cpu, 2 process(es), float32" in log
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and printed[0]["iterations"] == 4
    model, meta = load_model(out)
    assert meta["config"]["arch"] == "two_frame" and not model.training

    # each process took half of the 8 images an epoch: 2 steps of 2 images, not 4
    ddp = json.loads((out / "metrics.json").read_text())
    assert ddp["processes"] == 2 and ddp["device"] == "cpu" and ddp["status"] == "epochs"
    assert [(e["epoch"], e["iterations"]) for e in ddp["epochs"]] == [(1, 2), (2, 4)]

    single = train(_config(tiny, tmp_path / "one", model="two_frame", val_coco=str(tiny),
                           batch=2))
    assert single["processes"] == 1 and single["iterations"] == 4  # one epoch
    assert _shape(ddp) == _shape(single)
    assert set(single) == set(json.loads((tmp_path / "one" / "metrics.json").read_text()))
