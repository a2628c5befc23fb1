"""Real lowerings of small models, and seeded mutants of them.

Real lowerings come from ``vm.lowering.lower`` on tiny Llama shapes, on GPU targets cut to
a few SMs (so the exact ground truth stays cheap), under sampled feasible schedules and
1-3 steps per launch. Each mutation operator models one way a lowering goes wrong; it
edits a copy of the program's JSON and returns False when the program offers nothing to
mutate. Whether a mutant is unsafe is for the ground truth to say.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from amk_tune.model.spec import ModelSpec
from amk_tune.targets import Target, get_target
from space.schedule import SM_POLICIES, Schedule

Doc = dict[str, Any]

TINY_SPECS = (
    ModelSpec(name="tiny-gqa", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16,
              intermediate=96, vocab=211, rms_eps=1e-5, rope_theta=10000.0,
              tie_embeddings=True, max_position=256),
    ModelSpec(name="tiny-mqa", hidden=48, layers=1, heads=6, kv_heads=1, head_dim=8,
              intermediate=80, vocab=97, rms_eps=1e-6, rope_theta=500000.0,
              tie_embeddings=False, max_position=256),
    ModelSpec(name="tiny-mha", hidden=32, layers=2, heads=2, kv_heads=2, head_dim=16,
              intermediate=64, vocab=64, rms_eps=1e-5, rope_theta=10000.0,
              tie_embeddings=True, max_position=256),
)


def small_target(rng: random.Random) -> Target:
    """A real profile (its shared memory and thread limits) cut to 2-6 SMs."""
    base = get_target(rng.choice(["h100", "l4", "a100", "t4"]))
    sms = rng.randint(2, 6)
    return dataclasses.replace(base, name=f"{base.name}-{sms}sm", sms=sms)


def feasible_schedule(rng: random.Random, target: Target, blocks_hint: int) -> Schedule:
    """A random schedule whose launch fits ``target`` (what the search space may propose)."""
    bps = rng.choice([1, 1, 2]) if target.max_blocks_per_sm >= 2 else 1
    threads = rng.choice([t for t in (64, 128, 256, 512) if bps * t <= target.max_threads_per_sm])
    smem = rng.choice([s for s in (16384, 32768, 49152, 65536)
                       if s <= target.smem_per_block and bps * s <= target.smem_per_sm])
    return Schedule(
        tiles=rng.choice([None, None, rng.randint(1, 2 * blocks_hint * bps)]),
        lm_tiles=rng.choice([None, rng.randint(1, 6)]),
        sm_policy=rng.choice(SM_POLICIES),
        split_kv=rng.choice([1, 1, 2, 3]),
        fuse_norm=rng.random() < 0.7, fuse_rope=rng.random() < 0.7,
        fuse_residual=rng.random() < 0.7, fuse_silu=rng.random() < 0.7,
        fuse_argmax=rng.random() < 0.7,
        blocks_per_sm=bps, threads=threads, smem_bytes=smem,
    )


def real_lowering(rng: random.Random, min_steps: int = 1) -> tuple[str, Doc]:
    """(description, program JSON) of a sampled small real lowering."""
    from vm.lowering import lower

    spec = rng.choice(TINY_SPECS)
    target = small_target(rng)
    sched = feasible_schedule(rng, target, target.sms)
    steps = rng.randint(min_steps, 3)
    position = rng.choice([0, 0, 5])
    program = lower(spec, sched, target, steps=steps, position=position)
    return f"{spec.name} on {target.name}, {steps} step(s), {sched}", program.to_dict()


# ---------------------------------------------------------------------------------------
# mutation operators
# ---------------------------------------------------------------------------------------


def _tasks(doc: Doc) -> list[Doc]:
    return [t for q in doc["queues"] for t in q]


def _written(doc: Doc) -> list[str]:
    return sorted({r["buffer"] for t in _tasks(doc) for r in t["write"]})


def drop_wait(rng: random.Random, doc: Doc) -> bool:
    waiting = [t for t in _tasks(doc) if t["wait"]]
    if not waiting:
        return False
    t = rng.choice(waiting)
    t["wait"].pop(rng.randrange(len(t["wait"])))
    return True


def lower_wait(rng: random.Random, doc: Doc) -> bool:
    waits = [w for t in _tasks(doc) for w in t["wait"] if w["value"] >= 2]
    if not waits:
        return False
    w = rng.choice(waits)
    w["value"] -= rng.randint(1, w["value"] - 1)
    return True


def order_deadlock(rng: random.Random, doc: Doc) -> bool:
    """Move a producer behind one of its consumers in that consumer's queue."""
    queues = doc["queues"]
    consumers = [(b, i, w["counter"]) for b, q in enumerate(queues) for i, t in enumerate(q)
                 for w in t["wait"]]
    rng.shuffle(consumers)
    for b, i, counter in consumers:
        producers = [(pb, j) for pb, q in enumerate(queues) for j, t in enumerate(q)
                     if pb != b and any(s["counter"] == counter for s in t["signal"])]
        if producers:
            pb, j = rng.choice(producers)
            queues[b].insert(i + 1, queues[pb].pop(j))
            return True
    return False


def war_scratch(rng: random.Random, doc: Doc) -> bool:
    """Reuse one written buffer for another (a shared scratch buffer), mostly two that one
    task touches together, whose lifetimes overlap (reuse far apart is often safe)."""
    sizes = {name: doc["buffers"][name]["bytes"] for name in _written(doc)}
    pairs = [(a, b) for a in sizes for b in sizes if a != b and sizes[b] <= sizes[a]]
    together = {(r["buffer"], u["buffer"]) for t in _tasks(doc) for r in t["read"] + t["write"]
                for u in t["read"] + t["write"]}
    near = [pair for pair in pairs if pair in together]
    if not pairs:
        return False
    keep, gone = rng.choice(near if near and rng.random() < 0.8 else pairs)
    for t in _tasks(doc):
        for r in t["read"] + t["write"]:
            if r["buffer"] == gone:
                r["buffer"] = keep
    del doc["buffers"][gone]
    return True


def cross_step(rng: random.Random, doc: Doc) -> bool:
    """Break what keeps step s + 1 off step s's data: drop the stride of a per-step write,
    or move the task that ends a step (argmax) off block 0."""
    if doc["steps"] < 2:
        return False
    strided = [r for t in _tasks(doc) for r in t["write"] if r.get("stride")]
    queues = doc["queues"]
    last = [(b, i) for b, q in enumerate(queues) for i, t in enumerate(q) if t["op"] == "argmax"]
    if last and len(queues) > 1 and (not strided or rng.random() < 0.5):
        b, i = rng.choice(last)
        rng.choice([q for k, q in enumerate(queues) if k != b]).append(queues[b].pop(i))
        return True
    if not strided:
        return False
    rng.choice(strided)["stride"] = 0
    return True


def kv_stride(rng: random.Random, doc: Doc) -> bool:
    """Append to the KV cache at the wrong per-step offset."""
    appends = [t for t in _tasks(doc) if any(r["buffer"].startswith(("k_cache", "v_cache"))
                                             and r.get("stride") for r in t["write"])]
    if doc["steps"] < 2 or not appends:
        return False
    t = rng.choice(appends)
    for r in t["write"]:
        if r.get("stride"):
            row = r["stride"]
            r["stride"] = rng.choice([0, row // 2, 2 * row, row + 4])
    return True


def epoch_drift(rng: random.Random, doc: Doc) -> bool:
    """Declare a counter's per_step one off what its signals add up to."""
    if not doc["counters"]:
        return False
    name = rng.choice(sorted(doc["counters"]))
    c = doc["counters"][name]
    if c["per_step"] > 1 and rng.random() < 0.5:
        c["per_step"] -= 1
        for t in _tasks(doc):
            for w in t["wait"]:
                if w["counter"] == name:
                    w["value"] = min(w["value"], c["per_step"])
    else:
        c["per_step"] += 1
    return True


def co_blocks(rng: random.Random, doc: Doc) -> bool:
    """More blocks than the GPU holds at once."""
    launch, target = doc["launch"], doc["target"]
    extra = target["sms"] * launch["blocks_per_sm"] - launch["blocks"] + rng.randint(1, 2)
    launch["blocks"] += extra
    doc["queues"] += [[] for _ in range(extra)]
    return True


def co_smem(rng: random.Random, doc: Doc) -> bool:
    """Shared memory over a task's budget, the block's limit or the SM's."""
    launch, target = doc["launch"], doc["target"]
    kind = rng.randrange(3)
    if kind == 0:
        rng.choice(_tasks(doc))["smem_bytes"] = launch["smem_bytes"] + rng.randint(1, 4096)
    elif kind == 1:
        launch["smem_bytes"] = target["smem_per_block"] + 16
    else:
        launch["smem_bytes"] = target["smem_per_sm"] // launch["blocks_per_sm"] + 16
    return True


def co_threads(rng: random.Random, doc: Doc) -> bool:
    """More threads per SM than it has."""
    launch, target = doc["launch"], doc["target"]
    launch["threads"] = 1024
    launch["blocks_per_sm"] = max(launch["blocks_per_sm"],
                                  target["max_threads_per_sm"] // 1024 + rng.randint(1, 2))
    return True


def out_of_bounds(rng: random.Random, doc: Doc) -> bool:
    t = rng.choice([t for t in _tasks(doc) if t["read"] or t["write"]])
    r = rng.choice(t["read"] + t["write"])
    size = doc["buffers"][r["buffer"]]["bytes"]
    kind = rng.randrange(4)
    if kind == 0:
        r["end"] = size + rng.randint(1, 64)
    elif kind == 1:
        r["begin"] = r["end"]
    elif kind == 2:
        r["begin"] = -rng.randint(1, 64)
    else:
        r["stride"] = size
        doc["steps"] = max(doc["steps"], 2)
    return True


def unknown_name(rng: random.Random, doc: Doc) -> bool:
    t = rng.choice(_tasks(doc))
    kind = rng.choice(["wait", "signal", "read", "write"])
    if kind in ("wait", "signal"):
        entry = {"counter": "no.such.counter", "value": 1} if kind == "wait" else \
            {"counter": "no.such.counter", "add": 1}
    else:
        entry = {"buffer": "no.such.buffer", "begin": 0, "end": 4}
    t[kind].append(entry)
    return True


def duplicate_id(rng: random.Random, doc: Doc) -> bool:
    tasks = _tasks(doc)
    if len(tasks) < 2:
        return False
    a, b = rng.sample(tasks, 2)
    b["id"] = a["id"]
    return True


def queue_count(rng: random.Random, doc: Doc) -> bool:
    if rng.random() < 0.5 and doc["queues"]:
        doc["queues"].pop(rng.randrange(len(doc["queues"])))
    else:
        doc["queues"].append([])
    return True


def junk(rng: random.Random, doc: Doc) -> bool:
    """Break the JSON shape: a missing field, a value of the wrong type, a wrong object."""
    t = rng.choice(_tasks(doc))
    bad: list[Any] = ["7", 1.5, None, True, [], {}]
    kind = rng.randrange(7)
    if kind == 0:
        del t[rng.choice(["id", "op", "wait", "read", "write", "signal"])]
    elif kind == 1:
        t[rng.choice(["wait", "read", "write", "signal", "smem_bytes", "args"])] = rng.choice(bad)
    elif kind == 2 and t["read"] + t["write"]:
        rng.choice(t["read"] + t["write"])[rng.choice(["begin", "end", "stride"])] = \
            rng.choice(bad)
    elif kind == 3:
        doc["launch"][rng.choice(["blocks", "threads", "blocks_per_sm", "smem_bytes"])] = \
            rng.choice(bad)
    elif kind == 4:
        doc[rng.choice(["steps", "buffers", "counters", "queues", "launch", "target"])] = \
            rng.choice(bad)
    elif kind == 5 and doc["counters"]:
        doc["counters"][rng.choice(sorted(doc["counters"]))] = rng.choice(bad)
    else:
        doc["queues"][rng.randrange(len(doc["queues"]))] = rng.choice(bad)
    return True


MUTATIONS: dict[str, Callable[[random.Random, Doc], bool]] = {
    "dropped wait": drop_wait,
    "lowered wait value": lower_wait,
    "program-order deadlock": order_deadlock,
    "reused scratch buffer": war_scratch,
    "cross-step overwrite": cross_step,
    "wrong KV stride": kv_stride,
    "epoch drift": epoch_drift,
    "co-residency: blocks": co_blocks,
    "co-residency: shared memory": co_smem,
    "co-residency: threads": co_threads,
    "out-of-bounds range": out_of_bounds,
    "unknown name": unknown_name,
    "duplicate id": duplicate_id,
    "wrong queue count": queue_count,
    "malformed JSON shape": junk,
}
# operators that only mean something over several steps
MULTI_STEP = frozenset({"cross-step overwrite", "wrong KV stride"})
