"""Where a model runs: the device a ``--device`` names, the precision of training on it, and
the process group of a ``torchrun`` launch.

* ``--device``: ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda`` or
  ``cuda:N``. Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK`` (``auto`` or
  ``cuda``; a fixed ``cuda:N`` is refused there).
* ``--precision``: ``auto`` is mixed precision on a GPU (bfloat16 where the GPU has it, else
  float16 with a gradient scaler) and float32 on the CPU; ``fp32``, ``bf16`` and ``fp16``
  (GPU only) choose. Autocast covers the backbone and FPN; the model takes everything after
  them (flow warp, aggregation, RPN, box head, box coordinates) in float32.
* :class:`Distributed`: this process's place in a ``torchrun`` launch, read from the
  ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` it sets; backend ``nccl`` on GPUs, ``gloo`` on
  the CPU. A plain ``python -m detector ...`` is one process of one, and nothing is started.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# rank 0 validates and writes checkpoints while the others wait; allow a slow validation
GROUP_TIMEOUT = timedelta(hours=1)


def resolve_device(spec: str | torch.device = "auto", local_rank: int | None = None
                   ) -> torch.device:
    """The torch device ``spec`` names (see the module's notes); ``local_rank`` is this
    process's GPU under torchrun. Raises ValueError with a one-line reason."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"unknown device {spec!r}; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ValueError(f"device {spec!r}: torch sees no CUDA GPU here (torch "
                         f"{torch.__version__}, {build}); use --device cpu or auto")
    if match.group(1) is not None and local_rank is not None:
        raise ValueError(f"device {spec!r}: under torchrun each process takes the GPU of its "
                         "LOCAL_RANK; give --device cuda or auto")
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {spec!r}: there is no GPU {index}, torch sees {count}")
    return torch.device("cuda", index)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of training on ``device``, or None for plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} in the environment is not a whole number") from None


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes; one of one without torchrun."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: validates, writes the run directory and prints."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> "Distributed":
        """From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one of one when they
        are absent)."""
        env = dict(os.environ if env is None else env)
        world = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        local = _env_int(env, "LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} in the "
                             "environment do not fit together")
        return cls(rank, world, local) if world > 1 else cls()

    @classmethod
    def current(cls) -> "Distributed":
        """From the initialised process group (one of one when there is none)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        local = _env_int(dict(os.environ), "LOCAL_RANK", dist.get_rank())
        return cls(dist.get_rank(), dist.get_world_size(), local)

    @classmethod
    def here(cls) -> "Distributed":
        """From the initialised process group, else from torchrun's environment."""
        place = cls.current()
        return place if place.active else cls.from_environment()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all processes (``value`` itself when alone)."""
        if not self.active:
            return value
        total = value.detach().clone()
        torch.distributed.all_reduce(total)
        return total / self.world_size

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process; the others wait here until rank 0 comes."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def join(device_spec: str) -> tuple[Distributed, torch.device, bool]:
    """This process's place and device; under torchrun (``WORLD_SIZE`` > 1) without a process
    group yet, starts one (nccl on a GPU, gloo on the CPU). Returns ``(place, device,
    started)``; call :func:`leave` when ``started``."""
    place = Distributed.here()
    device = resolve_device(device_spec, place.local_rank if place.active else None)
    if not place.active:
        return place, device, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if torch.distributed.is_initialized():
        return place, device, False
    torch.distributed.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT,
        **({"device_id": device} if device.type == "cuda" else {}))
    return place, device, True


def leave() -> None:
    """End the process group :func:`join` started."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
