"""From a trial's bundle to artifact files, and between files, tarballs and directories.

``make_files`` turns the dict a study's objective hands over into the artifact's files
(manifest included); ``pack`` writes them as a byte-reproducible gzip tarball (the Optuna
artifact); ``read_files`` reads a tarball or a directory back without trusting it (regular
files with known names only, nothing executed, nothing extracted outside the target);
``verify`` authenticates them against the manifest.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
import zlib
from pathlib import Path
from typing import Any

from amk_tune.artifacts.manifest import (
    BINARIES,
    FILE_NAMES,
    MANIFEST,
    PROGRAM,
    SCHEDULE,
    SOURCE,
    Manifest,
    ModelRecord,
    sha256_hex,
)
from amk_tune.errors import ArtifactError, ArtifactForeign, ArtifactTampered

MAX_FILE_BYTES = 1 << 30  # a file bigger than this in an artifact is refused unread
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "program": dict, "schedule": dict, "kernel_knobs": dict, "model": dict, "gpu": str,
    "measured": bool, "oracle": dict, "latency_us": (int, float), "versions": dict,
}


def _check_bundle(bundle: Any) -> None:
    if not isinstance(bundle, dict):
        raise ArtifactError(f"a trial bundle is a dict, got {type(bundle).__name__}")
    for key, kind in _FIELDS.items():
        value = bundle.get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ArtifactError(f"trial bundle field {key!r} = {value!r:.80} is missing or not "
                                f"{getattr(kind, '__name__', 'a number')}")
    for key, kind in (("cuda_source", str), ("binary", bytes), ("arch", str)):
        if bundle.get(key) is not None and not isinstance(bundle[key], kind):
            raise ArtifactError(f"trial bundle field {key!r} must be {kind.__name__} or None, "
                                f"got {type(bundle[key]).__name__}")
    if bundle.get("binary") is not None and not (bundle.get("arch") and bundle.get("cuda_source")):
        raise ArtifactError("trial bundle has a binary but no 'arch' or no 'cuda_source': give "
                            "the GPU arch (e.g. 'sm_90') and the source it was compiled from")
    if not math.isfinite(bundle["latency_us"]):
        raise ArtifactError(f"trial bundle latency_us = {bundle['latency_us']!r}: store only "
                            "completed trials with a finite latency")
    model = bundle["model"]
    for key in ("source", "weights_sha256"):
        if not isinstance(model.get(key), str):
            raise ArtifactError(f"trial bundle model.{key} = {model.get(key)!r}: a string")
    seed = model.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArtifactError(f"trial bundle model.seed = {seed!r}: the integer seed of a "
                            "preset's random weights (0 for real checkpoints)")
    if model.get("spec") != bundle["program"].get("model"):
        raise ArtifactError("trial bundle model.spec differs from the program's 'model': the "
                            "bundle must carry the program lowered for that model")
    if bundle["schedule"] != bundle["program"].get("schedule"):
        raise ArtifactError("trial bundle schedule differs from the program's 'schedule': the "
                            "bundle must carry the program lowered from that schedule")


def _binary_name(binary: bytes) -> str:
    if binary.startswith(b"\x7fELF"):
        return "kernel.cubin"
    if b".version" in binary[:4096] and b".target" in binary[:4096]:
        return "kernel.ptx"
    raise ArtifactError("trial bundle binary is neither a cubin (ELF) nor PTX text: store "
                        "what vm.build compiled")


def make_files(study: str, trial: int, bundle: dict[str, Any]) -> tuple[Manifest, dict[str, bytes]]:
    """The artifact files of one trial's bundle (see amk_tune.artifacts.store_trial_bundle)."""
    _check_bundle(bundle)
    files = {
        PROGRAM: json.dumps(bundle["program"], separators=(",", ":")).encode() + b"\n",
        SCHEDULE: json.dumps(bundle["schedule"], indent=1, sort_keys=True).encode() + b"\n",
    }
    if bundle.get("cuda_source") is not None:
        files[SOURCE] = bundle["cuda_source"].encode()
    if bundle.get("binary") is not None:
        files[_binary_name(bundle["binary"])] = bundle["binary"]
    m = bundle["model"]
    manifest = Manifest(
        study=study, trial=trial,
        model=ModelRecord(m["source"], m["spec"], m["weights_sha256"], m.get("seed", 0)),
        gpu=bundle["gpu"], arch=bundle.get("arch") if bundle.get("binary") is not None else None,
        measured=bundle["measured"], latency_us=float(bundle["latency_us"]),
        oracle=bundle["oracle"], schedule=bundle["schedule"],
        kernel_knobs=bundle["kernel_knobs"], versions=bundle["versions"],
        files={name: sha256_hex(data) for name, data in sorted(files.items())},
    )
    try:
        files[MANIFEST] = manifest.to_json().encode()
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"trial bundle is not plain JSON data: {e}") from None
    return manifest, files


def pack(files: dict[str, bytes]) -> bytes:
    """A gzip tarball of ``files``, byte-identical for identical files (no times, no owners)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files, key=lambda n: (n != MANIFEST, n)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def read_files(path: Path) -> dict[str, bytes]:
    """The files of an artifact directory or tarball, refusing anything that is not a
    regular file with one of the known names (no links, no folders, no paths)."""
    known = {MANIFEST, *FILE_NAMES}
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        if MANIFEST not in names:
            raise ArtifactForeign(f"{str(path)!r} has no {MANIFEST}: not an amk-tune artifact "
                                  "(export one with `amk-tune export`)")
        odd = [n for n in names if n not in known or not (path / n).is_file()
               or (path / n).is_symlink()]
        if odd:
            raise ArtifactTampered(f"{str(path)!r} holds {odd}, which no amk-tune artifact has; "
                                   "export the artifact again into an empty directory")
        return {n: (path / n).read_bytes() for n in names}
    if not path.is_file():
        raise ArtifactError(f"artifact {str(path)!r} does not exist: give the directory that "
                            "`amk-tune export` wrote")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if not member.isreg() or member.name not in known or member.name in files:
                    raise ArtifactTampered(f"{str(path)!r}: member {member.name!r} is not a "
                                           "file of an amk-tune artifact")
                if member.size > MAX_FILE_BYTES:
                    raise ArtifactTampered(f"{str(path)!r}: {member.name} is {member.size} "
                                           "bytes, more than any artifact file")
                files[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ArtifactForeign(f"{str(path)!r} is not an amk-tune artifact tarball ({e})") from None
    if MANIFEST not in files:
        raise ArtifactForeign(f"{str(path)!r} has no {MANIFEST}: not an amk-tune artifact")
    return files


def verify(files: dict[str, bytes], where: str) -> Manifest:
    """The manifest, once every file hashes to what it records and nothing is missing or
    extra; ArtifactTampered naming the first file that does not."""
    manifest = Manifest.from_json(files[MANIFEST], f"{where}/{MANIFEST}")
    for name in (PROGRAM, SCHEDULE):
        if name not in manifest.files:
            raise ArtifactTampered(f"{where}: the manifest lists no {name}; export it again")
    if sum(name in manifest.files for name in BINARIES) > 1:
        raise ArtifactTampered(f"{where}: the manifest lists more than one binary")
    present = set(files) - {MANIFEST}
    for name in sorted(present | set(manifest.files)):
        if name not in manifest.files:
            raise ArtifactTampered(f"{where}: {name} is not in the manifest; it was added "
                                   "after export. Remove it or export again")
        if name not in files:
            raise ArtifactTampered(f"{where}: {name} is missing; export the artifact again")
        actual = sha256_hex(files[name])
        if actual != manifest.files[name]:
            raise ArtifactTampered(f"{where}: {name} has sha256 {actual}, the manifest records "
                                   f"{manifest.files[name]}; the file was modified after "
                                   "export. Export the artifact again")
    return manifest


def write_dir(files: dict[str, bytes], out: Path) -> None:
    """Write the files into ``out``, which must be new or empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"--out {str(out)!r} exists and is not an empty directory; "
                            "choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
