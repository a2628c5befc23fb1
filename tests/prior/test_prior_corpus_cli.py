"""`amk-tune corpus add`: round trip, dedupe, simulated refused unless asked; `amk-tune
prior --report`; `amk-tune study --no-prior` enqueues only the default."""

from __future__ import annotations

import optuna
import pandas as pd

from amk_tune.cli import main
from prior.corpus import COLUMNS, read_corpus

STUDY = ["study", "--model", "smollm2-135m", "--layers", "1", "--simulate", "--prompt-len", "3",
         "--trials", "2"]
NAME = "smollm2-135m-1l-h100-bf16-simulated"


def test_no_prior_enqueues_only_the_default_and_corpus_round_trip(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    assert main([*STUDY, "--storage", url, "--no-prior"]) == 0
    assert "prior enqueued" not in capsys.readouterr().err
    study = optuna.load_study(study_name=NAME, storage=url)
    roles = [t.user_attrs.get("role") for t in study.trials]
    assert roles == ["default schedule", None]

    corpus = tmp_path / "corpus.csv"
    args = ["corpus", "add", "--study", NAME, "--storage", url, "--corpus", str(corpus)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"study {NAME!r} is simulated" in err and "--allow-simulated" in err
    assert not corpus.exists()

    assert main([*args, "--allow-simulated"]) == 0
    assert "added 2 SIMULATED trial(s)" in capsys.readouterr().out
    assert main([*args, "--allow-simulated"]) == 0
    assert "added 0 SIMULATED trial(s)" in capsys.readouterr().out
    df = read_corpus(corpus)
    assert list(df.columns) == list(COLUMNS) and len(df) == 2
    assert set(df["measurement"]) == {"simulated"} and list(df["trial"]) == [0, 1]
    first = df.iloc[0]
    assert first["state"] == "complete" and first["us_per_token"] >= first["floor_us"] > 0
    assert first["threads"] == 256 and pd.isna(first["tiles"]) and first["gpu"] == "h100"


def test_another_study_of_the_same_name_needs_a_name_of_its_own(tmp_path, capsys):
    corpus = tmp_path / "corpus.csv"
    for run, seed in (("a", "0"), ("b", "1")):
        url = f"sqlite:///{tmp_path / f'{run}.db'}"
        assert main([*STUDY, "--storage", url, "--no-prior", "--seed", seed]) == 0
    add = ["corpus", "add", "--study", NAME, "--corpus", str(corpus), "--allow-simulated"]
    assert main([*add, "--storage", f"sqlite:///{tmp_path / 'a.db'}"]) == 0
    capsys.readouterr()
    assert main([*add, "--storage", f"sqlite:///{tmp_path / 'b.db'}"]) == 2
    err = capsys.readouterr().err
    assert "with other results" in err and "--as NAME" in err
    assert len(read_corpus(corpus)) == 2
    assert main([*add, "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--as", "run-b"]) == 0
    assert "as 'run-b'" in capsys.readouterr().out
    df = read_corpus(corpus)
    assert list(df["study"]) == [NAME, NAME, "run-b", "run-b"]


def test_unknown_study_names_what_is_there(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    optuna.create_study(storage=url, study_name="other")
    assert main(["corpus", "add", "--study", "nope", "--storage", url,
                 "--corpus", str(tmp_path / "c.csv")]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_prior_report_prints_cv_numbers(capsys):
    assert main(["prior", "--report", "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "Spearman" in out and "top-" in out
