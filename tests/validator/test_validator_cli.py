"""``amk-tune validate``: exit codes and the JSON shape of PROGRAM_FORMAT.md's CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amk_tune.cli import main
from amk_tune.targets import get_target
from space.schedule import Schedule
from tests.conftest import TINY
from vm.lowering import lower


@pytest.fixture(scope="module")
def lowered_json() -> str:
    return lower(TINY, Schedule(), get_target("l4"), steps=2).to_json()


@pytest.fixture
def lowered(lowered_json) -> dict:
    return json.loads(lowered_json)


def _write(tmp_path: Path, doc, name: str = "p.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_accepted_exits_0(tmp_path, lowered, capsys):
    assert main(["validate", _write(tmp_path, lowered)]) == 0
    assert capsys.readouterr().out.startswith("ACCEPTED")
    assert main(["validate", _write(tmp_path, lowered), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"verdict": "ACCEPTED", "violations": []}


def test_rejected_exits_1_with_the_contract_json(tmp_path, lowered, capsys):
    lowered["queues"][1][0]["wait"] = []  # a layer-0 tile no longer waits for the token
    lowered["counters"]["orphan"] = {"per_step": 1}
    path = _write(tmp_path, lowered)
    assert main(["validate", path, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"verdict", "violations"} and out["verdict"] == "REJECTED"
    props = {v["property"] for v in out["violations"]}
    assert props == {"race_free", "epoch_exact"}
    for v in out["violations"]:
        assert set(v) == {"property", "tasks", "message"}
        assert isinstance(v["tasks"], list) and v["message"]
    assert main(["validate", path]) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"REJECTED {path}") and "race_free [" in text


def test_malformed_program_is_rejected_not_refused(tmp_path, lowered, capsys):
    del lowered["queues"][0][0]["id"]
    assert main(["validate", _write(tmp_path, lowered), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [v["property"] for v in out["violations"]] == ["well_formed"]


@pytest.mark.parametrize("content,words", [
    ("{not json", "is not JSON"),
    (json.dumps({"format": "amk-program", "version": 7}), "'version' is 7"),
    (json.dumps({"format": "onnx", "version": 1}), "'format' is 'onnx'"),
    (json.dumps([1, 2]), "is a JSON object"),
])
def test_not_an_amk_program_exits_2_with_one_line(tmp_path, capsys, content, words):
    assert main(["validate", _write(tmp_path, content), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.json")]) == 2
    assert "cannot read program file" in capsys.readouterr().err


def test_gpu_profile_applies_only_without_a_program_target(tmp_path, lowered, capsys):
    lowered["launch"].update(blocks=100)
    lowered["queues"] += [[] for _ in range(100 - len(lowered["queues"]))]
    with_target = _write(tmp_path, lowered, "a.json")
    assert main(["validate", with_target, "--gpu", "h100", "--json"]) == 1  # l4: 58 SMs
    del lowered["target"]
    without = _write(tmp_path, lowered, "b.json")
    capsys.readouterr()
    assert main(["validate", without, "--gpu", "h100"]) == 0
    assert main(["validate", without, "--gpu", "t4", "--json"]) == 1
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["violations"][0]["property"] == "co_resident"
    assert main(["validate", without, "--gpu", "nope"]) == 2
