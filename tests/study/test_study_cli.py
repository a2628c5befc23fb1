"""`amk-tune study` end to end, simulated (CI has no GPU): the progress display, the summary
table, the simulated marks everywhere, resuming, and the GPU checks."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from amk_tune.cli import main
from amk_tune.device import LiveGpu
from amk_tune.study import setup

ARGS = ["study", "--model", "smollm2-135m", "--layers", "2", "--simulate", "--prompt-len", "4",
        "--seed", "3"]


def test_simulated_study_end_to_end_and_resume(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies' / 'amk.db'}"
    assert main([*ARGS, "--trials", "4", "--storage", url]) == 0
    out, err = capsys.readouterr()
    assert "SIMULATED STUDY" in err
    progress = [line for line in err.splitlines() if " trial " in line]
    assert len(progress) == 4
    assert all(line.startswith("[study, simulated] trial") and "left" in line and "best" in line
               for line in progress)
    assert "SIMULATED (analytic cost model, no GPU: not a measurement)" in out
    for row in ("| first trial, default schedule (#0) |", "| best trial (#",
                "| bandwidth floor |", "not measured: simulated study"):
        assert row in out, row
    assert "(simulated)" in out and "best vs first:" in out

    name = "smollm2-135m-2l-h100-bf16-simulated"
    study = optuna.load_study(study_name=name, storage=url)
    assert study.user_attrs["simulated"] is True
    assert all(t.user_attrs["measurement"] == "simulated" for t in study.trials
               if t.state == TrialState.COMPLETE)
    assert study.trials[0].user_attrs["role"] == "default schedule"

    assert main([*ARGS, "--trials", "2", "--storage", url]) == 0  # resumes: appends
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 6
    assert study.trials[0].user_attrs["role"] == "default schedule"
    assert "role" not in study.trials[4].user_attrs
    assert "6 in the study (2 in this run" in capsys.readouterr().out


def test_a_study_of_another_kind_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(storage=url, study_name="mine")
    study.set_user_attr("simulated", False)
    for key, value in (("model", "smollm2-135m"), ("layers", 2), ("gpu", "h100"),
                       ("dtype", "bf16")):
        study.set_user_attr(key, value)
    assert main([*ARGS, "--trials", "1", "--storage", url, "--study", "mine"]) == 2
    err = capsys.readouterr().err
    assert "study 'mine'" in err and "simulated: stored False, this run True" in err


def test_no_gpu_refuses_unless_simulated(monkeypatch, capsys):
    monkeypatch.setattr(setup, "live_gpu", lambda: None)
    assert main(["study", "--model", "smollm2-135m", "--minutes", "1"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "pass --simulate" in err


H200 = LiveGpu("NVIDIA H200", "sm_90", 132, 141 * 2**30)


def test_gpu_name_is_checked_against_the_live_device(monkeypatch):
    monkeypatch.setattr(setup, "live_gpu", lambda: H200)
    monkeypatch.setattr(setup, "live_target_name", lambda: "h200")
    target, live = setup.resolve_gpu("auto", simulate=False)
    assert target.name == "h200" and live is H200
    with pytest.raises(Exception, match=r"--gpu 'h100' does not match the live GPU "
                                        r"'NVIDIA H200' \(profile 'h200'\): pass --gpu h200"):
        setup.resolve_gpu("h100", simulate=False)
    with pytest.raises(Exception, match="unknown GPU target 'h300'"):
        setup.resolve_gpu("h300", simulate=False)
    assert setup.resolve_gpu("l4", simulate=True)[0].name == "l4"  # a model of another GPU


def test_simulated_int8_study_searches_its_groups_on_their_own_weights(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    argv = ["study", "--model", "smollm2-135m", "--layers", "1", "--simulate", "--prompt-len",
            "3", "--seed", "1", "--dtype", "int8", "--no-prior", "--storage", url]
    assert main([*argv, "--trials", "9"]) == 0
    study = optuna.load_study(study_name="smollm2-135m-1l-h100-int8-simulated", storage=url)
    assert study.user_attrs["dtype"] == "int8" and study.user_attrs["quant_groups"] == [0, 32, 64]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert study.trials[0].params["quant_group"] == 0  # the default: one scale per channel
    assert all(t.params["dtype"] == "int8" and t.user_attrs["feasible"] for t in done)
    shas = {t.params["quant_group"]: t.user_attrs["weights_sha256"] for t in done}
    assert len(set(shas.values())) == len(shas) > 1  # each group judged on its own weights
    capsys.readouterr()
    # a fixed group is another study: the group is part of its name and identity
    assert main([*argv, "--quant-group", "32", "--trials", "1"]) == 0
    study = optuna.load_study(study_name="smollm2-135m-1l-h100-int8-g32-simulated", storage=url)
    p = study.trials[0].params
    assert (p["dtype"], p["quant_group"]) == ("int8", 32)
