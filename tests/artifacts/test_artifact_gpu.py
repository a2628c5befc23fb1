"""On a GPU: an artifact carrying a real cubin runs through the shipped binary, equal to the
reference VM, and one built for another arch is foreign."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest

from amk_tune.artifacts import open_artifact, run_artifact, store_trial_bundle, weights_sha256
from amk_tune.artifacts.manifest import canonical_json, sha256_hex
from amk_tune.cli import main
from amk_tune.errors import ArtifactForeign
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule

pytestmark = pytest.mark.gpu


def test_the_shipped_cubin_runs_and_matches_the_reference_vm(model, tmp_path, capsys):
    from vm.build import assemble, build, config_for
    from vm.gpu_runner import device_arch
    from vm.lowering import lower

    schedule, knobs = Schedule(steps_per_launch=2, split_kv=2), KernelKnobs(rows_per_warp=2)
    target, arch = get_target("auto"), device_arch()
    program = lower(model.spec, schedule, target, position=3, max_seq=13)
    cfg = config_for(program, model.spec, knobs)
    url = f"sqlite:///{tmp_path / 'amk.db'}"
    study = optuna.create_study(study_name="gpu", storage=url)

    def objective(trial: optuna.Trial) -> float:
        store_trial_bundle(study, trial, {
            "program": program.to_dict(), "schedule": schedule.to_dict(),
            "kernel_knobs": knobs.to_dict(), "cuda_source": assemble(cfg),
            "binary": build(cfg, arch).cubin.read_bytes(), "arch": arch,
            "model": {"source": "smollm2-135m", "spec": dataclasses.asdict(model.spec),
                      "weights_sha256": weights_sha256(model.weights), "seed": 0},
            "gpu": target.name, "measured": True, "oracle": {"passed": True},
            "latency_us": 50.0, "versions": {}})
        return 50.0

    study.optimize(objective, n_trials=1)
    out = tmp_path / "best"
    assert main(["export", "--study", "gpu", "--storage", url, "--out", str(out)]) == 0
    art = open_artifact(out)
    on_gpu = run_artifact(art, model.weights, [5, 6, 7], 8, "cuda")
    on_cpu = run_artifact(art, model.weights, [5, 6, 7], 8, "cpu")
    assert on_gpu.tokens == on_cpu.tokens
    d = json.loads((out / "manifest.json").read_text())
    d["arch"] = "sm_80" if arch != "sm_80" else "sm_90"
    d.pop("content_sha256")
    d["content_sha256"] = sha256_hex(canonical_json(d))
    (out / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ArtifactForeign, match=f"but the live GPU is {arch}"):
        run_artifact(open_artifact(out), model.weights, [1], 1, "cuda")
