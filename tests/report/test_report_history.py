"""``amk-tune report``: the history PNG with its baselines and floor, and the trials CSV."""

from __future__ import annotations

import optuna
import pandas as pd
from PIL import Image

from amk_tune.cli import main
from amk_tune.report import reference_lines, title_of, trials_frame


def make_study(url: str, *, simulated: bool) -> optuna.Study:
    """A study shaped like amk-tune's: feasible, infeasible, rejected and failed trials."""
    study = optuna.create_study(study_name="r", storage=url)
    measurement = "simulated" if simulated else "measured"

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("split_kv", 1, 4)
        trial.suggest_categorical("fuse_norm", [True, False])
        trial.set_user_attr("measurement", measurement)
        trial.set_user_attr("floor_us", 40.0)
        n = trial.number
        if n == 2:
            trial.set_user_attr("reject", [{"property": "deadlock", "message": "cycle"}])
            raise optuna.TrialPruned("rejected statically (deadlock): cycle")
        if n == 4:
            trial.set_user_attr("fail_reason", "watchdog: the kernel hung")
            raise RuntimeError("worker crashed")
        trial.set_user_attr("feasible", n != 3)
        if not simulated:
            trial.set_user_attr("baseline", "torch CUDA graph")
            trial.set_user_attr("baseline_us", 90.0)
        return [200.0, 150.0, 0.0, 60.0, 0.0, 120.0][n]

    study.optimize(objective, n_trials=6, catch=(RuntimeError,))
    return study


def test_report_writes_the_csv_and_png(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = make_study(url, simulated=True)
    study.set_user_attr("baselines", {"torch.compile + CUDA graph": {"median_us": 80.0},
                                      "torch eager": 300.0})
    assert main(["report", "--study", "r", "--storage", url, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "r: optimisation history (simulated): 6 trials, best 120.0 us/token" in out
    frame = pd.read_csv(tmp_path / "o" / "r_trials.csv")
    assert list(frame["number"]) == list(range(6))
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "FAIL",
                                    "COMPLETE"]
    assert frame["us_per_token"].tolist()[:2] == [200.0, 150.0]
    assert {"param.split_kv", "param.fuse_norm", "attr.reject", "attr.fail_reason"} <= set(
        frame.columns)
    assert "deadlock" in frame.loc[2, "attr.reject"]
    assert frame.loc[4, "attr.fail_reason"] == "watchdog: the kernel hung"
    assert not frame.loc[3, "feasible"]
    png = tmp_path / "o" / "r_history.png"
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 500
    assert reference_lines(study) == [("torch eager", 300.0),
                                      ("torch.compile + CUDA graph", 80.0),
                                      ("bandwidth floor", 40.0)]


def test_measured_study_takes_baselines_from_its_trials(tmp_path):
    study = make_study(f"sqlite:///{tmp_path / 'm.db'}", simulated=False)
    assert reference_lines(study) == [("torch CUDA graph", 90.0), ("bandwidth floor", 40.0)]
    frame = trials_frame(study)
    assert frame["attr.measurement"].eq("measured").all()
    assert title_of(study) == "r: optimisation history"


def test_report_of_an_unknown_study_names_the_ones_there(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    make_study(url, simulated=True)
    assert main(["report", "--study", "nope", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "studies there: ['r']" in err
