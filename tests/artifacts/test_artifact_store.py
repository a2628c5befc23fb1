"""Storing trial bundles in the Optuna artifact store and exporting the best one."""

from __future__ import annotations

import json

import optuna
import pytest

from amk_tune.artifacts import export_trial, store_trial_bundle
from amk_tune.artifacts.bundle import make_files, pack, read_files, verify
from amk_tune.artifacts.manifest import FORMAT, VERSION
from amk_tune.artifacts.store import artifact_dir
from amk_tune.cli import main
from amk_tune.errors import ArtifactError
from space.schedule import Schedule

CUBIN = b"\x7fELF" + bytes(60)  # an ELF header: never loaded on the CPU path


def test_every_trial_gets_an_artifact_and_export_picks_the_best(make_study, tmp_path, capsys):
    url = make_study()
    study = optuna.load_study(study_name="s", storage=url)
    ids = [t.user_attrs["artifact_id"] for t in study.trials]
    assert len(set(ids)) == 3
    for t in study.trials:  # Optuna's own record of the upload: the dashboard lists it
        assert f"artifacts:{t.user_attrs['artifact_id']}" in t.system_attrs
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(ids)

    out = tmp_path / "best"
    assert main(["export", "--study", "s", "--storage", url, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exported trial 1 of 's'" in text and "120.0 us/token (simulated)" in text
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "program.json",
                                                     "schedule.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    assert manifest["trial"] == 1 and manifest["schedule"]["split_kv"] == 2
    assert manifest["measured"] is False and manifest["arch"] is None
    assert manifest["content_sha256"] == study.trials[1].user_attrs["artifact_sha256"]
    for key in ("model", "gpu", "versions", "oracle", "latency_us", "kernel_knobs", "files"):
        assert key in manifest
    assert set(manifest["model"]) == {"source", "spec", "weights_sha256", "seed"}


def test_export_a_chosen_trial_with_its_binary(make_study, tmp_path):
    url = make_study(binary=CUBIN, arch="sm_90")
    study = optuna.load_study(study_name="s", storage=url)
    trial, manifest = export_trial(study, tmp_path / "t2", tmp_path / "artifacts", 2)
    assert trial.number == 2 and manifest.arch == "sm_90" and manifest.binary == "kernel.cubin"
    assert (tmp_path / "t2" / "kernel.cubin").read_bytes() == CUBIN
    assert (tmp_path / "t2" / "kernel.cu").is_file()


def test_packing_is_reproducible_and_round_trips(make_bundle, tmp_path):
    _, files = make_files("s", 0, make_bundle(Schedule()))
    data = pack(files)
    assert data == pack(dict(reversed(files.items())))
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    back = read_files(path)
    assert back == files
    assert verify(back, "a").content_sha256 == json.loads(files["manifest.json"])[
        "content_sha256"]


def test_infeasible_trials_are_never_exported(make_bundle, tmp_path):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(study_name="f", storage=url)

    def objective(trial):
        latency = 50.0 if trial.number == 0 else 80.0
        if trial.number == 0:
            trial.set_user_attr("feasible", False)  # e.g. the oracle failed
        store_trial_bundle(study, trial, make_bundle(Schedule(), latency_us=latency))
        return latency

    study.optimize(objective, n_trials=2)
    trial, _ = export_trial(study, tmp_path / "out", tmp_path / "artifacts")
    assert trial.number == 1


def test_a_finished_trial_is_refused_with_the_fix(make_bundle, tmp_path):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(study_name="x", storage=url)
    study.optimize(lambda t: 1.0, n_trials=1)
    with pytest.raises(ArtifactError, match="already COMPLETE: store its bundle from inside"):
        store_trial_bundle(study, study.trials[0], make_bundle(Schedule()))


def test_a_running_frozen_trial_is_accepted(make_bundle, tmp_path):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(study_name="r", storage=url)
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    artifact_id = store_trial_bundle(study, frozen, make_bundle(Schedule()))
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs["artifact_id"] == artifact_id


def test_artifact_store_location(tmp_path, monkeypatch):
    monkeypatch.delenv("AMK_ARTIFACTS", raising=False)
    assert str(artifact_dir("sqlite:///studies/amk.db")) == "studies/artifacts"
    assert artifact_dir(f"sqlite:///{tmp_path}/x.db") == tmp_path / "artifacts"
    assert artifact_dir("postgresql://h/db", tmp_path) == tmp_path
    with pytest.raises(ArtifactError, match="pass --artifacts DIR"):
        artifact_dir("postgresql://h/db")
    monkeypatch.setenv("AMK_ARTIFACTS", str(tmp_path / "shared"))
    assert artifact_dir("postgresql://h/db") == tmp_path / "shared"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latency_us": float("nan")}, "latency_us = nan"),
        ({"binary": CUBIN}, "no 'arch' or no 'cuda_source'"),
        ({"gpu": None}, "field 'gpu' = None is missing"),
        ({"binary": b"garbage", "arch": "sm_90", "cuda_source": "x"}, "neither a cubin"),
        ({"schedule": {"split_kv": 3}}, "schedule differs from the program's"),
    ],
)
def test_bad_bundles_are_refused(make_bundle, change, message):
    bundle = make_bundle(Schedule()) | change
    with pytest.raises(ArtifactError, match=message):
        make_files("s", 0, bundle)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "nope"], "no study 'nope'"),
        (["--study", "s", "--trial", "9"], "has no trial 9"),
    ],
)
def test_export_errors(make_study, tmp_path, capsys, argv, message):
    url = make_study(latencies=(5.0,))
    assert main(["export", *argv, "--storage", url, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_export_refuses_a_missing_storage_and_a_full_directory(make_study, tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["export", "--study", "s", "--storage", missing, "--out", "o"]) == 2
    assert "does not exist; run `amk-tune study` first" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    url = make_study(latencies=(5.0,))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["export", "--study", "s", "--storage", url, "--out",
                 str(tmp_path / "full")]) == 2
    assert "is not an empty directory" in capsys.readouterr().err
