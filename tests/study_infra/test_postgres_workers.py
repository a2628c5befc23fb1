"""Many workers, one study: simulated ``amk-tune study`` processes started at once against a
fresh PostgreSQL database (pgserver: embedded binaries, no apt) share one study with no lost
and no duplicated trials, and their artifacts land in one shared store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from amk_tune.study.worker import FAULT_ENV

pgserver = pytest.importorskip("pgserver")
pytest.importorskip("psycopg2")

WORKERS = 2
TRIALS = 4  # per worker
STUDY = "many-workers"


@pytest.fixture
def postgres():
    """A running PostgreSQL server in a fresh temp dir (deleted after); yields its URL.

    Not under pytest's tmp_path: run as root, pgserver runs postgres as its own user, which
    must be able to reach the data directory."""
    server = pgserver.get_server(tempfile.mkdtemp(prefix="amk-pg-"), cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


def worker(url: str, seed: int, artifacts: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "amk_tune", "study", "--simulate", "--model", "smollm2-135m",
           "--layers", "1", "--gpu", "t4", "--prompt-len", "2", "--trials", str(TRIALS),
           "--minutes", "8", "--storage", url, "--study", STUDY, "--seed", str(seed),
           "--no-prior"]  # the creator's warm start would delay it past the interleave check
    # every trial, pruned ones too, lasts SLOW_S more: the runs outlast the skew of the two
    # start-ups (4 quickly pruned trials once finished before the other worker began, and
    # once before the default trial, the one sure to be feasible, had completed)
    slow = ",".join(f"slow:{n}" for n in range(WORKERS * TRIALS))
    env = {**os.environ, "AMK_ARTIFACTS": str(artifacts), "PYTHONUNBUFFERED": "1",
           FAULT_ENV: slow}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_workers_share_one_postgres_study(postgres, tmp_path):
    artifacts = tmp_path / "artifacts"
    procs = [worker(postgres, seed, artifacts) for seed in range(WORKERS)]
    outputs = [p.communicate(timeout=540) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"worker failed ({p.returncode}):\n{out}\n{err}"

    # every worker reports the trials it ran: each trial is claimed by exactly one worker
    ran = [[int(n) for n in re.findall(r"\] trial (\d+) ", err)] for _, err in outputs]
    assert [len(r) for r in ran] == [TRIALS] * WORKERS, ran
    claimed = sorted(n for r in ran for n in r)
    study = optuna.load_study(study_name=STUDY, storage=postgres)
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(WORKERS * TRIALS)) == claimed  # no lost, no duplicated trial
    assert len({t._trial_id for t in trials}) == len(trials)
    assert all(t.state.is_finished() for t in trials)
    defaults = [t.number for t in trials if t.user_attrs.get("role") == "default schedule"]
    assert len(defaults) == 1, f"the default schedule ran as trials {defaults}"
    # the workers ran at the same time: each one's trials interleave with the other's
    assert min(ran[0]) < max(ran[1]) and min(ran[1]) < max(ran[0]), ran

    done = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("feasible")]
    assert done, [t.state for t in trials]
    ids = [t.user_attrs["artifact_id"] for t in done]
    assert len(set(ids)) == len(ids)
    assert {p.name for p in artifacts.iterdir()} == set(ids)

    # any machine with the storage and the shared store can export and run the best trial
    from amk_tune.cli import main

    out = tmp_path / "best"
    assert main(["export", "--study", STUDY, "--storage", postgres, "--artifacts",
                 str(artifacts), "--out", str(out)]) == 0
    assert main(["run", str(out), "--prompt-ids", "1,2", "--max-new-tokens", "2",
                 "--device", "cpu"]) == 0
