"""GPU target profiles: the facts about a GPU that lowering, validation and the roofline need.

Profiles are data (``amk_tune/data/targets.json``); ``--gpu NAME`` picks one. ``auto`` means
the live device when there is one, else ``h100``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

from amk_tune.errors import TargetError

DEFAULT_TARGET = "h100"


@dataclass(frozen=True)
class Target:
    """One GPU model. Memory sizes in bytes, bandwidths in GB/s (1e9 bytes per second)."""

    name: str
    arch: str
    sms: int
    smem_per_sm: int
    smem_per_block: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    hbm_gbps: float
    measured_gbps: float

    def program_dict(self) -> dict[str, int | str]:
        """The ``target`` object of an amk-program (PROGRAM_FORMAT.md)."""
        return {
            "name": self.name,
            "sms": self.sms,
            "smem_per_sm": self.smem_per_sm,
            "smem_per_block": self.smem_per_block,
            "max_threads_per_sm": self.max_threads_per_sm,
            "max_blocks_per_sm": self.max_blocks_per_sm,
        }

    def floor_us(self, weight_bytes: int) -> float:
        """The bandwidth floor: microseconds to stream ``weight_bytes`` at the measured rate."""
        return weight_bytes / (self.measured_gbps * 1e3)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@cache
def _profiles() -> dict[str, Target]:
    raw = json.loads(resources.files("amk_tune").joinpath("data/targets.json").read_text())
    return {name: Target(name=name, **fields) for name, fields in raw.items() if name[0] != "_"}


def target_names() -> list[str]:
    return sorted(_profiles())


def get_target(name: str) -> Target:
    """The profile called ``name`` (case-insensitive); ``auto`` resolves to the live GPU."""
    key = name.strip().lower()
    if key == "auto":
        from amk_tune.device import live_target_name

        key = live_target_name() or DEFAULT_TARGET
    try:
        return _profiles()[key]
    except KeyError:
        raise TargetError(
            f"unknown GPU target {name!r}; known targets: {', '.join(target_names())} "
            "(or 'auto' for the live device)"
        ) from None
