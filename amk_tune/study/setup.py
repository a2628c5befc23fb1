"""Choosing the GPU target, naming the study and opening its storage.

One study per (model, GPU, dtype): the name says all three (and ``simulated`` for a
simulated study), and the study's user attrs record them (with the int8 quantisation
groups it searches), so a resumed study refuses a run that would mix another model, GPU,
dtype, group set or measurement kind into it.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from amk_tune.device import LiveGpu, live_gpu, live_target_name
from amk_tune.errors import StudyError, TargetError
from amk_tune.targets import DEFAULT_TARGET, Target, get_target

DEFAULT_STORAGE = "sqlite:///studies/amk.db"
N_STARTUP_TRIALS = 8
IDENTITY = ("model", "layers", "gpu", "dtype", "simulated", "quant_groups")
CREATE_ATTEMPTS = 5


def resolve_gpu(name: str, simulate: bool) -> tuple[Target, LiveGpu | None]:
    """The target profile of a study and the live GPU it will run on (None if simulated).

    A measured study needs a live GPU whose profile matches ``--gpu`` (``auto``: whatever
    is there). A simulated one uses the named profile, ``auto`` meaning the live GPU's or
    the default.
    """
    gpu = live_gpu()
    live_name = live_target_name() if gpu else None
    wanted = name.strip().lower()
    if simulate:
        key = (live_name or DEFAULT_TARGET) if wanted == "auto" else wanted
        return get_target(key), None
    if gpu is None:
        raise StudyError("no CUDA GPU is visible to this process: run the study on a GPU "
                         "machine, or pass --simulate for a simulated study (CPU reference VM "
                         "oracle, analytic cost model; never reported as measured)")
    if live_name is None:
        raise TargetError(f"the live GPU {gpu.name!r} ({gpu.arch}, {gpu.sms} SMs) has no target "
                          "profile in amk_tune/data/targets.json: add one, or pass --simulate")
    if wanted not in ("auto", live_name):
        get_target(wanted)  # an unknown name gets the list of known ones
        raise TargetError(f"--gpu {name!r} does not match the live GPU {gpu.name!r} (profile "
                          f"{live_name!r}): pass --gpu {live_name} or --gpu auto")
    return get_target(live_name), gpu


def study_name(model: str, layers: int | None, gpu: str, dtype: str, simulate: bool,
               quant_group: int | None = None) -> str:
    """MODEL[-Nl]-GPU-DTYPE[-gG][-simulated]; ``-gG`` when an int8 study fixes its group."""
    parts = [model if layers is None else f"{model}-{layers}l", gpu, dtype]
    if dtype == "int8" and quant_group is not None:
        parts.append(f"g{quant_group}")
    if simulate:
        parts.append("simulated")
    return re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts).lower())


def ensure_sqlite_parent(url: str) -> None:
    """Create the folder of a ``sqlite:///relative/or/absolute.db`` file."""
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)


def _create_or_load(storage: str, name: str) -> tuple[optuna.Study, bool]:
    """(study, created by this call). Workers starting together on a fresh RDB race to
    create Optuna's tables and the study: the loser of a table race retries, the loser of
    the study race loads what the winner made."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.create_study(storage=storage, study_name=name,
                                       direction="minimize"), True
        except optuna.exceptions.DuplicatedStudyError:
            return optuna.load_study(study_name=name, storage=storage), False
        except sqlalchemy.exc.DBAPIError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def open_study(storage: str, name: str, identity: dict[str, Any],
               seed: int) -> tuple[optuna.Study, bool]:
    """Create or resume study ``name``: (study, created by this process); StudyError if it
    holds another kind of study.

    The TPE sampler is seeded with ``seed`` plus the number of trials already there, so a
    resumed study does not replay the random start-up points of its first session.
    """
    ensure_sqlite_parent(storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # progress.py reports trials
    try:
        study, created = _create_or_load(storage, name)
    except (ValueError, ImportError, sqlalchemy.exc.DBAPIError) as e:
        raise StudyError(f"cannot open storage {storage!r}: {e}") from e
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise StudyError(f"study {name!r} in {storage!r} maximises; it is not an amk-tune study")
    have = study.user_attrs
    if have:
        wrong = {k: (have.get(k), identity[k]) for k in IDENTITY if have.get(k) != identity[k]}
        if wrong:
            shown = ", ".join(f"{k}: stored {a!r}, this run {b!r}" for k, (a, b) in wrong.items())
            raise StudyError(f"study {name!r} in {storage!r} is another study ({shown}); pass "
                             "another --study name, or leave --study out for the default name")
    else:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.trials), n_startup_trials=N_STARTUP_TRIALS, multivariate=True,
            group=True, constant_liar=True)  # a running trial counts as bad: 2 in flight differ
    return study, created
