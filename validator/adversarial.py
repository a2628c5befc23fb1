"""The seeded adversarial corpus: random programs, and mutants of real lowerings.

Every case is an amk-program JSON object with a category. Its truth comes from
``oracle.ground_truth`` (the exhaustive explorer when the state space is small, exact
maximal states otherwise), never from the category: a mutation that happens to stay safe
counts as safe. ``compare`` sets the validator's verdict against that truth.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from amk_tune.targets import Target, get_target
from validator.api import validate_document
from validator.mutants import MULTI_STEP, MUTATIONS, real_lowering
from validator.oracle import ground_truth
from validator.random_programs import random_program

Doc = dict[str, Any]
REAL = "real lowering"


@dataclass(frozen=True)
class Case:
    category: str
    doc: Doc

    @property
    def real(self) -> bool:
        """An unmutated real lowering: it must be safe, and ACCEPTED."""
        return self.category == REAL


def corpus(seed: int, randoms: int, lowerings: int, mutants_per_lowering: int) -> Iterator[Case]:
    """``randoms`` random programs, then ``lowerings`` real lowerings each followed by
    mutants of it, the mutation categories taken in turn."""
    rng = random.Random(seed)
    for _ in range(randoms):
        category, doc = random_program(rng)
        yield Case(category, doc)
    names = list(MUTATIONS)
    turn = 0
    for _ in range(lowerings):
        _, base = real_lowering(rng)
        yield Case(REAL, base)
        made = 0
        for _ in range(3 * mutants_per_lowering):
            if made == mutants_per_lowering:
                break
            name = names[turn % len(names)]
            turn += 1
            doc = copy.deepcopy(base)
            if (name not in MULTI_STEP or base["steps"] > 1) and MUTATIONS[name](rng, doc):
                made += 1
                yield Case(name, doc)


@dataclass
class Tally:
    """Per category: programs, unsafe ones (by the ground truth), false accepts (unsafe but
    ACCEPTED), false rejects (safe but REJECTED), and programs where a property the truth
    says failed is missing from the verdict (must stay empty even when the verdict is
    right) or the verdict names one the truth does not (only race_free may: sound but
    not complete)."""

    programs: Counter[str] = field(default_factory=Counter)
    unsafe: Counter[str] = field(default_factory=Counter)
    false_accepts: Counter[str] = field(default_factory=Counter)
    false_rejects: Counter[str] = field(default_factory=Counter)
    missed_property: Counter[str] = field(default_factory=Counter)
    extra_property: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Case, frozenset[str], frozenset[str]]] = field(default_factory=list)

    def add(self, case: Case, truth: frozenset[str], got: frozenset[str], method: str) -> None:
        cat = case.category
        self.programs[cat] += 1
        self.methods[method] += 1
        for counts, hit in ((self.unsafe, truth), (self.false_accepts, truth and not got),
                            (self.false_rejects, got and not truth),
                            (self.missed_property, truth - got),
                            (self.extra_property, got - truth)):
            if hit:
                counts[cat] += 1
        if truth - got or (case.real and (truth or got)) or (got - truth) - {"race_free"}:
            self.failures.append((case, truth, got))

    def table(self) -> str:
        rows = ["| category | programs | unsafe | false accepts | false rejects |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for cat in sorted(self.programs):
            rows.append(f"| {cat} | {self.programs[cat]} | {self.unsafe[cat]} | "
                        f"{self.false_accepts[cat]} | {self.false_rejects[cat]} |")
        rows.append(f"| **total** | {sum(self.programs.values())} | {sum(self.unsafe.values())}"
                    f" | {sum(self.false_accepts.values())} | "
                    f"{sum(self.false_rejects.values())} |")
        return "\n".join(rows)


def compare(cases: Iterable[Case], fallback: Target,
            progress: Callable[[int], None] | None = None) -> Tally:
    """Run the validator and the ground truth on every case (``fallback``: the GPU for
    programs without a target of their own)."""
    tally = Tally()
    profile = fallback.program_dict()
    for n, case in enumerate(cases):
        truth = ground_truth(case.doc, profile)
        got = validate_document(case.doc, fallback).failed
        tally.add(case, truth.failed, got, truth.method)
        if progress is not None:
            progress(n)
    return tally


def main(argv: list[str] | None = None) -> None:
    """Print the corpus table (the one BENCHMARKS.md records, with the CI test's sizes)."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m validator.adversarial", description=main.__doc__)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--randoms", type=int, default=2000)
    p.add_argument("--lowerings", type=int, default=100)
    p.add_argument("--mutants", type=int, default=15, help="mutants per real lowering")
    args = p.parse_args(argv)
    start = time.perf_counter()
    tally = compare(corpus(args.seed, args.randoms, args.lowerings, args.mutants),
                    get_target("h100"))
    print(tally.table())
    methods = ", ".join(f"{m}: {n}" for m, n in sorted(tally.methods.items()))
    print(f"\nground truth by {methods}; {time.perf_counter() - start:.1f} s")
    if tally.failures:
        print(f"{len(tally.failures)} programs disagree beyond a counted false reject")


if __name__ == "__main__":
    main()
