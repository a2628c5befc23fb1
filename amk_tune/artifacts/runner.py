"""Open an exported artifact without trusting it, then run greedy decoding with it.

``open_artifact`` checks, in order: it is an amk-tune artifact of a version we read
(ArtifactForeign), every file and the manifest hash to what was recorded (ArtifactTampered),
its files agree with one another and re-lowering the shipped schedule at the program's
position reproduces ``program.json`` exactly (ArtifactMismatch: another amk-tune lowered it).
``load_weights`` refuses weights whose shape or sha256 differ from the manifest's
(ArtifactMismatch). ``run_artifact`` decodes on the CPU reference VM, or on the GPU with the
shipped binary after checking the live arch (ArtifactForeign) and the kernel source ABI.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amk_tune.artifacts.bundle import read_files, verify
from amk_tune.artifacts.manifest import PROGRAM, SCHEDULE, SOURCE, Manifest, weights_sha256
from amk_tune.errors import (
    ArtifactError,
    ArtifactForeign,
    ArtifactMismatch,
    ArtifactTampered,
    ModelError,
    ProgramError,
    ScheduleError,
    TargetError,
    VmError,
    WeightsNotFound,
)
from amk_tune.model.loaders import LoadedModel, load_model
from amk_tune.model.spec import ModelSpec
from amk_tune.model.weights import ModelWeights
from amk_tune.targets import Target, get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from vm.decode import Generation, Runner, cpu_runner, greedy_generate
from vm.lowering import lower
from vm.program import Program
from vm.reference_vm import spec_of


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest, program, schedule, target, and raw files."""

    where: str
    manifest: Manifest
    program: Program
    schedule: Schedule
    target: Target
    files: dict[str, bytes] = dataclasses.field(repr=False)

    @property
    def spec(self) -> ModelSpec:
        return spec_of(self.program)


def open_artifact(path: str | Path) -> Artifact:
    """Read and verify the artifact directory (or tarball) at ``path``."""
    where = str(path)
    files = read_files(Path(path))
    manifest = verify(files, where)
    try:
        program_dict = json.loads(files[PROGRAM])
        program = Program.from_dict(program_dict)
        spec = spec_of(program)
    except (ValueError, ProgramError, TypeError, VmError) as e:
        raise ArtifactTampered(f"{where}: {PROGRAM} is not a lowered amk-program ({e})") from None
    try:
        schedule = Schedule.from_dict(json.loads(files[SCHEDULE]))
        target = get_target(manifest.gpu)
    except (ScheduleError, TargetError) as e:
        raise ArtifactMismatch(f"{where} does not fit this amk-tune ({e}); run it with the "
                               f"amk-tune that built it ({manifest.versions})") from None
    x = program.extra
    if not (schedule.to_dict() == manifest.schedule == x.get("schedule")
            and x.get("model") == manifest.model.spec
            and (program.target or {}).get("name") == target.name):
        raise ArtifactTampered(f"{where}: {SCHEDULE}, {PROGRAM} and the manifest disagree on the "
                               "schedule, model or GPU; export the artifact again")
    relowered = lower(spec, schedule, target, steps=program.steps, position=x.get("position", 0),
                      max_seq=x.get("max_seq"), dtype=x.get("dtype", "bf16"),
                      quant_group=x.get("quant_group", 0))
    diff = first_difference(json.loads(relowered.to_json()), program_dict)
    if diff:
        raise ArtifactMismatch(f"{where}: re-lowering the shipped schedule at position "
                               f"{x.get('position')} does not reproduce {PROGRAM} ({diff}); this "
                               "amk-tune lowers differently from the one that built it "
                               f"({manifest.versions}): run it with that version")
    return Artifact(where, manifest, program, schedule, target, files)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two JSON values first differ (``queues[3][7].read``), or None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next(filter(None, (first_difference(x, y, f"{path}[{i}]")
                                  for i, (x, y) in enumerate(zip(a, b, strict=True)))), None)
    return None if a == b else f"at {path or 'top'}: {a!r:.60} vs {b!r:.60}"


def load_weights(art: Artifact, source: str | None = None) -> LoadedModel:
    """The artifact's model loaded from ``source`` (default: the manifest's), refused unless
    its shape and weights hash match the manifest."""
    rec, spec = art.manifest.model, art.spec
    src = source or rec.source
    try:
        x = art.program.extra
        model = load_model(src, dtype=x.get("dtype", "bf16"), quant_group=x.get("quant_group", 0),
                           layers=spec.layers, seed=rec.seed)
    except WeightsNotFound:
        raise
    except ModelError as e:
        raise ArtifactMismatch(f"model {src!r} cannot be the artifact's model: {e}") from None
    ours = dataclasses.asdict(model.spec)
    theirs = dataclasses.asdict(spec)
    fields = [k for k in ours if k != "name" and ours[k] != theirs[k]]
    if fields:
        shown = ", ".join(f"{k} {ours[k]!r} (artifact: {theirs[k]!r})" for k in fields[:4])
        raise ArtifactMismatch(f"model {src!r} has {shown}: the artifact was built for "
                               f"{rec.source!r}; pass --model with that model")
    digest = weights_sha256(model.weights)
    if digest != rec.weights_sha256:
        raise ArtifactMismatch(f"the weights of {src!r} hash to {digest[:16]}..., the artifact "
                               f"was tuned on weights {rec.weights_sha256[:16]}... "
                               f"({rec.source!r}, seed {rec.seed}); pass --model with those "
                               "weights")
    weights = dataclasses.replace(model.weights, spec=spec)
    return LoadedModel(spec, weights, model.tokenizer, model.source)


def live_arch() -> str:
    """The arch (``sm_90``) of the GPU this process would run on."""
    from amk_tune.device import live_gpu

    gpu = live_gpu()
    if gpu is None:
        raise ArtifactError("no CUDA GPU is visible to run the shipped binary on: run the "
                            "artifact with --device cpu")
    return gpu.arch


def shipped_gpu_runner(art: Artifact, weights: ModelWeights) -> Runner:
    """A GPU runner on the artifact's own binary (loaded as a module, never rebuilt)."""
    from vm.build import Built, assemble, config_for

    m = art.manifest
    if m.binary is None:
        raise ArtifactError(f"{art.where} holds no compiled binary (a "
                            f"{'measured' if m.measured else 'simulated'} trial); run it with "
                            "--device cpu, or export a trial measured on a GPU")
    live = live_arch()
    if live != m.arch:
        raise ArtifactForeign(f"{art.where} was compiled for {m.arch} but the live GPU is "
                              f"{live}; run a study on this GPU and export its best trial")
    try:
        knobs = KernelKnobs.from_dict(m.kernel_knobs)
    except ScheduleError as e:
        raise ArtifactMismatch(f"{art.where}: {e}; run it with the amk-tune that built it "
                               f"({m.versions})") from None
    cfg = config_for(art.program, art.spec, knobs)
    if art.files.get(SOURCE, b"").decode(errors="replace") != assemble(cfg):
        raise ArtifactMismatch(f"{art.where}: the shipped {SOURCE} is not what this amk-tune "
                               "builds for the program, so the binary may expect another task "
                               f"encoding; run it with the amk-tune that built it ({m.versions})")
    from vm.gpu_runner import GpuKernel, GpuMachine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / m.binary
        path.write_bytes(art.files[m.binary])
        kernel = GpuKernel(Built(path, m.content_sha256[:24], live, cfg, True))
    machine = GpuMachine(weights, arch=live, kernel=kernel)
    return machine.launch


def run_artifact(art: Artifact, weights: ModelWeights, prompt: list[int], max_new_tokens: int,
                 device: str = "cpu") -> Generation:
    """Greedy-decode ``prompt`` with the artifact's schedule: on ``cpu`` through the
    reference VM, on ``cuda`` through the shipped binary."""
    if device == "cuda":
        runner = shipped_gpu_runner(art, weights)
    elif device == "cpu":
        runner = cpu_runner(weights)
    else:
        raise ArtifactError(f"device {device!r}: choose cpu or cuda")
    return greedy_generate(weights, art.schedule, art.target, prompt, max_new_tokens, runner)
