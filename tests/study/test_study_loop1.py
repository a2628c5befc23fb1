"""Loop 1 (``amk-tune study --loop instruction``), simulated: one grid study per GEMV role in
the main study's storage, the twin check on every trial, ``loop1_best``'s weighted argmin,
and loop 2 starting from it."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from amk_tune.cli import main
from amk_tune.errors import StudyError
from amk_tune.model import loaders
from amk_tune.study import instruction_loop
from amk_tune.study.instruction_loop import GRID, ROLES, loop1_best, loop1_name
from amk_tune.study.instruction_run import run_instruction_loop
from amk_tune.study.run import StudyOptions
from space.kernel_knobs import ROWS_PER_WARP, UNROLL, KernelKnobs
from tests.conftest import TINY


@pytest.fixture
def tiny_model(monkeypatch):
    real = loaders.inspect_model
    monkeypatch.setattr(loaders, "inspect_model",
                        lambda source: TINY if source == "tiny" else real(source))


def test_simulated_loop1_on_tiny_runs_every_role_and_checks_the_twin(tmp_path, tiny_model,
                                                                     monkeypatch, capsys):
    calls = []
    real_compare = instruction_loop.compare

    def compare(inputs, got, twin):  # the real check, plus one broken candidate
        calls.append(real_compare(inputs, got, twin))
        return ["logits: broken on purpose"] if len(calls) == 4 else calls[-1]

    monkeypatch.setattr(instruction_loop, "compare", compare)
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    opts = StudyOptions(model="tiny", simulate=True, storage=url, minutes=5, iters=3)
    outcome = run_instruction_loop(opts)
    assert len(calls) == GRID * len(ROLES) and not any(calls)  # the twin wrote every float
    main_name = "tiny-h100-bf16-simulated"
    assert set(outcome.studies) == set(ROLES)
    for role in ROLES:
        study = optuna.load_study(study_name=loop1_name(main_name, role), storage=url)
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == GRID
        assert len({tuple(t.params.values()) for t in trials}) == GRID  # the whole grid
        assert all(t.user_attrs["measurement"] == "simulated" for t in trials)
        assert study.user_attrs["stages_per_step"] > 0 and study.user_attrs["simulated"] is True
    qkv = optuna.load_study(study_name=loop1_name(main_name, "qkv"), storage=url).trials
    bad = [t for t in qkv if not t.user_attrs["feasible"]]
    assert [t.number for t in bad] == [3]
    assert bad[0].user_attrs["twin_problems"] == ["logits: broken on purpose"]
    out, err = capsys.readouterr()
    assert "SIMULATED" in err and "INFEASIBLE (twin: logits: broken on purpose)" in err
    assert "| qkv | L0.qkv.0 |" in out and "loop 2 starts from:" in out
    assert outcome.best == loop1_best(url, main_name)

    again = run_instruction_loop(opts)  # resumed: every grid is done, nothing runs
    assert all(len(s.trials) == GRID for s in again.studies.values())


def add(study: optuna.Study, role: str, pair: tuple[int, int], us: float,
        feasible: bool = True) -> None:
    first, second = instruction_loop.role_knobs(role)
    study.add_trial(create_trial(
        params={first: pair[0], second: pair[1]},
        distributions={first: CategoricalDistribution(ROWS_PER_WARP),
                       second: CategoricalDistribution(UNROLL)},
        value=us, user_attrs={"feasible": feasible}))


def test_loop1_best_is_the_weighted_argmin(tmp_path):
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    assert loop1_best(url, "m") is None  # no loop-1 study
    studies = {}
    for role, per_step in (("qkv", 1), ("o", 10), ("lm", 1)):
        studies[role] = optuna.create_study(storage=url, study_name=loop1_name("m", role))
        studies[role].set_user_attr("loop1_role", role)
        studies[role].set_user_attr("stages_per_step", per_step)
    assert loop1_best(url, "m") is None  # none feasible
    add(studies["qkv"], "qkv", (1, 1), 1.0)
    add(studies["qkv"], "qkv", (2, 2), 10.0)
    add(studies["qkv"], "qkv", (4, 4), 0.1)  # o never ran it: not a candidate
    add(studies["qkv"], "qkv", (2, 4), 0.01, feasible=False)
    add(studies["o"], "o", (1, 1), 5.0)
    add(studies["o"], "o", (2, 2), 1.0)
    add(studies["o"], "o", (2, 4), 0.01)
    # unweighted (1, 1) wins (6 < 11); weighted by stages per step (2, 2) does (20 < 51)
    assert loop1_best(url, "m") == KernelKnobs(rows_per_warp=2, unroll=2)
    add(studies["lm"], "lm", (1, 1), 5.0)
    add(studies["lm"], "lm", (4, 1), 3.0)
    add(studies["lm"], "lm", (4, 4), 1.0, feasible=False)
    assert loop1_best(url, "m") == KernelKnobs(rows_per_warp=2, unroll=2, lm_rows_per_warp=4,
                                               lm_unroll=1)


def test_loop2_starts_from_loop1(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    args = ["study", "--model", "smollm2-135m", "--layers", "1", "--simulate", "--storage", url]
    assert main([*args, "--loop", "instruction", "--minutes", "5", "--iters", "3"]) == 0
    out, _ = capsys.readouterr()
    name = "smollm2-135m-1l-h100-bf16-simulated"
    best = loop1_best(url, name)
    assert best is not None and best != KernelKnobs()  # the simulation prefers loads in flight
    assert f"loop 2 starts from: rows_per_warp={best.rows_per_warp}" in out
    assert main([*args, "--trials", "2", "--no-prior", "--prompt-len", "4"]) == 0
    _, err = capsys.readouterr()
    assert "loop 1 enqueued #1" in err
    study = optuna.load_study(study_name=name, storage=url)
    second = study.trials[1]
    assert second.user_attrs["origin"] == "loop1"
    assert second.user_attrs["kernel_knobs"] == best.to_dict()
    assert second.user_attrs["schedule"] == study.trials[0].user_attrs["schedule"]


def test_bad_input_is_refused(capsys):
    with pytest.raises(StudyError, match="--trials 3"):
        run_instruction_loop(StudyOptions(model="tiny", simulate=True, trials=3))
    assert main(["study", "--loop", "instruction", "--simulate", "--iters", "0"]) == 2
    assert "--iters 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "--loop", "kernel"])
