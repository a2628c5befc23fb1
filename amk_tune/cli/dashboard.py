"""``amk-tune dashboard [--storage URL] [--port P]``: optuna-dashboard on a study storage and
its artifact store (every trial's megakernel downloadable), bound to localhost unless told."""

from __future__ import annotations

import argparse
import sys

from amk_tune.cli.export import add_storage_args
from amk_tune.errors import AmkError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the study storage")
    add_storage_args(p)
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "exposes the dashboard, which can edit studies, to the network)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise AmkError("the dashboard needs optuna-dashboard: pip install "
                       "'amk-tune[dashboard]'") from None
    import optuna

    from amk_tune.artifacts.store import artifact_dir, artifact_store, open_storage

    storage = open_storage(args.storage)
    directory = artifact_dir(args.storage, args.artifacts)
    print(f"optuna-dashboard on {args.storage} (artifacts: {directory}) at "
          f"http://{args.host}:{args.port}/dashboard  (Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        run_server(storage, host=args.host, port=args.port,
                   artifact_store=artifact_store(directory))
    except OSError as e:
        raise AmkError(f"cannot serve on {args.host}:{args.port} ({e.strerror}); choose "
                       "another --port") from None
    return 0
