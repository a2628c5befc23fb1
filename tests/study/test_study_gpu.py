"""On the GPU: every kernel knob computes what the reference VM computes, and the GPU worker
builds, checks and times a trial (the path `amk-tune study` takes without --simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from tests.conftest import TINY, TINY_UNTIED, tiny_weights
from vm.decode import cpu_runner, greedy_generate
from vm.gpu_runner import gpu_runner

pytestmark = pytest.mark.gpu
H100 = get_target("h100")
# the fifth: an LM ring of 4 stages, prefilled; its tiles leave warps fewer than the 3
# prefilled items, or none. Then the evict-first hint on the LM ring's copies and the
# layer tiles' register loads; the next stages the layer tiles' rows by TMA bulk copies, and
# the last stages fuse_down's columns with those rows (down_slot)
KNOBS = [KernelKnobs(2, 2, 0), KernelKnobs(1, 4, 256), KernelKnobs(4, 4, 32),
         KernelKnobs(rows_per_warp=2, unroll=2, k_split=4, lm_ring=2, lm_rows_per_warp=2),
         KernelKnobs(rows_per_warp=2, unroll=2, k_split=4, lm_ring=4, ring_prefill=True),
         KernelKnobs(rows_per_warp=2, unroll=2, lm_ring=4, weights_evict_first=True),
         KernelKnobs(rows_per_warp=2, unroll=2, lm_ring=4, weights_evict_first=True,
                     bulk_stage=True),
         KernelKnobs(rows_per_warp=2, unroll=2, weights_evict_first=True, bulk_stage=True,
                     down_slot=True)]
SCHEDULES = {
    "default": Schedule(steps_per_launch=4),
    "unfused": Schedule(fuse_norm=False, fuse_rope=False, fuse_residual=False, fuse_silu=False,
                        fuse_argmax=False, sm_policy="blocked", blocks_per_sm=2, threads=128,
                        smem_bytes=0, steps_per_launch=4),
    "wide": Schedule(split_kv=3, tiles=40, lm_tiles=9, threads=1024, steps_per_launch=4),
    # QKV tiles that cross heads (and, on TINY, KV groups: two signals)
    "span": Schedule(qkv_span=True, tiles=7, split_kv=2, steps_per_launch=4),
    # the down projection in the gate/up tiles, added into the layer output atomically
    "down": Schedule(fuse_down=True, tiles=7, steps_per_launch=4),
    "down-unstaged": Schedule(fuse_down=True, tiles=5, smem_bytes=0, steps_per_launch=4),
    # attention + O rows added into the sums the QKV tiles start (with and without down)
    "o": Schedule(fuse_o=True, tiles=6, steps_per_launch=4),
    "o-down-span": Schedule(fuse_o=True, fuse_down=True, qkv_span=True, tiles=7,
                            steps_per_launch=4),
}


def _matches_the_reference_vm(w, s: Schedule, knobs: KernelKnobs) -> None:
    """9 greedy tokens from a 4-token prompt: the GPU's equal the reference VM's, and
    every step's logits agree within fp32 tolerance."""
    prompt = [3, 17, 5, 42]
    ref = greedy_generate(w, s, H100, prompt, 9, cpu_runner(w))
    gpu = greedy_generate(w, s, H100, prompt, 9, gpu_runner(w, knobs=knobs))
    assert gpu.tokens == ref.tokens
    scale = np.abs(ref.logits).max(axis=1, keepdims=True)
    assert np.all(np.abs(gpu.logits - ref.logits) <= 1e-5 + 2e-5 * scale)


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: "-".join(map(str, k.to_dict().values())))
@pytest.mark.parametrize("spec", [TINY, TINY_UNTIED], ids=lambda s: s.name)
def test_kernel_knobs_compute_what_the_reference_vm_computes(spec, knobs, sched):
    w = tiny_weights(spec, seed=4)
    s = SCHEDULES[sched]
    _matches_the_reference_vm(w, s, knobs)


@pytest.mark.parametrize("prefill", [False, True], ids=["plain", "prefill"])
@pytest.mark.parametrize("pairs", [False, True], ids=["one-segment", "pairs"])
@pytest.mark.parametrize(("spec", "group"), [(TINY, None), (TINY, 0), (TINY, 16),
                                            (TINY_UNTIED, None)],
                         ids=["tiny-bf16", "tiny-int8", "tiny-int8-g16", "tiny-untied-bf16"])
def test_the_layer_ring_computes_what_the_reference_vm_computes(spec, group, pairs, prefill):
    """One tile per projection and small slots: the down tile (with ``ring_pairs``, the
    gate/up tile) outgrows its slot, so with ``ring`` it streams through it (gemv.cuh:
    rows_ring) instead of staging; with ``ring_prefill`` its first ring stage is issued with
    the prefetched weights (gemv_stage). (tiny-untied's int8 down tile, 3.75 KiB, would fit:
    it is not a case of this test.)"""
    from amk_tune.model.quantise import to_storage
    from vm import build
    from vm.lowering import lower

    w = tiny_weights(spec, seed=5)
    if group is not None:
        w = to_storage(w, "int8", group)
    s = Schedule(tiles=1, smem_bytes=0, threads=128, steps_per_launch=4)
    # a pair ring needs twice the slot: 8 KiB slots (prefetch 2) instead of 5 KiB
    knobs = KernelKnobs(ring=2, prefetch=2 if pairs else 3, rows_per_warp=1, ring_pairs=pairs,
                        ring_prefill=prefill)
    cfg = build.config_for(lower(spec, s, H100), spec, knobs)
    wbytes = 1 if group is not None else 2
    ringed = 2 * spec.intermediate if pairs else spec.intermediate  # gate/up rows, or down's K
    assert ringed * wbytes * spec.hidden > cfg.slot_bytes  # that tile takes the ring
    _matches_the_reference_vm(w, s, knobs)


def test_qkv_tiles_across_heads_through_the_pairs_ring():
    """One ``qkv_span`` tile of every RoPE pair (all heads, both KV groups of TINY) outgrows
    its 8 KiB slot, so it streams through the pairs ring, prefilled; the other projections'
    tiles too (the layer-ring test above)."""
    from vm import build
    from vm.lowering import lower

    w = tiny_weights(TINY, seed=7)
    s = Schedule(qkv_span=True, tiles=1, smem_bytes=0, threads=128, steps_per_launch=4)
    knobs = KernelKnobs(ring=2, prefetch=2, rows_per_warp=1, ring_pairs=True, ring_prefill=True)
    cfg = build.config_for(lower(TINY, s, H100), TINY, knobs)
    assert TINY.qkv_rows * TINY.hidden * 2 > cfg.slot_bytes
    _matches_the_reference_vm(w, s, knobs)


@pytest.mark.parametrize("prefill", [False, True], ids=["plain", "prefill"])
@pytest.mark.parametrize("group", [None, 16], ids=["bf16", "int8-g16"])
def test_a_long_lm_ring_computes_what_the_reference_vm_computes(group, prefill):
    """Two LM tiles of ~105 rows on 4 warps: each warp streams ~26 items through a 4-stage
    LM ring, with ``ring_prefill`` the first 3 issued a task ahead (gemv_stage) and the rest
    waited for as without it. (The LM-ring knob sets above leave a warp one row at most.)"""
    from amk_tune.model.quantise import to_storage

    w = tiny_weights(TINY, seed=6)
    if group is not None:
        w = to_storage(w, "int8", group)
    s = Schedule(lm_tiles=2, threads=128, steps_per_launch=4)
    _matches_the_reference_vm(w, s, KernelKnobs(lm_ring=4, prefetch=2, ring_prefill=prefill))


def test_the_gpu_worker_builds_checks_and_times_a_trial(tmp_path):
    from amk_tune.device import live_target_name
    from amk_tune.study.worker import Worker, WorkerSpec

    target = get_target(live_target_name() or "h100")
    spec = WorkerSpec(backend="gpu", model="smollm2-135m", layers=2, dtype="bf16",
                      target=target.name, prompt_len=8, max_steps=8, iters=20,
                      cache_dir=str(tmp_path), measure_baselines=False)
    worker = Worker(spec, trial_timeout_s=300)
    try:
        info = worker.start()
        assert info["measured"] is True and info["baselines"] is None
        for number, (sched, knobs) in enumerate([
            (Schedule(), KernelKnobs()),
            (Schedule(steps_per_launch=8, threads=1024, tiles=100), KernelKnobs(4, 2, 0)),
        ]):
            res = worker.evaluate({"number": number, "schedule": sched.to_dict(),
                                   "kernel_knobs": knobs.to_dict()})
            print(number, res.get("latency_us"), res.get("oracle", {}).get("message"),
                  res.get("error"))
            assert res["ok"] and res["measured"], res.get("error")
            assert res["oracle"]["passed"], res["oracle"]["message"]
            assert res["registers"] > 0 and res["binary"][:4] == b"\x7fELF"
            assert res["latency_us"] > 0 and res["p10_us"] <= res["p90_us"]
    finally:
        worker.close()


def test_the_gpu_worker_runs_each_trial_on_its_own_weight_format(tmp_path):
    """An int8 study's trials ask for their quantisation group: the worker makes, uploads
    and checks each format against HF on exactly those dequantised weights."""
    from amk_tune.device import live_target_name
    from amk_tune.study.worker import Worker, WorkerSpec

    target = get_target(live_target_name() or "h100")
    spec = WorkerSpec(backend="gpu", model="smollm2-135m", layers=2, dtype="int8",
                      target=target.name, prompt_len=8, max_steps=8, iters=20,
                      cache_dir=str(tmp_path), measure_baselines=False)
    worker = Worker(spec, trial_timeout_s=300)
    try:
        info = worker.start()
        shas = set()
        for number, group in enumerate((0, 64, 0)):
            res = worker.evaluate({"number": number, "schedule": Schedule().to_dict(),
                                   "kernel_knobs": KernelKnobs().to_dict(),
                                   "weights": {"dtype": "int8", "quant_group": group}})
            assert res["ok"] and res["oracle"]["passed"], res.get("error") or res["oracle"]
            shas.add((group, res["weights_sha256"]))
        assert len(shas) == 2 and (0, info["weights_sha256"]) in shas
    finally:
        worker.close()
