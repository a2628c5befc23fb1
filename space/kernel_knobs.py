"""Kernel knobs: choices compiled into the megakernel itself, not into the program.

Schedule knobs change the lowered Program; these change the CUDA build. ``vm.build`` emits
them as ``constexpr`` values of the generated header (``cfg::``), so every value gives a
different source, a different build-cache key and a different cubin (tests/study prove it).
Only ``k_split`` changes the arithmetic (each row's sum is split into per-warp partial
sums, then added); with the others each output row is summed in the same order.

- ``rows_per_warp``: GEMV rows (row pairs for gate/up and RoPE tiles) one warp computes
  together, their weight loads interleaved: more independent 16-byte loads in flight.
- ``unroll``: 16-byte chunks of each row a lane loads into registers before it multiplies
  them (loads in flight per lane per row).
- ``k_split``: warps that share each row of a layer tile, each a share of its columns,
  their sums added through shared memory (one barrier per round of rows). Meant for tiles
  with fewer rows than warps, and to spread staged and streamed rows over all warps; on
  SmolLM2 and the 1B shape it lost at every setting tried (BENCHMARKS.md, third round).
- ``lm_rows_per_warp``, ``lm_unroll``: the same two for the LM-head GEMV alone. It streams
  the largest matrix with the fewest rows staged, so it wants more loads in flight than the
  layers' tiles, whose registers the other pair sizes.
- ``lm_ring``: 0 loads the LM head's weights into registers (``lm_unroll`` per row); D > 0
  streams them through a ring of D stages of cp.async copies in the LM task's own slot
  (``lm_rows_per_warp`` rows x 512 B per warp and stage): D x rows loads per lane stay in
  flight across chunk blocks and rows, at no register cost. It must fit one slot; a
  study reads both ring depths as upper bounds (``vm.build.fit_rings``).
- ``ring``: the same for the one-segment layer tiles (O, down) whose rows outgrow their
  slot (``rows_per_warp`` rows per stage); such a tile then stages nothing. 0: staged
  leading rows, the rest through registers.
- ``ring_pairs`` (with ``ring`` > 0): the two-segment tiles (gate/up, QKV) that outgrow
  their slot take the ring too, both rows of each pair per stage.
- ``ring_prefill`` (with ``ring`` or ``lm_ring`` > 0): a ringed tile's first D - 1 stages
  (D: its ring's stages) are issued with its prefetched weights, before its wait
  (``prefetch`` - 1 tasks ahead), not after the wait and prologue: its ring starts full
  instead of a DRAM latency behind.
- ``prefetch``: tasks whose weights a block has in flight (the prefetch ring's slots in
  shared memory): 1 stages a task's weights only while it waits on its own inputs; more
  stream later tasks' weights while earlier tasks wait and run.
- ``weights_evict_first``: the weight rows' copies and loads carry an L2 evict-first hint:
  read once per step, they stop pushing out what is read again soon (the KV cache, the
  activations): the staged rows' and the ring's copies, and the rows read into registers.
- ``bulk_stage`` (sm_90 and newer): the staged rows of a tile that takes no ring go to its
  slot as one TMA bulk copy per row segment (``cp.async.bulk``), issued by one thread and
  completing on the slot's mbarrier, instead of 16-byte ``cp.async`` copies from every
  thread. The block's load pipeline stays free for the polls and loads on its critical path.
  It helped the SmolLM2 shape, whose tiles are all staged, and hurt the 1B shape
  (BENCHMARKS.md, seventh round).
- ``down_slot`` (with the schedule's ``fuse_down``): a silu_down tile whose rows are all
  staged stages its down-projection columns in its slot too, after the rows, when they fit.
  Off (the default, unlike the other knobs: it came with fuse_down), they are prefetched
  into the L2 before the wait and read from there. The slot path costs registers around
  the out-of-line staging call: with ``weights_evict_first`` at sm_90 the kernel went from
  246-250 registers to 255 and 120-136 B of spills, and SmolLM2 ran 3% slower
  (BENCHMARKS.md, tenth round).
- ``spin_sleep_ns``: the longest ``__nanosleep`` back-off of a spin-wait on a counter; 0
  spins without sleeping (lowest hand-off latency, most memory traffic while waiting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amk_tune.errors import ScheduleError
from amk_tune.json_file import read_json

ROWS_PER_WARP = (1, 2, 4)
UNROLL = (1, 2, 4)
SPIN_SLEEP_NS = (0, 32, 64, 256)
PREFETCH = (1, 2, 3, 4)
K_SPLIT = (1, 2, 4, 8)
LM_RING = (0, 2, 4, 8)
RING = (0, 2, 4, 8)


def has_bulk_copies(arch: str) -> bool:
    """Whether ``arch`` (``sm_XY``) has TMA bulk copies and mbarrier transaction counts, which
    ``bulk_stage`` needs: sm_90 and newer."""
    return int(arch.removeprefix("sm_").rstrip("a")) >= 90


@dataclass(frozen=True)
class KernelKnobs:
    """The kernel's compile-time knobs; the defaults are the kernel before knobs existed
    (``down_slot``: fuse_down's before it)."""

    rows_per_warp: int = 1
    unroll: int = 1
    spin_sleep_ns: int = 64
    prefetch: int = 1
    lm_rows_per_warp: int = 1
    lm_unroll: int = 1
    k_split: int = 1
    lm_ring: int = 0
    ring: int = 0
    ring_pairs: bool = False
    ring_prefill: bool = False
    weights_evict_first: bool = False
    bulk_stage: bool = False
    down_slot: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("rows_per_warp", ROWS_PER_WARP), ("unroll", UNROLL),
                              ("prefetch", PREFETCH), ("lm_rows_per_warp", ROWS_PER_WARP),
                              ("lm_unroll", UNROLL), ("k_split", K_SPLIT),
                              ("lm_ring", LM_RING), ("ring", RING)):
            v = getattr(self, name)
            if isinstance(v, bool) or v not in allowed:
                raise ScheduleError(f"kernel knob {name} = {v!r}: choose one of {allowed}")
        for name in ("ring_pairs", "ring_prefill", "weights_evict_first", "bulk_stage",
                     "down_slot"):
            if not isinstance(getattr(self, name), bool):
                raise ScheduleError(f"kernel knob {name} = {getattr(self, name)!r}: true or false")
        if self.ring_pairs and not self.ring:
            raise ScheduleError("kernel knob ring_pairs = true needs ring > 0: it says which "
                                "tiles the layer ring takes")
        if self.ring_prefill and not (self.ring or self.lm_ring):
            raise ScheduleError("kernel knob ring_prefill = true needs ring > 0 or lm_ring > 0: "
                                "it fills a ring's first stages early; turn a ring on or set "
                                "ring_prefill = false")
        v = self.spin_sleep_ns
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
            raise ScheduleError(f"kernel knob spin_sleep_ns = {v!r}: an integer from 0 to "
                                "1000000 (nanoseconds)")

    def to_dict(self) -> dict[str, int | bool]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: Any) -> KernelKnobs:
        if not isinstance(d, dict):
            raise ScheduleError(f"kernel knobs are a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(KernelKnobs)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ScheduleError(f"unknown kernel knob(s) {unknown}; known: {sorted(known)}")
        return KernelKnobs(**d)

    @staticmethod
    def load(path: str | Path) -> KernelKnobs:
        return KernelKnobs.from_dict(read_json(path, "kernel knobs", ScheduleError))
