"""Seeded random small programs: layered ones shaped like lowering (a token task, stages
that each write their own buffer and signal their counter, a gather task), perhaps
perturbed, and chaotic ones (random waits, signals and ranges). Small enough for the
exhaustive explorer; their truth comes from it, never from how they were made."""

from __future__ import annotations

import random
from typing import Any

Doc = dict[str, Any]

def _task(tid: str) -> Doc:
    return {"id": tid, "op": "t", "wait": [], "read": [], "write": [], "signal": []}


def _layered(rng: random.Random) -> Doc:
    """Layers of tasks; each layer writes its own buffer and signals its counter, the next
    reads it after a wait. Optionally a sequencer on block 0 orders the steps, as lowering
    does (a token task first, a gather task last)."""
    blocks = rng.choice([1, 2, 2, 3, 3, 4])
    steps = rng.choice([1, 1, 2, 2, 3])
    layers = rng.randint(1, 3)
    sequenced = rng.random() < 0.6
    doc: Doc = {"format": "amk-program", "version": 1,
                "launch": {"blocks": blocks, "threads": 128}, "steps": steps,
                "buffers": {}, "counters": {}, "queues": [[] for _ in range(blocks)]}
    placed: list[tuple[int, int, Doc]] = []  # (block, layer rank, task)
    prev: tuple[str, str, int] | None = None  # (counter, buffer, bytes)
    if sequenced:
        tok = _task("tok")
        tok["signal"].append({"counter": "tok", "add": 1})
        tok["write"].append({"buffer": "in", "begin": 0, "end": 8})
        doc["counters"]["tok"] = {"per_step": 1}
        doc["buffers"]["in"] = {"bytes": 8}
        placed.append((0, -1, tok))
        prev = ("tok", "in", 8)
    for layer in range(layers):
        width = rng.randint(1, 3)
        slice_ = rng.choice([4, 8])
        strided = rng.random() < 0.25
        name, cname = f"b{layer}", f"c{layer}"
        doc["buffers"][name] = {"bytes": width * slice_ * (steps if strided else 1)}
        total = 0
        for j in range(width):
            t = _task(f"L{layer}.{j}")
            rng_w = {"buffer": name, "begin": j * slice_, "end": (j + 1) * slice_}
            if strided:
                rng_w["stride"] = width * slice_
            t["write"].append(rng_w)
            add = rng.choice([1, 1, 1, 2])
            total += add
            t["signal"].append({"counter": cname, "add": add})
            if prev is not None:
                pc, pb, pbytes = prev
                per = doc["counters"][pc]["per_step"]
                value = per if rng.random() < 0.8 else rng.randint(1, per)
                t["wait"].append({"counter": pc, "value": value})
                lo = rng.randrange(0, pbytes)
                t["read"].append({"buffer": pb, "begin": lo, "end": rng.randint(lo + 1, pbytes)}
                                 if rng.random() < 0.4 else
                                 {"buffer": pb, "begin": 0, "end": pbytes})
            placed.append((rng.randrange(blocks), layer, t))
        doc["counters"][cname] = {"per_step": total}
        prev = (cname, name, width * slice_)
    if sequenced and prev is not None:
        gather = _task("gather")
        gather["wait"].append({"counter": prev[0], "value": doc["counters"][prev[0]]["per_step"]})
        gather["read"].append({"buffer": prev[1], "begin": 0, "end": prev[2]})
        gather["write"].append({"buffer": "in", "begin": 0, "end": 8})
        placed.append((0, layers, gather))
    for b, _rank, t in sorted(placed, key=lambda x: x[1]):
        doc["queues"][b].append(t)
    if rng.random() < 0.15:  # a queue out of dependency order
        q = rng.choice(doc["queues"])
        rng.shuffle(q)
    return doc


def _chaos(rng: random.Random) -> Doc:
    """Tasks with random waits, signals and ranges over a few counters and buffers."""
    blocks = rng.choice([1, 2, 2, 3])
    steps = rng.choice([1, 1, 2])
    buffers = {f"m{i}": rng.choice([8, 16]) for i in range(rng.randint(1, 2))}
    counters = [f"k{i}" for i in range(rng.randint(1, 3))]
    queues: list[list[Doc]] = [[] for _ in range(blocks)]
    sums = dict.fromkeys(counters, 0)
    n = 0
    for b in range(blocks):
        for _ in range(rng.randint(0, 3)):
            t = _task(f"t{n}")
            n += 1
            for c in rng.sample(counters, rng.randint(0, 1)):
                add = rng.choice([1, 1, 2])
                t["signal"].append({"counter": c, "add": add})
                sums[c] += add
            for kind in ("read", "write"):
                for _ in range(rng.randint(0, 1)):
                    name = rng.choice(list(buffers))
                    lo = rng.randrange(buffers[name])
                    t[kind].append({"buffer": name, "begin": lo,
                                    "end": rng.randint(lo + 1, buffers[name])})
            queues[b].append(t)
    live = [c for c in counters if sums[c]]
    for q in queues:
        for t in q:
            for c in rng.sample(live, min(len(live), rng.randint(0, 1))):
                t["wait"].append({"counter": c, "value": rng.randint(1, sums[c])})
    return {"format": "amk-program", "version": 1, "launch": {"blocks": blocks, "threads": 64},
            "steps": steps, "buffers": {k: {"bytes": v} for k, v in buffers.items()},
            "counters": {c: {"per_step": sums[c]} for c in live}, "queues": queues}


def _perturb(rng: random.Random, doc: Doc) -> str:
    """One small random change to a program; its name."""
    tasks = [t for q in doc["queues"] for t in q]
    waited = [t for t in tasks if t["wait"]]
    choice = rng.choice(["none", "none", "drop-wait", "lower-wait", "extra-write",
                         "epoch", "swap"])
    if choice == "drop-wait" and waited:
        t = rng.choice(waited)
        t["wait"].pop(rng.randrange(len(t["wait"])))
    elif choice == "lower-wait" and waited:
        w = rng.choice(rng.choice(waited)["wait"])
        w["value"] = max(1, w["value"] - rng.randint(1, 2))
    elif choice == "extra-write" and tasks and doc["buffers"]:
        name = rng.choice(list(doc["buffers"]))
        size = doc["buffers"][name]["bytes"]
        lo = rng.randrange(size)
        rng.choice(tasks)["write"].append({"buffer": name, "begin": lo, "end": lo + 1})
    elif choice == "epoch" and doc["counters"]:
        c = doc["counters"][rng.choice(list(doc["counters"]))]
        c["per_step"] = max(1, c["per_step"] + rng.choice([-1, 1]))
    elif choice == "swap":
        q = rng.choice(doc["queues"])
        if len(q) >= 2:
            i, j = rng.sample(range(len(q)), 2)
            q[i], q[j] = q[j], q[i]
    else:
        return "random"
    return f"random+{choice}"


def random_program(rng: random.Random) -> tuple[str, Doc]:
    """(category, program): a layered or chaotic small program, perhaps perturbed."""
    if rng.random() < 0.7:
        doc = _layered(rng)
        return _perturb(rng, doc).replace("random", "layered"), doc
    return "chaos", _chaos(rng)


def random_accumulating_program(rng: random.Random) -> tuple[str, Doc]:
    """A random program (``random_program``) whose writes each accumulate (atomic adds,
    ``Range.accumulate``) with probability one half."""
    category, doc = random_program(rng)
    for q in doc["queues"]:
        for t in q:
            for w in t["write"]:
                if rng.random() < 0.5:
                    w["accumulate"] = True
    return f"{category}+accumulate", doc
