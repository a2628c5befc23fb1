"""``amk-tune prior``: what the prior is trained on and, with ``--report``, its
cross-validated error and ranking quality (prior/model.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from prior.corpus import CORPUS_PATH

    p = sub.add_parser("prior", help="the learned prior: training data and CV report")
    p.add_argument("--corpus", default=str(CORPUS_PATH),
                   help="corpus CSV (default: the committed studies/corpus.csv)")
    p.add_argument("--storage", help="also train on the studies of this Optuna storage URL")
    p.add_argument("--report", action="store_true",
                   help="cross-validate and print the error and ranking numbers")
    p.add_argument("--folds", type=int, default=5, help="CV folds (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.errors import StudyError
    from prior.model import cross_validate, training_rows
    from prior.warm_start import training_data

    rows = training_data(args.storage, args.corpus)
    train = training_rows(rows)
    feasible = int((train["y"] > 0).sum())
    print(f"prior data: {len(rows)} corpus/storage rows, {len(train)} measured "
          f"({feasible} feasible), studies: {sorted(set(train['study']))}")
    if args.report:
        try:
            report = cross_validate(rows, folds=args.folds)
        except ValueError as e:
            raise StudyError(str(e)) from None
        print("\n".join(report.lines()))
    return 0
