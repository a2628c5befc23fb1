"""Accumulating writes (``Range.accumulate``, atomic adds): they commute with each other,
so two of them need no order; against reads and plain writes they are writes. The
validator's phase check against the exhaustive ground truth, and by hand."""

from __future__ import annotations

import copy
import random

import pytest

from amk_tune.errors import ProgramError
from amk_tune.targets import get_target
from validator.adversarial import Case, compare
from validator.api import validate_document
from validator.random_programs import random_accumulating_program
from vm.program import Program

H100 = get_target("h100")


def _doc(second_wait: int, first: dict, second: dict, reader_wait: int = 2) -> dict:
    """Tasks a and b write x (``first``/``second``: extra range fields), each signalling c;
    r waits for c >= ``reader_wait`` and reads x. b waits for c >= ``second_wait`` (0: no
    wait)."""
    def task(tid: str, wait: list, write: list, read: list, signal: list) -> dict:
        return {"id": tid, "op": "t", "wait": wait, "read": read, "write": write,
                "signal": signal}

    x = {"buffer": "x", "begin": 0, "end": 8}
    sig = [{"counter": "c", "add": 1}]
    b_wait = [{"counter": "c", "value": second_wait}] if second_wait else []
    return {"format": "amk-program", "version": 1, "launch": {"blocks": 3, "threads": 32},
            "steps": 1, "buffers": {"x": {"bytes": 8}}, "counters": {"c": {"per_step": 2}},
            "queues": [[task("a", [], [x | first], [], sig)],
                       [task("b", b_wait, [x | second], [], sig)],
                       [task("r", [{"counter": "c", "value": reader_wait}], [], [x], [])]]}


ACC = {"accumulate": True}


def test_two_unordered_accumulates_are_safe():
    assert validate_document(_doc(0, ACC, ACC), H100).verdict == "ACCEPTED"


@pytest.mark.parametrize("first, second", [({}, ACC), (ACC, {}), ({}, {})])
def test_an_accumulate_against_a_plain_write_races(first, second):
    verdict = validate_document(_doc(0, first, second), H100)
    assert verdict.failed == {"race_free"}
    # ordered (b waits for a's signal): safe again
    assert validate_document(_doc(1, first, second), H100).verdict == "ACCEPTED"


def test_a_read_before_every_accumulate_has_landed_races():
    verdict = validate_document(_doc(0, ACC, ACC, reader_wait=1), H100)
    assert verdict.failed == {"race_free"}
    assert "reads 'x' bytes [0, 8)" in verdict.violations[0].message


def test_accumulate_round_trips_and_only_a_write_may_carry_it():
    doc = _doc(0, ACC, ACC)
    program = Program.from_dict(doc)
    assert program.queues[0][0].write[0].accumulate
    assert Program.from_dict(program.to_dict()).to_dict() == program.to_dict()
    bad = copy.deepcopy(doc)
    bad["queues"][2][0]["read"][0]["accumulate"] = True
    with pytest.raises(ProgramError, match="accumulate = true on a read"):
        Program.from_dict(bad)
    bad["queues"][2][0]["read"][0]["accumulate"] = "yes"
    with pytest.raises(ProgramError, match="wrong type"):
        Program.from_dict(bad)


def test_random_accumulating_programs_agree_with_the_ground_truth():
    rng = random.Random(21)
    cases = [Case(*random_accumulating_program(rng)) for _ in range(700)]
    assert sum(any(w.get("accumulate") for q in c.doc["queues"] for t in q for w in t["write"])
               for c in cases) > 300
    tally = compare(cases, H100)
    assert sum(tally.unsafe.values()) > 50
    assert sum(tally.false_accepts.values()) == 0
    assert not tally.failures, tally.failures[:3]
