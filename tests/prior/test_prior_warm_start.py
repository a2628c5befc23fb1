"""Warm start: only validator-ACCEPTED candidates are enqueued, after the default."""

from __future__ import annotations

import optuna

from amk_tune.cli import main
from amk_tune.model.presets import PRESETS, with_layers
from amk_tune.targets import get_target
from prior import warm_start as ws
from prior.corpus import CORPUS_PATH, candidate_of_row, knob_fields, read_corpus
from prior.model import fit_prior, training_rows
from space.search_space import candidate_of, default_params, in_space, params_of
from space.weight_format import WeightChoices
from validator.verdict import Verdict, Violation

SPEC = with_layers(PRESETS["smollm2-135m"], 1)
TARGET = get_target("h100")


def rejecting(threads: int):
    """A validator that rejects every program launched with ``threads`` threads."""
    def validate(program, target):
        if program.launch.threads == threads:
            return Verdict((Violation("co_resident", (), "test rejects it"),))
        return Verdict()
    return validate


def picks_with(monkeypatch, validate, max_checks=64):
    monkeypatch.setattr(ws, "validate", validate)
    study = optuna.create_study()
    prior = fit_prior(read_corpus(CORPUS_PATH))
    return study, ws.pick(study, prior, SPEC, TARGET, "bf16", prompt_len=3, k=4,
                          candidates=128, max_checks=max_checks)


def test_only_accepted_candidates_are_enqueued(monkeypatch):
    study, unfiltered = picks_with(monkeypatch, rejecting(threads=-1))
    assert len(unfiltered) == 4 and len(study.trials) == 4
    favourite = unfiltered[0].params["threads"]
    study, picks = picks_with(monkeypatch, rejecting(threads=favourite))
    assert 0 < len(picks) <= 4
    assert all(p.params["threads"] != favourite for p in picks)
    assert [ws.queued_params(t) for t in study.trials] == [p.params for p in picks]
    assert all(t.user_attrs["role"] == ws.ROLE for t in study.trials)


def test_the_queued_default_is_not_picked_again(monkeypatch):
    monkeypatch.setattr(ws, "sample_candidates", lambda target, n, seed, weights: [
        (default_params(), candidate_of(default_params(), target))])
    study = optuna.create_study()
    study.enqueue_trial(default_params())
    prior = fit_prior(read_corpus(CORPUS_PATH))
    assert ws.pick(study, prior, SPEC, TARGET, "bf16", prompt_len=3) == ()


def test_a_validator_that_rejects_all_enqueues_nothing(monkeypatch):
    study, picks = picks_with(monkeypatch, lambda program, target: Verdict(
        (Violation("co_resident", (), "no"),)), max_checks=6)
    assert picks == () and study.trials == []


def test_study_enqueues_the_prior_picks_after_the_default(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    assert main(["study", "--model", "smollm2-135m", "--layers", "1", "--simulate",
                 "--prompt-len", "3", "--trials", "3", "--storage", url]) == 0
    err = capsys.readouterr().err
    assert "prior enqueued #1:" in err and "prior enqueued #2:" in err
    study = optuna.load_study(study_name="smollm2-135m-1l-h100-bf16-simulated", storage=url)
    roles = [t.user_attrs.get("role") for t in study.trials]
    assert roles == ["default schedule", ws.ROLE, ws.ROLE]


def test_candidates_whose_knobs_do_not_fit_the_kernel_are_not_enqueued(monkeypatch):
    # k_split 8 does not divide a 128-thread block's 4 warps (the objective would prune it
    # with property kernel_knobs, so the warm start must not spend a pick)
    misfit = {**default_params(), "threads": 128, "k_split": 8}
    fits = {**default_params(), "lm_rows_per_warp": 2}
    monkeypatch.setattr(ws, "sample_candidates", lambda target, n, seed, weights: [
        (p, candidate_of(p, target)) for p in (misfit, fits)])
    study = optuna.create_study()
    picks = ws.pick(study, fit_prior(read_corpus(CORPUS_PATH)), SPEC, TARGET, "bf16",
                    prompt_len=3)
    assert [p.params for p in picks] == [fits]


def test_remembered_configurations_are_the_best_measured_ones_of_the_space():
    rows = read_corpus(CORPUS_PATH)
    best = training_rows(rows).sort_values("y", ascending=False)
    got = ws.remembered(rows, get_target("h200"), WeightChoices(("bf16",), (0,)), 3)
    assert len(got) == 3
    assert got[0][0] == params_of(candidate_of_row(best.iloc[0]))
    assert all(in_space(p, get_target("h200")) for p, _ in got)
    # nothing for a study of another weight format, nothing asked for
    assert ws.remembered(rows, TARGET, WeightChoices(("int8",), (0,)), 3) == []
    assert ws.remembered(rows, TARGET, WeightChoices(("bf16",), (0,)), 0) == []


def test_the_pool_ranks_remembered_configurations_with_the_random_ones(monkeypatch):
    rows = read_corpus(CORPUS_PATH)
    monkeypatch.setattr(ws, "sample_candidates", lambda target, n, seed, weights: [])
    study = optuna.create_study()
    picks = ws.pick(study, fit_prior(rows), SPEC, get_target("h200"), "bf16", prompt_len=3,
                    known=rows, remember=8)
    remembered = [p for p, _ in ws.remembered(rows, get_target("h200"),
                                              WeightChoices(("bf16",), (0,)), 8)]
    assert picks and all(p.params in remembered for p in picks)


def test_a_corpus_row_gives_back_its_candidate():
    for _, row in read_corpus(CORPUS_PATH).iterrows():
        fields = knob_fields(candidate_of_row(row))
        assert all(fields[k] == row[k] or (fields[k] is None and row[k] != row[k])
                   for k in fields), row["trial"]


def test_in_space_refuses_values_the_target_cannot_take():
    assert in_space(default_params(), TARGET)
    assert not in_space({**default_params(), "tiles_mode": "custom", "tiles": 10_000}, TARGET)
    assert not in_space({**default_params(), "threads": 96}, TARGET)
