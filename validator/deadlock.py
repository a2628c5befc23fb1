"""Property 4, deadlock-free: under every interleaving all steps of every queue complete.

The greedy run (greedy.py) decides it exactly, program order inside each block and every
step of the launch included. A stuck block is reported with the task it is stuck at, the
counter values it waits for, and where the missing signals sit.
"""

from __future__ import annotations

from validator.greedy import GreedyRun
from validator.indexed import IndexedProgram
from validator.verdict import DEADLOCK_FREE, Violation, capped


def _missing_signals(ip: IndexedProgram, run: GreedyRun, signallers: list[int],
                     stuck_at: dict[int, int], waiter_block: int) -> list[tuple[int, str]]:
    """The ``signallers`` of a counter that did not run in every step, and why."""
    out: list[tuple[int, str]] = []
    for g in signallers:
        b = ip.block[g]
        if run.done[b] > (ip.steps - 1) * ip.queue_len[b] + ip.index[g]:
            continue  # its last step ran
        blocker = stuck_at.get(b)
        if b == waiter_block:
            why = f"queued after it on block {b}: program order can never reach it"
        elif blocker is not None and blocker != g:
            why = f"on block {b}, stuck behind {ip.ids[blocker]!r}"
        else:
            why = f"on block {b}, itself stuck"
        out.append((g, why))
    return out


def deadlock_violations(ip: IndexedProgram, run: GreedyRun) -> list[Violation]:
    """One violation per stuck block: the task, its unmet waits, the missing signals."""
    stuck_at = {b: ip.first[b] + run.done[b] % ip.queue_len[b]  # block -> task
                for b in range(ip.blocks) if run.done[b] < ip.queue_len[b] * ip.steps}
    signallers: list[list[int]] = [[] for _ in ip.per_step]
    for g, sigs in enumerate(ip.signals):
        for c in dict.fromkeys(c for c, _ in sigs):
            signallers[c].append(g)
    found: list[Violation] = []
    for b, g in stuck_at.items():
        s = run.done[b] // ip.queue_len[b]
        unmet = [(c, s * ip.per_step[c] + v) for c, v in ip.waits[g]
                 if run.counters[c] < s * ip.per_step[c] + v]
        tasks = [ip.ids[g]]
        parts = []
        for c, need in unmet:
            missing = _missing_signals(ip, run, signallers[c], stuck_at, b)
            name = ip.counter_names[c]
            if missing:
                shown = "; ".join(f"{ip.ids[m]!r} ({why})" for m, why in missing[:3])
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                source = f"missing signals would come from {shown}{more}"
                tasks += [ip.ids[m] for m, _ in missing[:3] if ip.ids[m] not in tasks]
            else:
                source = "no remaining task signals it (check per_step and the wait value)"
            parts.append(f"counter {name!r} >= {need} but it can only reach {run.counters[c]}; "
                         f"{source}")
        found.append(Violation(
            DEADLOCK_FREE, tuple(tasks),
            f"block {b} is stuck at {ip.label(g, s)}: it waits for {'; and for '.join(parts)}. "
            "Move the producer ahead of its consumer in program order, or fix the wait",
        ))
    return capped(DEADLOCK_FREE, found, "stuck blocks")
