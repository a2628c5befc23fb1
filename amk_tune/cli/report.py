"""``amk-tune report --study NAME``: the study's optimisation history as a PNG (with its
baselines and bandwidth floor) and all its trials as a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from amk_tune.cli.export import add_storage_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a study's history PNG and trials CSV")
    p.add_argument("--study", required=True, help="study name")
    add_storage_args(p, artifacts=False)
    p.add_argument("--out", type=Path, default=Path("."),
                   help="directory for STUDY_history.png and STUDY_trials.csv (default: .)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.artifacts.store import open_study
    from amk_tune.report import write_report

    report = write_report(open_study(args.study, args.storage), args.out)
    best = ("no feasible trial yet" if report.best_us is None
            else f"best {report.best_us:.1f} us/token")
    print(f"{report.title}: {report.trials} trials, {best}")
    print(f"wrote {report.png}")
    print(f"wrote {report.csv}")
    return 0
