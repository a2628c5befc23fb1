"""``amk-tune run``: an exported artifact decodes with no search, and a tampered, mismatched
or foreign one is refused with its own error."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from amk_tune.artifacts import open_artifact, run_artifact
from amk_tune.artifacts import runner as artifact_runner
from amk_tune.artifacts.manifest import canonical_json, sha256_hex
from amk_tune.cli import main
from amk_tune.errors import ArtifactError, ArtifactForeign, ArtifactMismatch, ArtifactTampered
from amk_tune.targets import get_target
from space.schedule import Schedule
from vm.decode import cpu_runner, greedy_generate

CUBIN = b"\x7fELF" + bytes(60)  # an ELF header: never loaded on the CPU path


@pytest.fixture
def exported(make_study, tmp_path) -> Path:
    url = make_study()
    out = tmp_path / "best"
    assert main(["export", "--study", "s", "--storage", url, "--out", str(out)]) == 0
    return out


def rewrite_manifest(art: Path, **changes) -> None:
    """Edit the manifest and re-seal it (as a careful forger would)."""
    d = json.loads((art / "manifest.json").read_text())
    d.update(changes)
    d.pop("content_sha256")
    d["content_sha256"] = sha256_hex(canonical_json(d))
    (art / "manifest.json").write_text(json.dumps(d))


def test_run_on_cpu_reproduces_a_direct_generation(exported, model, capsys):
    assert main(["run", str(exported), "--prompt-ids", "5,6,7", "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    schedule = Schedule(split_kv=2, steps_per_launch=2)  # the best trial's
    gen = greedy_generate(model.weights, schedule, get_target("h100"), [5, 6, 7], 4,
                          cpu_runner(model.weights))
    assert out.split() == [str(t) for t in gen.tokens]
    assert "trial 1 of 's'" in err and "simulated" in err and "reference VM" in err


def test_run_from_the_tarball_the_dashboard_serves(make_study, tmp_path, model):
    make_study(latencies=(7.0,))
    (tarball,) = (tmp_path / "artifacts").iterdir()
    art = open_artifact(tarball)
    gen = run_artifact(art, model.weights, [1, 2], 2, "cpu")
    assert len(gen.tokens) == 2 and gen.launches == 2


def test_a_simulated_artifact_has_no_binary_for_cuda(exported, capsys):
    assert main(["run", str(exported), "--prompt-ids", "1", "--device", "cuda"]) == 2
    assert "holds no compiled binary (a simulated trial); run it with --device cpu" in (
        capsys.readouterr().err)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: (a / "program.json").write_bytes((a / "program.json").read_bytes()[:-2]
                                                     + b" \n"), r"program.json has sha256"),
        (lambda a: (a / "schedule.json").write_text('{"split_kv": 4}'), r"schedule.json has"),
        (lambda a: (a / "manifest.json").write_text(
            (a / "manifest.json").read_text().replace('"latency_us": 120.0',
                                                      '"latency_us": 12.0')),
         r"content hash is \w+, the manifest records"),
        (lambda a: (a / "program.json").unlink(), r"program.json is missing"),
        (lambda a: (a / "notes.txt").write_text("hi"), r"holds \['notes.txt'\]"),
        (lambda a: (a / "kernel.cubin").write_bytes(CUBIN),
         r"kernel.cubin is not in the manifest"),
    ],
)
def test_tampered_artifacts_are_refused(exported, capsys, edit, message):
    edit(exported)
    with pytest.raises(ArtifactTampered, match=message):
        open_artifact(exported)
    assert main(["run", str(exported), "--prompt-ids", "1", "--device", "cpu"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_resealed_program_edit_fails_the_relowering_check(exported):
    program = json.loads((exported / "program.json").read_text())
    program["queues"][3][0]["smem_bytes"] += 16
    data = json.dumps(program).encode()
    (exported / "program.json").write_bytes(data)
    files = json.loads((exported / "manifest.json").read_text())["files"]
    rewrite_manifest(exported, files=files | {"program.json": sha256_hex(data)})
    with pytest.raises(ArtifactMismatch, match=r"re-lowering the shipped schedule at position 3 "
                                                r"does not reproduce program.json \(at queues"):
        open_artifact(exported)


def test_other_weights_are_a_mismatch(exported, capsys):
    rewrite_manifest(exported, model=json.loads((exported / "manifest.json").read_text())["model"]
                     | {"seed": 1})  # the manifest now says seed 1: the weights differ
    assert main(["run", str(exported), "--prompt-ids", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "the weights of 'smollm2-135m' hash to" in err and "pass --model" in err
    with pytest.raises(ArtifactMismatch, match=r"hidden 960 \(artifact: 576\)"):
        artifact_runner.load_weights(open_artifact(exported), "smollm2-360m")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "manifest.json").write_text('{"format": "mlflow"}'),
         r"format 'mlflow', not 'amk-artifact': not an amk-tune artifact"),
        (lambda d: (d / "manifest.json").write_text("<xml/>"), r"is not JSON"),
        (lambda d: (d / "readme").write_text(""), r"has no manifest.json"),
    ],
)
def test_foreign_directories_are_refused(tmp_path, make, message):
    d = tmp_path / "x"
    d.mkdir()
    make(d)
    with pytest.raises(ArtifactForeign, match=message):
        open_artifact(d)


def test_foreign_version_and_tarballs_are_refused(exported, tmp_path):
    rewrite_manifest(exported, version=2)
    with pytest.raises(ArtifactForeign, match="version 2; this amk-tune reads version 1"):
        open_artifact(exported)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ArtifactForeign, match="not an amk-tune artifact tarball"):
        open_artifact(junk)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "evil.tar.gz").write_bytes(gzip.compress(evil.getvalue()))
    with pytest.raises(ArtifactTampered, match=r"member '../../etc/x' is not a file"):
        open_artifact(tmp_path / "evil.tar.gz")
    assert not (tmp_path.parent.parent / "etc" / "x").exists()


def test_a_binary_for_another_arch_is_foreign_on_cuda(make_study, tmp_path, model, monkeypatch):
    url = make_study(latencies=(9.0,), binary=CUBIN, arch="sm_90")
    assert main(["export", "--study", "s", "--storage", url, "--out", str(tmp_path / "a")]) == 0
    art = open_artifact(tmp_path / "a")
    monkeypatch.setattr(artifact_runner, "live_arch", lambda: "sm_89")
    with pytest.raises(ArtifactForeign, match="compiled for sm_90 but the live GPU is sm_89"):
        run_artifact(art, model.weights, [1], 1, "cuda")
    monkeypatch.setattr(artifact_runner, "live_arch", lambda: "sm_90")
    with pytest.raises(ArtifactMismatch, match=r"kernel\.cu is not what this amk-tune builds"):
        run_artifact(art, model.weights, [1], 1, "cuda")


def test_no_gpu_is_a_clear_error(make_study, tmp_path, model, monkeypatch):
    url = make_study(latencies=(9.0,), binary=CUBIN, arch="sm_90")
    assert main(["export", "--study", "s", "--storage", url, "--out", str(tmp_path / "a")]) == 0
    monkeypatch.setattr("amk_tune.device.live_gpu", lambda: None)
    with pytest.raises(ArtifactError, match=r"no CUDA GPU is visible .* run the artifact with "
                                            r"--device cpu"):
        run_artifact(open_artifact(tmp_path / "a"), model.weights, [1], 1, "cuda")


def test_loading_never_unpickles_or_imports_from_the_artifact():
    source = "\n".join(p.read_text() for p in
                       (Path(artifact_runner.__file__).parent).glob("*.py"))
    banned = (r"import (c?pickle|marshal|shelve|importlib)|torch\.load|allow_pickle|\bexec\(|"
              r"\beval\(|extractall|__import__")
    assert re.findall(banned, source) == []
