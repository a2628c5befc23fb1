"""The artifact manifest: what a megakernel artifact claims to be, and the hashes that hold
it to that claim.

An artifact is a directory (or a gzip tarball of one) holding ``manifest.json`` and the files
it lists: ``program.json``, ``schedule.json`` and, for a measured trial, ``kernel.cu`` and the
compiled ``kernel.cubin`` (or ``kernel.ptx``). The manifest records the sha256 of every other
file, and ``content_sha256``: the sha256 of the canonical JSON of the manifest without that
field. The hashes catch any edit, corruption or swapped file; they are not a signature (whoever
can rewrite the manifest can recompute them).

Everything is JSON; reading an artifact never unpickles or imports anything from it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from amk_tune.errors import ArtifactForeign, ArtifactTampered
from amk_tune.model.weights import ModelWeights

FORMAT = "amk-artifact"
VERSION = 1
MANIFEST = "manifest.json"
PROGRAM = "program.json"
SCHEDULE = "schedule.json"
SOURCE = "kernel.cu"
BINARIES = ("kernel.cubin", "kernel.ptx")
FILE_NAMES = (PROGRAM, SCHEDULE, SOURCE, *BINARIES)


def canonical_json(obj: Any) -> bytes:
    """The one byte string a JSON value hashes as (sorted keys, no spaces, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_sha256(weights: ModelWeights) -> str:
    """The identity of a model's weights: sha256 over the storage dtype and, per tensor in
    name order, its name, shape and float32 little-endian bytes. The study records it for
    every trial; ``amk-tune run`` refuses weights that do not hash to it."""
    h = hashlib.sha256(f"amk-weights/1 {weights.dtype}\n".encode())
    for name in sorted(weights.tensors):
        a = weights.tensors[name]
        h.update(f"{name} {list(a.shape)}\n".encode())
        h.update(a.astype("<f4", copy=False).tobytes(order="C"))
    return h.hexdigest()


@dataclass(frozen=True)
class ModelRecord:
    """The model a trial ran: how to load it again and what its weights must hash to."""

    source: str  # a load_model source (preset, checkpoint name, path, hub id)
    spec: dict[str, Any]  # dataclasses.asdict(ModelSpec), the lowered (maybe cut) shape
    weights_sha256: str
    seed: int = 0  # the seed of a preset's random weights


@dataclass(frozen=True)
class Manifest:
    """One artifact's claims. ``files`` maps each file name to its sha256."""

    study: str
    trial: int
    model: ModelRecord
    gpu: str  # the target profile the program was lowered for
    arch: str | None  # the compiled binary's arch (sm_90, ...); None without a binary
    measured: bool  # False: a simulated trial (CPU oracle, analytic latency, no binary)
    latency_us: float  # us/token, measured or simulated as ``measured`` says
    oracle: dict[str, Any]
    schedule: dict[str, Any]
    kernel_knobs: dict[str, Any]
    versions: dict[str, Any]
    files: dict[str, str]

    @property
    def binary(self) -> str | None:
        return next((name for name in BINARIES if name in self.files), None)

    def body(self) -> dict[str, Any]:
        """The manifest's JSON without ``content_sha256`` (what that hash covers)."""
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @property
    def content_sha256(self) -> str:
        return sha256_hex(canonical_json(self.body()))

    def to_json(self) -> str:
        return json.dumps({**self.body(), "content_sha256": self.content_sha256},
                          indent=1, sort_keys=True, allow_nan=False) + "\n"

    @staticmethod
    def from_json(text: bytes | str, where: str) -> Manifest:
        """Parse and authenticate a manifest: ArtifactForeign for something that is not an
        amk artifact of a version we read, ArtifactTampered when its content hash fails."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactForeign(f"{where} is not JSON ({e}): not an amk-tune artifact") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ArtifactForeign(f"{where} has format {got!r}, not {FORMAT!r}: not an amk-tune "
                                  "artifact (export one with `amk-tune export`)")
        if d.get("version") != VERSION:
            raise ArtifactForeign(f"{where} is {FORMAT} version {d.get('version')!r}; this "
                                  f"amk-tune reads version {VERSION}: use the amk-tune that "
                                  "wrote it, or export the trial again")
        recorded = d.pop("content_sha256", None)
        actual = sha256_hex(canonical_json(d))
        if recorded != actual:
            raise ArtifactTampered(f"{where}: content hash is {actual}, the manifest records "
                                   f"{recorded!r}; the manifest was edited or corrupted. "
                                   "Export the artifact again")
        return _parse(d, where)


def _parse(d: dict[str, Any], where: str) -> Manifest:
    """The fields of an authenticated manifest, type-checked (a bad one is a writer bug)."""
    def need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], at: str) -> Any:
        value = obj.get(key)
        if not (key in obj and isinstance(value, kind)
                and (kind is bool or not isinstance(value, bool))):
            raise ArtifactTampered(f"{where}: field {at}{key} = {value!r} is missing or has the "
                                   "wrong type; export the artifact again")
        return value

    m = need(d, "model", dict, "")
    files = need(d, "files", dict, "")
    bad = sorted(n for n, h in files.items() if n not in FILE_NAMES or not isinstance(h, str))
    if bad:
        raise ArtifactTampered(f"{where}: unexpected file entries {bad}; an artifact holds only "
                               f"{list(FILE_NAMES)}")
    arch = d.get("arch")
    latency = need(d, "latency_us", (int, float), "")
    if (arch is not None and not isinstance(arch, str)) or not math.isfinite(latency):
        raise ArtifactTampered(f"{where}: arch = {arch!r}, latency_us = {latency!r} are invalid")
    return Manifest(
        study=need(d, "study", str, ""),
        trial=need(d, "trial", int, ""),
        model=ModelRecord(need(m, "source", str, "model."), need(m, "spec", dict, "model."),
                          need(m, "weights_sha256", str, "model."), need(m, "seed", int, "model.")),
        gpu=need(d, "gpu", str, ""),
        arch=arch,
        measured=need(d, "measured", bool, ""),
        latency_us=float(latency),
        oracle=need(d, "oracle", dict, ""),
        schedule=need(d, "schedule", dict, ""),
        kernel_knobs=need(d, "kernel_knobs", dict, ""),
        versions=need(d, "versions", dict, ""),
        files=files,
    )
