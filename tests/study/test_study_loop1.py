"""Loop 1 (``amk-tune study --loop instruction``), simulated: one grid study per GEMV role in
the main study's storage, the twin check on every trial, each role's ring dimension where
its tile takes the ring, ``loop1_best``'s weighted argmin, and loop 2 starting from it."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from amk_tune.cli import main
from amk_tune.errors import StudyError
from amk_tune.model import loaders
from amk_tune.model.presets import preset_spec
from amk_tune.study import instruction_loop
from amk_tune.study.instruction_loop import (
    LAYER_ROLES,
    RINGS,
    ROLES,
    loop1_best,
    loop1_name,
    role_tasks,
)
from amk_tune.study.instruction_run import run_instruction_loop
from amk_tune.study.run import StudyOptions
from amk_tune.targets import get_target
from space.kernel_knobs import ROWS_PER_WARP, UNROLL, KernelKnobs
from tests.conftest import TINY
from vm.build import config_for, takes_ring

PLAIN = len(ROWS_PER_WARP) * len(UNROLL)  # a role's grid without a ring dimension
RINGED = PLAIN * len(RINGS)


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
    # TINY's layer tiles fit their slot: no layer ring; the LM head takes its ring
    grids = {**{role: PLAIN for role in LAYER_ROLES}, "lm": RINGED}
    # each grid point once, and the enqueued default first (measured twice)
    assert len(calls) == sum(grids.values()) + len(ROLES) and not any(calls)
    main_name = "tiny-h100-bf16-simulated"
    assert set(outcome.studies) == set(ROLES)
    for role in ROLES:
        study = optuna.load_study(study_name=loop1_name(main_name, role), storage=url)
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == grids[role] + 1
        assert len({tuple(t.params.values()) for t in trials}) == grids[role]  # the whole grid
        assert trials[0].params == {k: getattr(KernelKnobs(), k) for k in trials[1].params}
        assert all(len(t.params) == (3 if role == "lm" else 2) for t in trials)
        assert all(t.user_attrs["measurement"] == "simulated" for t in trials)
        assert study.user_attrs["stages_per_step"] > 0 and study.user_attrs["simulated"] is True
    qkv = optuna.load_study(study_name=loop1_name(main_name, "qkv"), storage=url).trials
    bad = [t for t in qkv if not t.user_attrs["feasible"]]
    assert [t.number for t in bad] == [3]
    assert bad[0].user_attrs["twin_problems"] == ["logits: broken on purpose"]
    out, err = capsys.readouterr()
    assert "SIMULATED" in err and "INFEASIBLE (twin: logits: broken on purpose)" in err
    assert "| qkv | L0.qkv.0 |" in out and "loop 2 starts from:" in out
    assert "lm_ring [0, 4]: 18 of 18 left" in err
    assert outcome.best == loop1_best(url, main_name)

    again = run_instruction_loop(opts)  # resumed: every grid is done, nothing runs
    assert {r: len(s.trials) - 1 for r, s in again.studies.items()} == grids


def test_a_tile_that_outgrows_its_slot_tunes_the_ring(tmp_path, capsys):
    """Llama-3.2-1B's gate/up tile (124 row pairs of 4096 B) outgrows the 64 KiB slot: its
    grid has the ring; a ring trial runs it with row pairs and prefill, fitted to the slot."""
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    opts = StudyOptions(model="llama-3.2-1b", layers=1, simulate=True, storage=url, minutes=5,
                        iters=3)
    outcome = run_instruction_loop(opts, roles=("gu",))
    trials = outcome.studies["gu"].get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == RINGED + 1 and {t.params["ring"] for t in trials} == set(RINGS)
    knobs = {tuple(t.params.values()): t.user_attrs["kernel_knobs"] for t in trials}
    value = {tuple(t.params.values()): t.value for t in trials}
    assert knobs[(1, 1, 4)] == KernelKnobs(ring=4, ring_pairs=True,
                                           ring_prefill=True).to_dict()
    assert knobs[(2, 2, 0)] == KernelKnobs(rows_per_warp=2, unroll=2).to_dict()
    fitted = [t for t in trials if t.params["rows_per_warp"] == 4 and t.params["ring"] == 4]
    # 8 warps x 4 stages x 2 rows x 4 pairs x 512 B is twice the slot: 2 stages run
    assert {t.user_attrs["kernel_knobs"]["ring"] for t in fitted} == {2}
    assert all(t.user_attrs["knobs_fitted"] == {"ring": [4, 2]} for t in fitted)
    # simulated: the ring keeps more loads in flight than one row's registers
    assert value[(1, 1, 4)] < value[(1, 1, 0)]
    rt = role_tasks(preset_spec("llama-3.2-1b", 1), get_target("h100"))["gu"]
    share = get_target("h100").measured_gbps * 1e3 / get_target("h100").sms
    floor = instruction_loop.weight_bytes(rt.program) / share
    assert min(value.values()) >= floor  # never under the bandwidth floor
    out = capsys.readouterr().out
    assert "| gu | L0.gu.0 | rows_per_warp=" in out and ", ring=" in out


def test_which_roles_take_a_ring():
    """The layer ring only where a tile's rows outgrow the slot (two-segment tiles with
    ring_pairs); the LM head's ring wherever it fits."""
    h100 = get_target("h100")
    smol = role_tasks(preset_spec("smollm2-135m", 1), h100)
    for role in LAYER_ROLES:  # 8 to 24 rows of at most 3072 B: every tile fits 64 KiB
        assert list(smol[role].grid) == ["rows_per_warp", "unroll"]
    assert smol["lm"].grid == {"lm_rows_per_warp": [1, 2, 4], "lm_unroll": [1, 2, 4],
                               "lm_ring": [0, 4]}
    llama = role_tasks(preset_spec("llama-3.2-1b", 1), h100)
    # O: 15 rows x 4096 B = 60 KiB fits; QKV (2 x 16 rows) and down (15 x 16384 B) do not
    assert {r: "ring" in llama[r].grid for r in LAYER_ROLES} == {
        "qkv": True, "o": False, "gu": True, "down": True}
    assert llama["qkv"].grid["ring"] == [0, 4] and llama["lm"].grid["lm_ring"] == [0, 4]
    assert llama["lm"].grid_size == RINGED
    qkv = llama["qkv"]
    (task,) = qkv.program.queues[0]
    assert takes_ring(task, config_for(qkv.stage, qkv.spec, KernelKnobs(ring=4, ring_pairs=True)))
    assert not takes_ring(task, config_for(qkv.stage, qkv.spec, KernelKnobs(ring=4)))


def add(study: optuna.Study, role: str, config: tuple[int, ...], us: float,
        feasible: bool = True) -> None:
    """A finished trial of ``config``: (rows per warp, unroll) of a grid without a ring,
    (rows per warp, unroll, ring) of one with it."""
    names = instruction_loop.role_knobs(role)[:len(config)]
    values = (ROWS_PER_WARP, UNROLL, RINGS)[:len(config)]
    study.add_trial(create_trial(
        params=dict(zip(names, config, strict=True)),
        distributions={k: CategoricalDistribution(v) for k, v in zip(names, values, strict=True)},
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
    add(studies["lm"], "lm", (1, 1, 0), 5.0)
    add(studies["lm"], "lm", (4, 1, 4), 3.0)
    add(studies["lm"], "lm", (4, 1, 0), 4.0)
    add(studies["lm"], "lm", (4, 4, 4), 1.0, feasible=False)
    # the LM ring alone: prefilled, no layer ring and no ring pairs
    assert loop1_best(url, "m") == KernelKnobs(rows_per_warp=2, unroll=2, lm_rows_per_warp=4,
                                               lm_unroll=1, lm_ring=4, ring_prefill=True)


def test_loop1_best_counts_a_ringless_role_at_every_ring_depth(tmp_path):
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    studies = {}
    for role, per_step in (("qkv", 1), ("o", 10)):
        studies[role] = optuna.create_study(storage=url, study_name=loop1_name("m", role))
        studies[role].set_user_attr("loop1_role", role)
        studies[role].set_user_attr("stages_per_step", per_step)
    add(studies["qkv"], "qkv", (1, 1, 0), 5.0)  # qkv's tile takes the ring
    add(studies["qkv"], "qkv", (1, 1, 4), 1.0)
    add(studies["qkv"], "qkv", (2, 2, 0), 2.0)
    add(studies["qkv"], "qkv", (2, 2, 4), 3.0)
    add(studies["o"], "o", (1, 1), 1.0)  # o's does not: its grid has no ring
    add(studies["o"], "o", (2, 2), 1.5)
    # (1, 1, 4): 1 + 10 x 1 = 11 beats (1, 1, 0): 15, (2, 2, 0): 17 and (2, 2, 4): 18
    assert loop1_best(url, "m") == KernelKnobs(rows_per_warp=1, unroll=1, ring=4,
                                               ring_pairs=True, ring_prefill=True)


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
