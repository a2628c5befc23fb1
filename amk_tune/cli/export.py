"""``amk-tune export --study NAME --out DIR``: the best feasible trial's megakernel artifact,
downloaded from the Optuna artifact store, every hash checked, unpacked into DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_STORAGE = "sqlite:///studies/amk.db"


def add_storage_args(p: argparse.ArgumentParser, *, artifacts: bool = True) -> None:
    """``--storage URL`` (and ``--artifacts DIR``), as every study-reading command takes."""
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL (default: {DEFAULT_STORAGE}; PostgreSQL: "
                        "postgresql+psycopg2://USER:PASS@HOST/DB)")
    if artifacts:
        p.add_argument("--artifacts", metavar="DIR",
                       help="artifact store directory (default: $AMK_ARTIFACTS, else "
                            "artifacts/ beside a SQLite storage file)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the best trial's megakernel artifact to a directory")
    p.add_argument("--study", required=True, help="study name")
    add_storage_args(p)
    p.add_argument("--out", required=True, type=Path, help="new or empty directory to write")
    p.add_argument("--trial", type=int, help="export this trial number instead of the best")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from amk_tune.artifacts.store import artifact_dir, export_trial, open_study

    study = open_study(args.study, args.storage)
    directory = artifact_dir(args.storage, args.artifacts)
    trial, m = export_trial(study, args.out, directory, args.trial)
    kind = "measured" if m.measured else "simulated"
    verdict = m.oracle.get("message", m.oracle.get("passed", "?"))
    print(f"exported trial {trial.number} of {args.study!r} to {args.out}: "
          f"{m.latency_us:.1f} us/token ({kind}) on {m.gpu}"
          f"{f' ({m.arch})' if m.arch else ''}; oracle: {verdict}")
    print(f"content sha256 {m.content_sha256}; files: {', '.join(sorted(m.files))}")
    print(f"run it: amk-tune run {args.out} --prompt TEXT --max-new-tokens 32")
    return 0
