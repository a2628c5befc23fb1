"""The ground truth checks itself, then the validator's happens-before against it.

- The exhaustive explorer (every interleaving) and the maximal-state oracle are two
  independent exact methods: on small programs they must agree on deadlock, on every race
  and on the whole happens-before relation.
- The validator's vector clocks must never order two executions the truth leaves
  unordered (soundness, the property false accepts would come from).
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

import validator.races as races
from amk_tune.targets import get_target
from validator.adversarial import compare, corpus
from validator.explorer import explore
from validator.greedy import greedy_run
from validator.happens_before import HappensBefore
from validator.indexed import IndexedProgram
from validator.mutants import MUTATIONS, real_lowering
from validator.oracle import EXHAUSTIVE_STATES, max_states, races_of, state_bound
from validator.random_programs import random_program
from validator.reference import read_reference
from validator.well_formed import parse_document, well_formed_violations

H100 = get_target("h100")


def _random_docs(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        _, doc = random_program(rng)
        if read_reference(doc) is not None:
            yield doc


def test_explorer_and_oracle_agree_exactly():
    checked = 0
    for doc in _random_docs(11, 2000):
        p = read_reference(doc)
        if state_bound(p) > EXHAUSTIVE_STATES:
            continue
        ex, ms = explore(p), max_states(p)
        assert ex.deadlock == any(f < p.length(b) for b, f in enumerate(ms.full)), doc
        assert set(ex.races) == races_of(p, ms), doc
        runs = [(b, k) for b in range(len(p.queues)) for k in range(ms.full[b])]
        for x in runs:
            for y in runs:
                if x != y:
                    assert ex.before(x, y) == ms.before(x, y), (doc, x, y)
        checked += 1
    assert checked > 1500


def test_explorer_sees_a_race_only_some_interleavings_have():
    # b reads x after a wait on c; c comes from a (writes x) or from d (writes nothing)
    doc = {"format": "amk-program", "version": 1, "launch": {"blocks": 3, "threads": 32},
           "steps": 1, "buffers": {"x": {"bytes": 4}}, "counters": {"c": {"per_step": 2}},
           "queues": [
               [{"id": "a", "op": "t", "wait": [], "read": [],
                 "signal": [{"counter": "c", "add": 1}],
                 "write": [{"buffer": "x", "begin": 0, "end": 4}]}],
               [{"id": "d", "op": "t", "wait": [], "read": [], "write": [],
                 "signal": [{"counter": "c", "add": 1}]}],
               [{"id": "b", "op": "t", "wait": [{"counter": "c", "value": 1}],
                 "read": [{"buffer": "x", "begin": 0, "end": 4}], "write": [], "signal": []}]]}
    ex = explore(read_reference(doc))
    assert not ex.deadlock and ex.races == {((0, 0), (2, 0))}
    doc["queues"][2][0]["wait"][0]["value"] = 2
    assert not explore(read_reference(doc)).races


def _validator_vs_exact(doc) -> tuple[int, int, int]:
    """(pairs, unsound, imprecise) of the validator's happens-before against the oracle's."""
    program, _ = parse_document(doc)
    assert program is not None and not well_formed_violations(program)
    ip = IndexedProgram.of(program)
    run = greedy_run(ip)
    hb = HappensBefore(ip, run)
    ms = max_states(read_reference(doc))
    assert run.done == ms.full
    e = run.executions
    if e < 2:
        return 0, 0, 0
    x, y = np.triu_indices(e, 1)
    mine = hb.ordered(x, y)
    at = list(zip(run.block.tolist(), run.pos.tolist(), strict=True))
    exact = np.array([ms.before(at[a], at[b]) for a, b in zip(x, y, strict=True)])
    return len(x), int((mine & ~exact).sum()), int((~mine & exact).sum())


def test_validator_happens_before_is_sound_on_random_programs():
    pairs = unsound = imprecise = 0
    for doc in _random_docs(12, 4000):
        n, bad, loose = _validator_vs_exact(doc)
        pairs, unsound, imprecise = pairs + n, unsound + bad, imprecise + loose
    assert pairs > 100_000
    assert unsound == 0
    assert imprecise <= pairs // 1000  # precise in practice (0 when this was written)


def test_validator_happens_before_is_sound_on_lowering_mutants():
    rng = random.Random(13)
    checked = 0
    for _ in range(12):
        _, base = real_lowering(rng)
        docs = [base]
        for name in ("dropped wait", "lowered wait value", "reused scratch buffer",
                     "cross-step overwrite", "wrong KV stride"):
            doc = copy.deepcopy(base)
            if MUTATIONS[name](rng, doc) and read_reference(doc) is not None:
                docs.append(doc)
        for doc in docs:
            _, unsound, _ = _validator_vs_exact(doc)
            assert unsound == 0
            checked += 1
    assert checked > 40


def test_grouped_reads_check_like_single_reads(monkeypatch):
    """Force every read group through the per-block vector path: same verdicts."""
    monkeypatch.setattr(races, "VECTOR_GROUP", 1)
    tally = compare(corpus(seed=14, randoms=600, lowerings=15, mutants_per_lowering=10), H100)
    assert sum(tally.false_accepts.values()) == 0
    assert not tally.failures, tally.failures[:3]


def test_the_guess_for_full_waits_gives_the_clocks_of_the_rounds(monkeypatch):
    """Real lowerings take the short road (every wait full, guessed then verified); the
    general rounds must reach the very same clocks on them."""
    rng = random.Random(15)
    runs = []
    for _ in range(6):
        _, doc = real_lowering(rng)
        program, _ = parse_document(doc)
        ip = IndexedProgram.of(program)
        runs.append((ip, greedy_run(ip)))
    short = [HappensBefore(ip, run) for ip, run in runs]
    assert all(hb.rounds == 0 for hb in short)
    monkeypatch.setattr(HappensBefore, "_optimistic", lambda self: False)
    for (ip, run), hb in zip(runs, short, strict=True):
        rounds = HappensBefore(ip, run)
        assert rounds.rounds == 1
        assert np.array_equal(rounds.clock, hb.clock)


def test_the_rounds_alone_are_sound(monkeypatch):
    monkeypatch.setattr(HappensBefore, "_optimistic", lambda self: False)
    for doc in _random_docs(16, 800):
        assert _validator_vs_exact(doc)[1] == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_real_lowerings_are_safe_by_the_ground_truth_too(seed):
    rng = random.Random(seed)
    for _ in range(5):
        label, doc = real_lowering(rng)
        p = read_reference(doc)
        ms = max_states(p)
        assert all(f == p.length(b) for b, f in enumerate(ms.full)), label
        assert not races_of(p, ms), label
