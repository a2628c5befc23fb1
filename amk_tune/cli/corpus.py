"""``amk-tune corpus add``: append a study's finished trials to the prior's corpus
(``studies/corpus.csv``; prior/corpus.py says what a row holds)."""

from __future__ import annotations

import argparse

from amk_tune.study.setup import DEFAULT_STORAGE


def register(sub: argparse._SubParsersAction) -> None:
    from prior.corpus import CORPUS_PATH

    p = sub.add_parser("corpus", help="manage the corpus of measured trials the prior learns from")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="append a study's trials (deduplicated)")
    add.add_argument("--study", required=True, help="the study's name in --storage")
    add.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    add.add_argument("--corpus", default=str(CORPUS_PATH),
                     help="corpus CSV to append to (default: the committed studies/corpus.csv)")
    add.add_argument("--as", dest="label", metavar="NAME",
                     help="the name its rows take in the corpus (default: the study's); needed "
                          "when the corpus holds another study of the same name")
    add.add_argument("--allow-simulated", action="store_true",
                     help="add a simulated study too (its rows say simulated; they never "
                          "train the prior)")
    add.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prior.corpus import add_study

    r = add_study(args.storage, args.study, args.corpus, allow_simulated=args.allow_simulated,
                  label=args.label)
    kind = "SIMULATED" if r.simulated else "measured"
    named = f" as {args.label!r}" if args.label else ""
    print(f"corpus {r.path}: added {r.added} {kind} trial(s) of {args.study!r}{named}; "
          f"{r.skipped} already there")
    return 0
