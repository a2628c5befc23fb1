"""The seeded adversarial corpus against the validator: a few thousand programs, random
ones and mutants of real lowerings, each judged by the independent ground truth.

BENCHMARKS.md records this run's table (``python -m validator.adversarial``).
"""

from __future__ import annotations

from amk_tune.targets import get_target
from validator.adversarial import REAL, compare, corpus
from validator.mutants import MUTATIONS

# the CI corpus; BENCHMARKS.md quotes its numbers
SEED, RANDOMS, LOWERINGS, MUTANTS_PER_LOWERING = 2024, 2000, 100, 15


def test_adversarial_corpus():
    tally = compare(corpus(SEED, RANDOMS, LOWERINGS, MUTANTS_PER_LOWERING), get_target("h100"))
    total = sum(tally.programs.values())
    assert total >= 3500
    # every category is there, and has unsafe programs
    assert set(MUTATIONS) | {REAL} <= set(tally.programs)
    assert all(tally.unsafe[name] for name in MUTATIONS), tally.table()
    assert sum(tally.unsafe.values()) > total // 2
    # no false accept, not even of one property of a program rejected for another
    assert sum(tally.false_accepts.values()) == 0, tally.table()
    assert not tally.missed_property, tally.failures[:3]
    # real lowerings: safe by the truth, accepted by the validator
    assert tally.programs[REAL] == LOWERINGS
    assert tally.unsafe[REAL] == 0 and tally.false_rejects[REAL] == 0
    # anything else wrong (an extra property other than race_free) is a failure
    assert not tally.failures, [(c.category, t, g) for c, t, g in tally.failures[:3]]
    # races the truth does not see are false rejects: counted (BENCHMARKS.md), kept rare
    assert sum(tally.false_rejects.values()) <= total // 200, tally.table()
