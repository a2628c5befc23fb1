"""``amk-tune validate FILE.json [--gpu NAME] [--json]``: the static validator's verdict.

Exit codes (PROGRAM_FORMAT.md): 0 ACCEPTED, 1 REJECTED, 2 not an amk-program at all (bad
JSON, wrong ``format``/``version``; the CLI prints a one-line error).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from amk_tune.targets import get_target
from validator.api import validate_document
from validator.verdict import Verdict
from vm.program import read_program_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="prove a program well-formed, co-resident, epoch-exact, deadlock-free, race-free",
        description="Decide the five safety properties of an amk-program (PROGRAM_FORMAT.md). "
                    "Exit 0 ACCEPTED, 1 REJECTED, 2 not an amk-program.",
    )
    p.add_argument("file", metavar="FILE.json", help="the program")
    p.add_argument("--gpu", metavar="NAME",
                   help="GPU profile for a program without its own 'target' "
                        "(default: the live GPU, else h100)")
    p.add_argument("--json", action="store_true",
                   help='print {"verdict": ..., "violations": [...]} instead of text')
    p.set_defaults(func=run)


def _text(path: str, verdict: Verdict, seconds: float) -> str:
    if verdict.accepted:
        return (f"ACCEPTED {path}: well-formed, co-resident, epoch-exact, deadlock-free and "
                f"race-free ({seconds:.2f} s)")
    counts = Counter(v.property for v in verdict.violations)
    summary = ", ".join(f"{prop} x{n}" for prop, n in counts.items())
    return "\n".join([f"REJECTED {path}: {summary}", *verdict.describe().splitlines()[1:]])


def run(args: argparse.Namespace) -> int:
    doc = read_program_json(args.file)
    target = get_target(args.gpu) if args.gpu else None
    start = time.perf_counter()
    verdict = validate_document(doc, target)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps(verdict.to_dict()))
    else:
        print(_text(args.file, verdict, seconds))
    return 0 if verdict.accepted else 1
