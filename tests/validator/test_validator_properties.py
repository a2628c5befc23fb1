"""The five properties on hand-written programs, each violation named and actionable."""

from __future__ import annotations

import copy
import dataclasses
import random
from typing import Any

import pytest

from amk_tune.errors import ProgramError
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY
from validator import validate, validate_document
from validator.reference import read_reference
from validator.verdict import (
    CO_RESIDENT,
    DEADLOCK_FREE,
    EPOCH_EXACT,
    RACE_FREE,
    REPORT_LIMIT,
    WELL_FORMED,
)
from vm.lowering import lower
from vm.program import Launch, Program, Range, Task

H100 = get_target("h100")


def task(tid: str, wait: dict[str, int] | None = None, signal: dict[str, int] | None = None,
         read: list[tuple] | None = None, write: list[tuple] | None = None,
         smem: int = 0) -> dict[str, Any]:
    """A task; ranges are (buffer, begin, end) or (buffer, begin, end, stride)."""

    def rng(r: tuple) -> dict[str, Any]:
        d = {"buffer": r[0], "begin": r[1], "end": r[2]}
        if len(r) > 3:
            d["stride"] = r[3]
        return d

    return {"id": tid, "op": "t", "smem_bytes": smem,
            "wait": [{"counter": c, "value": v} for c, v in (wait or {}).items()],
            "signal": [{"counter": c, "add": a} for c, a in (signal or {}).items()],
            "read": [rng(r) for r in read or []], "write": [rng(r) for r in write or []]}


def program(queues: list[list[dict]], counters: dict[str, int], buffers: dict[str, int],
            steps: int = 1, **launch: int) -> dict[str, Any]:
    return {"format": "amk-program", "version": 1,
            "launch": {"blocks": len(queues), "threads": 128, **launch}, "steps": steps,
            "buffers": {k: {"bytes": v} for k, v in buffers.items()},
            "counters": {k: {"per_step": v} for k, v in counters.items()}, "queues": queues}


def check(doc: dict[str, Any]):
    return validate_document(doc, H100)


def producer_consumer(steps: int = 1, sequenced: bool = False) -> dict[str, Any]:
    """Block 0 writes x and signals c; block 1 waits on c and reads x. ``sequenced``: the
    consumer signals back and the producer waits for it before the next step's write."""
    prod = task("prod", signal={"c": 1}, write=[("x", 0, 8)])
    cons = task("cons", wait={"c": 1}, read=[("x", 0, 8)])
    queues = [[prod], [cons]]
    counters = {"c": 1}
    if sequenced:
        cons["signal"] = [{"counter": "done", "add": 1}]
        queues[0].append(task("gate", wait={"done": 1}))
        counters["done"] = 1
    return program(queues, counters, {"x": 8}, steps)


# -- accepted programs ---------------------------------------------------------------------

def test_producer_consumer_is_accepted():
    verdict = check(producer_consumer())
    assert verdict.accepted, verdict.describe()
    assert verdict.to_dict() == {"verdict": "ACCEPTED", "violations": []}


def test_sequenced_steps_are_accepted():
    verdict = check(producer_consumer(steps=3, sequenced=True))
    assert verdict.accepted, verdict.describe()


def test_strided_append_per_step_is_accepted():
    # every step appends its own row, read by a consumer of the same step
    doc = program([[task("append", signal={"c": 1}, write=[("kv", 0, 8, 8)])],
                   [task("attend", wait={"c": 1}, read=[("kv", 0, 8, 8)],
                         signal={"done": 1})],
                   [task("gate", wait={"done": 1})]],
                  {"c": 1, "done": 1}, {"kv": 24}, steps=3)
    # the append of step s+1 runs ahead of step s's reader, but into another row
    assert check(doc).accepted, check(doc).describe()


# -- race_free -----------------------------------------------------------------------------

def test_running_ahead_into_the_next_step_is_a_race():
    verdict = check(producer_consumer(steps=2))
    assert verdict.failed == {RACE_FREE}
    (v,) = verdict.violations
    assert set(v.tasks) == {"prod", "cons"}
    assert "step 1" in v.message and "different steps" in v.message


def test_partial_wait_does_not_say_which_producer_finished():
    def doc(value: int) -> dict[str, Any]:
        return program([[task("a", signal={"c": 1}, write=[("x", 0, 4)])],
                        [task("b", signal={"c": 1}, write=[("x", 4, 8)])],
                        [task("use", wait={"c": value}, read=[("x", 0, 4)])]],
                       {"c": 2}, {"x": 8})

    partial = check(doc(1))
    assert partial.failed == {RACE_FREE}
    assert set(partial.violations[0].tasks) == {"a", "use"}
    assert check(doc(2)).accepted


def test_partial_wait_whose_other_producer_comes_after_is_ordered():
    # b's signal needs the consumer's own signal first: only a can satisfy the wait
    doc = program([[task("a", signal={"c": 1}, write=[("x", 0, 4)])],
                   [task("use", wait={"c": 1}, read=[("x", 0, 4)], signal={"d": 1})],
                   [task("b", wait={"d": 1}, signal={"c": 1})]],
                  {"c": 2, "d": 1}, {"x": 4})
    assert check(doc).accepted, check(doc).describe()


def test_a_wait_orders_what_every_producer_waited_for():
    # c comes from p or q, both after t: whichever fired, t has ended
    doc = program([[task("t", signal={"s": 1}, write=[("x", 0, 4)])],
                   [task("p", wait={"s": 1}, signal={"c": 1})],
                   [task("q", wait={"s": 1}, signal={"c": 1})],
                   [task("use", wait={"c": 1}, read=[("x", 0, 4)])]],
                  {"s": 1, "c": 2}, {"x": 4})
    assert check(doc).accepted, check(doc).describe()


@pytest.mark.parametrize("kind,first,second", [
    ("war", ("read", "r"), ("write", "w")),
    ("waw", ("write", "w1"), ("write", "w2")),
])
def test_unordered_conflicts_are_races(kind, first, second):
    (k1, id1), (k2, id2) = first, second
    doc = program([[task(id1, **{k1: [("buf", 0, 8)]})], [task(id2, **{k2: [("buf", 4, 12)]})]],
                  {}, {"buf": 16})
    verdict = check(doc)
    assert verdict.failed == {RACE_FREE}
    assert set(verdict.violations[0].tasks) == {id1, id2}
    assert "bytes [4, 8)" in verdict.violations[0].message


def test_disjoint_and_read_only_accesses_do_not_race():
    doc = program([[task("a", read=[("w", 0, 16)], write=[("buf", 0, 8)])],
                   [task("b", read=[("w", 0, 16)], write=[("buf", 8, 16)])]],
                  {}, {"buf": 16, "w": 16})
    assert check(doc).accepted


def test_strided_ranges_that_meet_in_a_later_step_race():
    # a writes [0, 4) then [4, 8); b writes [4, 8) in every step: they meet in step 1
    doc = program([[task("a", write=[("buf", 0, 4, 4)])], [task("b", write=[("buf", 4, 8)])]],
                  {}, {"buf": 8}, steps=2)
    verdict = check(doc)
    assert verdict.failed == {RACE_FREE}
    assert "step 1" in verdict.violations[0].message


def test_race_reports_are_capped_but_counted():
    n = REPORT_LIMIT + 5
    doc = program([[task(f"a{i}", write=[("buf", i, i + 1)]) for i in range(n)],
                   [task(f"b{i}", write=[("buf", i, i + 1)]) for i in range(n)]], {}, {"buf": n})
    verdict = check(doc)
    assert len(verdict.violations) == REPORT_LIMIT + 1
    assert "5 more" in verdict.violations[-1].message


# -- deadlock_free -------------------------------------------------------------------------

def test_cross_queue_program_order_deadlock():
    # the producer/consumer graph is acyclic (x -> y2, x2 -> y); program order closes a cycle
    doc = program([[task("y", wait={"c2": 1}), task("x", signal={"c1": 1})],
                   [task("y2", wait={"c1": 1}), task("x2", signal={"c2": 1})]],
                  {"c1": 1, "c2": 1}, {})
    verdict = check(doc)
    assert verdict.failed == {DEADLOCK_FREE}
    by_block = {v.message.split()[1]: v for v in verdict.violations}
    assert set(by_block) == {"0", "1"}
    assert by_block["0"].tasks[0] == "y" and "x2" in by_block["0"].tasks
    assert "'c2' >= 1" in by_block["0"].message and "stuck behind 'y2'" in by_block["0"].message


def test_producer_queued_behind_its_consumer_deadlocks():
    doc = program([[task("use", wait={"c": 1}), task("make", signal={"c": 1})]], {"c": 1}, {})
    verdict = check(doc)
    assert verdict.failed == {DEADLOCK_FREE}
    assert "program order can never reach it" in verdict.violations[0].message


def test_deadlock_only_in_a_later_step():
    # per_step says 2 but one signal per step: step 0's wait (>= 1) passes, step 1's (>= 3)
    # never does
    doc = program([[task("make", signal={"c": 1})], [task("use", wait={"c": 1})]],
                  {"c": 2}, {}, steps=2)
    verdict = check(doc)
    assert verdict.failed == {EPOCH_EXACT, DEADLOCK_FREE}
    dead = [v for v in verdict.violations if v.property == DEADLOCK_FREE]
    assert "(step 1)" in dead[0].message and "'c' >= 3" in dead[0].message


# -- epoch_exact ---------------------------------------------------------------------------

def test_unsignalled_counter_is_an_epoch_error():
    doc = producer_consumer()
    doc["counters"]["orphan"] = {"per_step": 1}
    verdict = check(doc)
    assert verdict.failed == {EPOCH_EXACT}
    assert "nothing signals counter 'orphan'" in verdict.violations[0].message


def test_over_signalled_counter_is_an_epoch_error():
    doc = producer_consumer()
    doc["queues"][0][0]["signal"][0]["add"] = 2
    verdict = check(doc)
    assert EPOCH_EXACT in verdict.failed
    epoch = next(v for v in verdict.violations if v.property == EPOCH_EXACT)
    assert epoch.tasks == ("prod",) and "declare per_step 2" in epoch.message


# -- co_resident ---------------------------------------------------------------------------

@pytest.mark.parametrize("launch,task_smem,words", [
    ({"blocks": 133}, 0, "do not fit on h100"),
    ({"blocks_per_sm": 33}, 0, "limit of 32 blocks per SM"),
    ({"blocks_per_sm": 3, "threads": 1024}, 0, "2048 per SM"),
    ({"blocks_per_sm": 2, "smem_bytes": 200_000}, 200_000, "bytes per SM"),
    ({"smem_bytes": 232_449}, 0, "bytes per block"),
    ({"smem_bytes": 1024}, 2048, "needs 2048 bytes of shared memory"),
])
def test_co_residency(launch, task_smem, words):
    doc = producer_consumer()
    doc["queues"][0][0]["smem_bytes"] = task_smem
    launch = dict(launch)
    blocks = launch.pop("blocks", 2)
    doc["launch"].update(launch, blocks=blocks)
    doc["queues"] += [[] for _ in range(blocks - 2)]
    verdict = check(doc)
    assert verdict.failed == {CO_RESIDENT}, verdict.describe()
    assert any(words in v.message for v in verdict.violations), verdict.describe()


def test_program_target_is_authoritative():
    doc = producer_consumer()
    doc["target"] = {**H100.program_dict(), "sms": 1, "name": "one-sm"}
    assert check(doc).failed == {CO_RESIDENT}
    assert validate_document(producer_consumer(), get_target("t4")).accepted


# -- well_formed ---------------------------------------------------------------------------

def _junk_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []

    def variant(name: str, edit) -> None:
        doc = producer_consumer(steps=2, sequenced=True)
        edit(doc)
        out.append((name, doc))

    variant("unknown counter", lambda d: d["queues"][1][0]["wait"][0].update(counter="nope"))
    variant("unknown buffer", lambda d: d["queues"][1][0]["read"][0].update(buffer="nope"))
    variant("end past the buffer", lambda d: d["queues"][0][0]["write"][0].update(end=9))
    variant("stride past the buffer at the last step",
            lambda d: d["queues"][0][0]["write"][0].update(stride=1))
    variant("empty range", lambda d: d["queues"][0][0]["write"][0].update(begin=8))
    variant("negative begin", lambda d: d["queues"][0][0]["write"][0].update(begin=-1))
    variant("negative stride", lambda d: d["queues"][0][0]["write"][0].update(stride=-8))
    variant("wait value 0", lambda d: d["queues"][1][0]["wait"][0].update(value=0))
    variant("wait value over per_step", lambda d: d["queues"][1][0]["wait"][0].update(value=2))
    variant("signal add 0", lambda d: d["queues"][0][0]["signal"][0].update(add=0))
    variant("duplicate id", lambda d: d["queues"][1][0].update(id="prod"))
    variant("too few queues", lambda d: d["queues"].pop())
    variant("threads not a multiple of 32", lambda d: d["launch"].update(threads=100))
    variant("steps 0", lambda d: d.update(steps=0))
    variant("bool as a number", lambda d: d["launch"].update(blocks=True))
    variant("float as a number", lambda d: d["queues"][0][0]["write"][0].update(end=8.0))
    variant("string smem", lambda d: d["queues"][0][0].update(smem_bytes="big"))
    variant("blocks_per_sm junk", lambda d: d["launch"].update(blocks_per_sm=[1]))
    variant("buffer size 0", lambda d: d["buffers"]["x"].update(bytes=0))
    variant("per_step 0", lambda d: d["counters"]["c"].update(per_step=0))
    variant("target junk", lambda d: d.update(target={"sms": "many"}))
    variant("missing field", lambda d: d["queues"][0][0].pop("signal"))
    variant("task not an object", lambda d: d["queues"][0].append(7))
    variant("queues not a list", lambda d: d.update(queues={"0": []}))
    variant("args not an object", lambda d: d["queues"][0][0].update(args=[]))
    return out


@pytest.mark.parametrize("name,doc", _junk_docs(), ids=[n for n, _ in _junk_docs()])
def test_malformed_programs_are_rejected_not_crashed(name, doc):
    verdict = check(doc)
    assert verdict.failed == {WELL_FORMED}, verdict.describe()
    assert set(verdict.skipped) == {CO_RESIDENT, EPOCH_EXACT, DEADLOCK_FREE, RACE_FREE}
    assert all(v.message for v in verdict.violations)


def test_well_formed_messages_name_the_task_and_the_fix():
    doc = producer_consumer(steps=2)
    doc["queues"][0][0]["write"][0]["stride"] = 4
    (v,) = check(doc).violations
    assert v.tasks == ("prod",)
    assert "up to byte 12 at step 1 (stride 4)" in v.message and "grow the buffer" in v.message


@pytest.mark.parametrize("doc", [[], "program", {"format": "amk-program", "version": 2},
                                 {"format": "other", "version": 1}])
def test_not_an_amk_program_raises(doc):
    with pytest.raises(ProgramError):
        validate_document(doc, H100)


def test_programs_built_in_code_with_junk_are_rejected():
    good = Task("t", "op", write=(Range("x", 0, 4),))
    junk = [
        Program(Launch(1, 64), 1, {"x": 4}, {}, ((Task("t", "op", write=("x",)),),)),
        Program(Launch(1, 64), 1, {"x": 4}, {}, ((Task(7, "op"),),)),  # type: ignore[arg-type]
        Program(Launch(1, 64), "1", {"x": 4}, {}, ((good,),)),  # type: ignore[arg-type]
        Program(Launch(1, 64), 1, {"x": 4}, {}, ((Task("t", "op", write=(Range(["x"], 0, 4),)),),)),
        Program(Launch(1, 64), 1, [], {}, ((good,),)),  # type: ignore[arg-type]
        Program("launch", 1, {"x": 4}, {}, ((good,),)),  # type: ignore[arg-type]
        Program(Launch(1, 64), 1, {"x": 4}, {}, (None,)),  # type: ignore[arg-type]
        "not a program",
    ]
    for p in junk:
        verdict = validate(p, H100)  # type: ignore[arg-type]
        assert verdict.failed == {WELL_FORMED}, (p, verdict.describe())
    assert validate(Program(Launch(1, 64), 1, {"x": 4}, {}, ((good,),)), H100).accepted


def _corrupt(rng: random.Random, node: Any) -> None:
    """Replace or delete one random value somewhere inside ``node``."""
    spots: list[tuple[Any, Any]] = []

    def walk(x: Any) -> None:
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
        for k, v in items:
            spots.append((x, k))
            walk(v)

    walk(node)
    parent, key = rng.choice(spots)
    if rng.random() < 0.3:
        del parent[key]
    else:
        parent[key] = rng.choice([None, True, -1, 0, 1, 3, 1.5, "x", [], {}, [1], {"a": 1},
                                  2**40])


@pytest.mark.parametrize("lowered", [False, True], ids=["hand-written", "lowered"])
def test_random_corruption_never_crashes_and_matches_the_reference(lowered):
    rng = random.Random(0)
    if lowered:  # the fields the format defines (args and extras are not the validator's)
        four_sms = dataclasses.replace(H100, name="h100-4sm", sms=4)
        full = lower(TINY, Schedule(split_kv=2), four_sms, steps=2).to_dict()
        base = {k: full[k] for k in ("format", "version", "target", "launch", "steps",
                                     "buffers", "counters")}
        base["queues"] = [[{k: v for k, v in t.items() if k != "args"} for t in q]
                          for q in full["queues"]]
    else:
        base = producer_consumer(steps=2, sequenced=True)
        base["target"] = H100.program_dict()
    rejected = 0
    for _ in range(1500):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            _corrupt(rng, doc)
        try:
            verdict = validate_document(doc, H100)
        except ProgramError:
            assert doc.get("format") != "amk-program" or doc.get("version") != 1
            continue
        # the validator and the independent reference agree on well-formedness
        assert (WELL_FORMED in verdict.failed) == (read_reference(doc) is None), doc
        rejected += not verdict.accepted
    assert rejected > 1000
