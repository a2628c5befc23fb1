"""``amk-tune dashboard``: optuna-dashboard really serves a study and its artifacts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from amk_tune.cli import main

pytest.importorskip("optuna_dashboard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def external_address() -> str | None:
    """A non-loopback address of this host, if it has one."""
    try:
        addr = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_dashboard_serves_the_study_and_its_artifacts(tmp_path):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir()
    study = optuna.create_study(study_name="dash", storage=url)
    (tmp_path / "kernel.txt").write_text("megakernel bytes")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("artifact_id", upload_artifact(
            artifact_store=store, file_path=str(tmp_path / "kernel.txt"), study_or_trial=trial))
        return x

    study.optimize(objective, n_trials=3)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "amk_tune", "dashboard", "--storage", url, "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not come up: "
                                         f"{proc.stdout.read() if proc.stdout else ''}") from None
                time.sleep(0.3)
        (summary,) = studies
        assert summary["study_name"] == "dash"
        detail = json.loads(get(f"{base}/api/studies/{summary['study_id']}"))
        trials = detail["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2]
        first = trials[0]
        artifact_id = study.trials[0].user_attrs["artifact_id"]
        assert [a["artifact_id"] for a in first["artifacts"]] == [artifact_id]
        served = get(f"{base}/artifacts/{summary['study_id']}/{first['trial_id']}/{artifact_id}")
        assert served == b"megakernel bytes"
        outside = external_address()
        if outside:  # bound to localhost only: another interface of this host is refused
            with pytest.raises(OSError):
                get(f"http://{outside}:{port}/api/studies")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_needs_a_store_it_can_find(tmp_path, capsys):
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "does not exist; run `amk-tune study` first" in capsys.readouterr().err


def test_dashboard_reports_a_busy_port(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    optuna.create_study(study_name="d", storage=url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "--storage", url, "--port", str(port)]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err
    assert Path(tmp_path / "artifacts").is_dir()
