"""Trial artifacts in the Optuna artifact store: store one per completed trial, export the best.

The store is an ``optuna.artifacts.FileSystemArtifactStore``. Its directory, first found wins:
the ``artifacts`` argument (``--artifacts DIR``), ``$AMK_ARTIFACTS``, or ``artifacts/`` beside
the SQLite file of a ``sqlite:///`` storage (``studies/artifacts/`` for the default
``sqlite:///studies/amk.db``). Workers sharing a PostgreSQL study must share that directory
(e.g. on a network file system) and say where it is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from amk_tune.artifacts.bundle import make_files, pack, read_files, verify, write_dir
from amk_tune.artifacts.manifest import Manifest
from amk_tune.errors import ArtifactError

ARTIFACTS_ENV = "AMK_ARTIFACTS"
ARTIFACT_ID_ATTR = "artifact_id"
ARTIFACT_SHA_ATTR = "artifact_sha256"


def storage_url(storage: Any) -> str | None:
    """The database URL behind an Optuna storage object (None for in-memory storages)."""
    while storage is not None:
        url = getattr(storage, "url", None)
        if isinstance(url, str):
            return url
        storage = getattr(storage, "_backend", None)
    return None


def artifact_dir(url: str | None, artifacts: str | Path | None = None) -> Path:
    """Where the artifacts of the study at ``url`` live (see the module docstring)."""
    if artifacts:
        return Path(artifacts)
    if os.environ.get(ARTIFACTS_ENV):
        return Path(os.environ[ARTIFACTS_ENV])
    if url and url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        db = make_url(url).database
        if db and db != ":memory:":
            return Path(db).parent / "artifacts"
    raise ArtifactError(f"no artifact store for storage {url!r}: pass --artifacts DIR (one "
                        f"directory every worker shares) or set ${ARTIFACTS_ENV}")


def artifact_store(directory: Path) -> FileSystemArtifactStore:
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def store_trial_bundle(study: optuna.Study, trial: Trial | FrozenTrial, bundle: dict[str, Any],
                       *, artifacts: str | Path | None = None) -> str:
    """Store one completed trial's megakernel as an artifact of that trial; return its id.

    Call it from the objective, before it returns (Optuna refuses to change a finished
    trial). ``bundle`` is plain data: ``program`` (Program JSON dict), ``schedule`` (dict),
    ``kernel_knobs`` (dict), ``cuda_source`` (str | None), ``binary`` (cubin/PTX bytes |
    None), ``arch`` (e.g. ``"sm_90"`` | None), ``model`` (``source``, ``spec``,
    ``weights_sha256`` from :func:`amk_tune.artifacts.weights_sha256`, optional ``seed``),
    ``gpu`` (target profile), ``measured`` (False when simulated), ``oracle`` (verdict
    fields), ``latency_us`` and ``versions``. Sets the trial's user attrs ``artifact_id``
    and ``artifact_sha256`` (the manifest's content hash).
    """
    if isinstance(trial, FrozenTrial) and trial.state.is_finished():
        raise ArtifactError(f"trial {trial.number} is already {trial.state.name}: store its "
                            "bundle from inside the objective, before it returns")
    manifest, files = make_files(study.study_name, trial.number, bundle)
    store = artifact_store(artifact_dir(storage_url(study._storage), artifacts))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"megakernel-trial{trial.number}.tar.gz"
        path.write_bytes(pack(files))
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path),
                                      study_or_trial=trial, storage=study._storage,
                                      mimetype="application/gzip", encoding=None)
    for key, value in ((ARTIFACT_ID_ATTR, artifact_id),
                       (ARTIFACT_SHA_ATTR, manifest.content_sha256)):
        if isinstance(trial, Trial):
            trial.set_user_attr(key, value)
        else:
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
    return artifact_id


def feasible(trial: FrozenTrial) -> bool:
    """A completed trial whose constraints (if any) hold and that is not marked infeasible."""
    constraints = trial.system_attrs.get("constraints")
    if constraints is not None and any(c > 0 for c in constraints):
        return False
    return trial.user_attrs.get("feasible", True) is not False


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best feasible completed trial that has an artifact."""
    if len(study.directions) != 1:
        raise ArtifactError(f"study {study.study_name!r} has {len(study.directions)} "
                            "objectives; export one trial with --trial N")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ok = [t for t in done if ARTIFACT_ID_ATTR in t.user_attrs and feasible(t)]
    if not ok:
        raise ArtifactError(f"study {study.study_name!r} has no feasible completed trial with "
                            f"an artifact ({len(done)} completed); run `amk-tune study` first")
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    return min(ok, key=lambda t: (sign * t.values[0], t.number))


def export_trial(study: optuna.Study, out: Path, directory: Path,
                 number: int | None = None) -> tuple[FrozenTrial, Manifest]:
    """Download the artifact of trial ``number`` (default: the best) into directory ``out``,
    after checking every hash; return the trial and its manifest."""
    if number is None:
        trial = best_trial(study)
    else:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise ArtifactError(f"study {study.study_name!r} has no trial {number}")
        trial = found[0]
    artifact_id = trial.user_attrs.get(ARTIFACT_ID_ATTR)
    if not isinstance(artifact_id, str):
        raise ArtifactError(f"trial {trial.number} of {study.study_name!r} has no artifact "
                            f"({trial.state.name}); export a completed trial")
    name = f"megakernel-trial{trial.number}.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        try:
            download_artifact(artifact_store=artifact_store(directory), file_path=str(path),
                              artifact_id=artifact_id)
        except (ArtifactNotFound, ValueError):
            raise ArtifactError(f"artifact {artifact_id!r} of trial {trial.number} is not in "
                                f"{str(directory)!r}: pass the --artifacts directory the study "
                                "wrote to") from None
        files = read_files(path)
    manifest = verify(files, name)
    if (manifest.study, manifest.trial) != (study.study_name, trial.number):
        raise ArtifactError(f"artifact {artifact_id!r} belongs to trial {manifest.trial} of "
                            f"{manifest.study!r}, not trial {trial.number} of "
                            f"{study.study_name!r}: the artifact store is mixed up")
    write_dir(files, out)
    return trial, manifest



def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``; a SQLite URL must name an existing file (reading
    commands never create a database)."""
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        db = make_url(url).database
        if db and db != ":memory:" and not Path(db).is_file():
            raise ArtifactError(f"storage {url!r}: {db!r} does not exist; run `amk-tune study` "
                                "first or pass --storage")
    return optuna.storages.get_storage(url)


def open_study(name: str, url: str) -> optuna.Study:
    """The existing study ``name`` at ``url``; never creates a database or a study."""
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    if name not in names:
        raise ArtifactError(f"no study {name!r} in {url!r}; studies there: {names or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)
