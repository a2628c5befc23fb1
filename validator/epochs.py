"""Property 3, epoch-exact: per counter, the signals of one step add up to exactly
``per_step``, so that step ``s`` of a wait (``s * per_step + value``) means what it says."""

from __future__ import annotations

from collections import defaultdict

from validator.verdict import EPOCH_EXACT, Violation, capped
from vm.program import Program


def epoch_violations(program: Program) -> list[Violation]:
    """Every counter of a well-formed ``program`` whose one-step signal total is not its
    ``per_step``."""
    total: dict[str, int] = defaultdict(int)
    signallers: dict[str, dict[str, None]] = defaultdict(dict)
    for queue in program.queues:
        for task in queue:
            for s in task.signal:
                total[s.counter] += s.add
                signallers[s.counter][task.id] = None
    found: list[Violation] = []
    for name, per_step in program.counters.items():
        got = total.get(name, 0)
        if got == per_step:
            continue
        who = list(signallers.get(name, ()))
        if got == 0:
            message = (f"nothing signals counter {name!r} (per_step {per_step}): remove it, "
                       "or add the signals its waits expect")
        elif got > per_step:
            message = (f"counter {name!r} gets {got} per step from {len(who)} task(s) but "
                       f"declares per_step {per_step}, so later steps' waits pass an epoch "
                       f"early: remove the extra signals or declare per_step {got}")
        else:
            message = (f"counter {name!r} gets {got} per step from {len(who)} task(s) but "
                       f"declares per_step {per_step}, so waits drift an epoch behind: add "
                       f"the missing signals or declare per_step {got}")
        found.append(Violation(EPOCH_EXACT, tuple(who[:8]), message))
    return capped(EPOCH_EXACT, found, "counters off their per_step")
