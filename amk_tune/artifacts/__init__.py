"""Megakernel artifacts: one per completed trial in the Optuna artifact store, exported and
run without any search (manifest.py: the format; bundle.py: files and tarballs; store.py: the
Optuna side; runner.py: verify and run)."""

from __future__ import annotations

from amk_tune.artifacts.manifest import FORMAT, VERSION, Manifest, weights_sha256
from amk_tune.artifacts.runner import Artifact, load_weights, open_artifact, run_artifact
from amk_tune.artifacts.store import (
    artifact_dir,
    best_trial,
    export_trial,
    storage_url,
    store_trial_bundle,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "Artifact",
    "Manifest",
    "artifact_dir",
    "best_trial",
    "export_trial",
    "load_weights",
    "open_artifact",
    "run_artifact",
    "storage_url",
    "store_trial_bundle",
    "weights_sha256",
]
