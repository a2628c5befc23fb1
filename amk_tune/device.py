"""What GPU this process can see, without requiring CuPy or a GPU to be present."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveGpu:
    name: str
    arch: str
    sms: int
    memory_bytes: int


def live_gpu() -> LiveGpu | None:
    """The first CUDA device as torch sees it, or None when there is none."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return LiveGpu(
        name=props.name,
        arch=f"sm_{props.major}{props.minor}",
        sms=props.multi_processor_count,
        memory_bytes=props.total_memory,
    )


# Substrings of device names, most specific first.
_NAME_HINTS = [
    ("h200", "h200"), ("h100", "h100"), ("a100", "a100"), ("b200", "b200"),
    ("l40s", "l40s"), ("a10g", "a10g"), ("rtx 4090", "rtx4090"), ("rtx 5090", "rtx5090"),
    ("l4", "l4"), ("t4", "t4"),
]


def live_target_name() -> str | None:
    """The profile name of the live GPU, or None without a GPU or for an unknown model."""
    gpu = live_gpu()
    if gpu is None:
        return None
    lowered = gpu.name.lower()
    for hint, name in _NAME_HINTS:
        if hint in lowered:
            return name
    return None
