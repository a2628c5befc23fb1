"""``validate(program, target) -> Verdict``: the five properties of PROGRAM_FORMAT.md.

A program that is not well-formed is REJECTED with its well-formedness violations only:
the other properties are not defined on it. Every other property is decided in full, at
any size: no caps, no sampling, every step of the launch.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from amk_tune.targets import Target, get_target
from validator.co_resident import Limits, co_resident_violations
from validator.deadlock import deadlock_violations
from validator.epochs import epoch_violations
from validator.greedy import greedy_run
from validator.happens_before import HappensBefore
from validator.indexed import IndexedProgram
from validator.races import race_violations
from validator.verdict import (
    CO_RESIDENT,
    DEADLOCK_FREE,
    EPOCH_EXACT,
    RACE_FREE,
    Verdict,
    Violation,
)
from validator.well_formed import parse_document, well_formed_violations
from vm.program import Program, check_header

_AFTER_WELL_FORMED = (CO_RESIDENT, EPOCH_EXACT, DEADLOCK_FREE, RACE_FREE)


def _limits(program: Program, target: Target | str | None) -> Limits:
    if program.target is not None:
        return Limits.of_program(program.target)
    if isinstance(target, Target):
        return Limits.of_target(target)
    return Limits.of_target(get_target(target or "auto"))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the checks allocate many small acyclic objects,
    and every full collection would walk the whole program (a third of a 13B run)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def validate(program: Program, target: Target | str | None = None) -> Verdict:
    """Decide all five properties of ``program``.

    ``target`` (a profile or its name) is used only when the program has no ``target`` of
    its own; None means the live GPU, else h100. Never raises on a bad program: whatever
    is wrong with it is a violation.
    """
    with _collector_paused():
        return _validate(program, target)


def _validate(program: Program, target: Target | str | None) -> Verdict:
    bad = well_formed_violations(program)
    if bad:
        return Verdict(tuple(bad), skipped=_AFTER_WELL_FORMED)
    found: list[Violation] = []
    found += co_resident_violations(program, _limits(program, target))
    found += epoch_violations(program)
    ip = IndexedProgram.of(program)
    run = greedy_run(ip)
    found += deadlock_violations(ip, run)
    found += race_violations(ip, run, HappensBefore(ip, run))
    return Verdict(tuple(found))


def validate_document(doc: Any, target: Target | str | None = None) -> Verdict:
    """Validate decoded JSON. Raises ProgramError only when ``doc`` is not an amk-program
    at all (not an object, wrong ``format`` or ``version``); a malformed amk-program is a
    REJECTED verdict."""
    check_header(doc)
    program, bad = parse_document(doc)
    if program is None:
        return Verdict(tuple(bad), skipped=_AFTER_WELL_FORMED)
    return validate(program, target)
