"""Where models run and in what precision: ``auto|cpu|cuda|cuda:N|mps`` and ``auto|fp32|bf16|fp16``.

``auto`` picks CUDA, then MPS, then the CPU. Precision ``auto`` is bf16 on a CUDA device that supports
it, fp16 on another GPU only where it keeps cosine >= :data:`FP16_MIN_COSINE` to fp32 (the encoder
checks this on a probe batch), and on the CPU bf16 only where AMX bf16 tiles make it faster (else fp32).
A device that is not on this machine is a :class:`ConfigError` naming the devices that are.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import torch

from core.runtime.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_CHOICES: tuple[str, ...] = get_args(DeviceName)
DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"  # the CLIs' --device help
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
# fp16 is used on a GPU without bf16 only where the probe vectors keep at least this cosine to fp32.
FP16_MIN_COSINE = 0.999
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@cache
def cpu_has_bf16() -> bool:
    """True where the CPU has AMX bf16 tiles, the units that make bf16 faster than fp32.

    AVX-512 BF16 alone is not enough: on such a 2-core Xeon, core.bench measured bf16 matmul at half
    the fp32 rate (0.16 vs 0.32 TFLOP/s) and the engine at 488 vs 878 tokens/s.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def available_devices() -> list[str]:
    """The devices this machine has, as names ``resolve_device`` accepts: ``cpu``, ``cuda:0``..., ``mps``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) -> CUDA, then MPS, then CPU; a named device -> itself if this machine has it.

    ``cuda`` means the current CUDA device (``cuda:0`` unless set otherwise, e.g. per torchrun rank).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        present = available_devices()
        if any(name.startswith("cuda") for name in present):
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if "mps" in present else "cpu")
    try:
        wanted = device if isinstance(device, torch.device) else torch.device(device.strip().lower())
    except (RuntimeError, ValueError, AttributeError, TypeError):
        raise ConfigError(
            f"Unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps "
            f"(this machine has: {', '.join(available_devices())})."
        ) from None
    present = available_devices()
    if wanted.type == "cpu":
        return torch.device("cpu")
    if wanted.type == "cuda":
        index = wanted.index
        if index is None and any(name.startswith("cuda") for name in present):
            return torch.device("cuda", torch.cuda.current_device())
        if index is not None and f"cuda:{index}" in present:
            return torch.device("cuda", index)
    elif wanted.type == "mps" and "mps" in present:
        return torch.device("mps")
    raise ConfigError(
        f"Device {str(wanted)!r} is not available on this machine; it has: {', '.join(present)}. "
        "Pass --device auto (or one of those)."
    )


def device_has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_precision(precision: Precision, device: torch.device | str | None = "cpu") -> ResolvedPrecision:
    """The precision to run in on ``device``: ``auto`` is bf16 where the device has fast bf16, fp16 on
    another GPU (``core.encoding.encoder`` then checks on a probe that fp16 keeps cosine >= :data:`FP16_MIN_COSINE`
    to fp32 and falls back to fp32 where it does not), and fp32 on a CPU without AMX bf16 tiles."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if device_has_bf16(device):
        return "bf16"
    return "fp16" if device.type in ("cuda", "mps") else "fp32"


def autocast(device: torch.device, precision: ResolvedPrecision):
    """Autocast to ``precision`` on ``device``'s type; a no-op context in fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (timings are meaningless otherwise); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
