"""The analytic cost model of ``--simulate``: a latency estimate, never a measurement.

    us/token = stream + sync + tasks + launch

- ``stream``: the step's weight bytes at the target's measured read rate, divided by an
  efficiency <= 1: the 16-byte loads a block keeps in flight (warps x rows per warp x
  unroll x blocks per SM, times the prefetch depth: the ring keeps later tasks' weights
  streaming) against what Little's law needs to cover ~0.8 us of HBM latency.
  Register pressure past the SM's register file (spills) halves the efficiency.
- ``sync``: dependent stages on the critical path x the cost of one cross-block hop
  (~0.9 us, ANCHORS.md) plus half the spin back-off, less what GEMV weight staging
  (cp.async before the wait) hides.
- ``tasks``: the busiest block's tasks per step x a fixed per-task cost (record decode,
  barriers, input-vector load) that shrinks with more threads.
- ``launch``: ~7 us per cooperative launch, shared by the launch's decode steps.

Every term is >= 0 and ``stream`` >= the bandwidth floor, so the estimate is never under
``weight_bytes / bandwidth`` (``predict`` asserts it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amk_tune.targets import Target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule

HBM_LATENCY_US = 0.8
HOP_US = 0.9
TASK_US = 0.35
LAUNCH_US = 7.0
LOAD_BYTES = 16 * 32  # one 16-byte load per lane of a warp
REGISTERS_PER_SM = 65536


@dataclass(frozen=True)
class Cost:
    """An estimate in microseconds per token, term by term (all simulated)."""

    floor_us: float
    stream_us: float
    sync_us: float
    tasks_us: float
    launch_us: float

    @property
    def total_us(self) -> float:
        return self.stream_us + self.sync_us + self.tasks_us + self.launch_us

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_us": self.total_us}


def registers_per_thread(knobs: KernelKnobs) -> int:
    """A rough register count: a base plus the GEMV's loads in flight (two segments)."""
    return 40 + 4 * 2 * knobs.rows_per_warp * knobs.unroll + 2 * 2 * knobs.rows_per_warp


def predict(stats: dict[str, int], schedule: Schedule, knobs: KernelKnobs,
            target: Target) -> Cost:
    """Estimate us/token of a program from its ``program_stats`` (``weight_bytes``,
    ``critical_stages``, ``busiest_block_tasks``) under ``schedule`` and ``knobs``."""
    floor = target.floor_us(stats["weight_bytes"])
    warps = schedule.threads // 32
    in_flight = (schedule.blocks_per_sm * warps * knobs.rows_per_warp * knobs.unroll
                 * LOAD_BYTES * knobs.prefetch)
    needed = target.measured_gbps * 1e3 * HBM_LATENCY_US / target.sms  # bytes per SM
    efficiency = min(1.0, in_flight / needed)
    threads_per_sm = schedule.threads * schedule.blocks_per_sm
    if registers_per_thread(knobs) * threads_per_sm > REGISTERS_PER_SM:
        efficiency /= 2  # spills: every extra load in flight goes through local memory
    stream = floor / efficiency
    staged = min(schedule.smem_bytes, 65536) / 65536  # fraction of a hop staging hides
    hop = HOP_US + spin_us(knobs) - 0.3 * staged
    sync = stats["critical_stages"] * hop
    tasks = stats["busiest_block_tasks"] * TASK_US * (0.6 + 0.4 * 256 / schedule.threads)
    launch = LAUNCH_US / schedule.steps_per_launch
    cost = Cost(floor, stream, sync, tasks, launch)
    assert cost.total_us >= floor, f"cost model under the bandwidth floor: {cost}"
    return cost


def spin_us(knobs: KernelKnobs) -> float:
    """Average extra latency of a hop from the spin-wait back-off: half the longest sleep."""
    return knobs.spin_sleep_ns / 2 / 1000
