"""The megakernel compiles without a GPU for every arch we target; the build cache and
the compiler log behave. Skips only when no CUDA compiler (NVRTC or nvcc) is present."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from amk_tune.errors import BuildError
from amk_tune.model.presets import preset_spec
from amk_tune.targets import get_target
from space.kernel_knobs import KernelKnobs
from space.schedule import Schedule
from tests.conftest import TINY_UNTIED
from vm import build as b
from vm.lowering import lower


def _compiler_or_skip() -> str:
    try:
        return b.compiler()
    except BuildError as e:
        pytest.skip(str(e))


def _config(spec, weights: dict | None = None, kernel: KernelKnobs | None = None,
            **knobs) -> b.KernelConfig:
    program = lower(spec, Schedule(**knobs), get_target("h100"), **(weights or {}))
    return b.config_for(program, spec, kernel)


def test_assembled_source_is_one_translation_unit():
    src = b.assemble(_config(TINY_UNTIED))
    assert '#include "' not in src
    assert "namespace enc {" in src and "namespace cfg {" in src
    assert "constexpr int kGroup = 6;" in src  # 6 query heads per KV head
    assert src.count("namespace amk {") >= 5  # every instruction family got inlined
    assert "dot16_i8" in src and "constexpr int WDT_INT8 = 1;" in src  # gemv_int8.cuh too


def test_one_kernel_runs_bf16_and_int8_programs():
    """The weight format is a field of each GEMV record, not a build constant: an int8
    program builds the very source (so the arch compiles below cover its int8 path)."""
    for spec in (preset_spec("smollm2-135m"), preset_spec("llama-2-7b")):
        for weights in ({"dtype": "int8"}, {"dtype": "int8", "quant_group": 64}):
            assert b.assemble(_config(spec, weights)) == b.assemble(_config(spec))


@pytest.mark.parametrize("arch", b.ARCHS)
def test_compiles_for_every_target_arch(arch):
    _compiler_or_skip()
    for cfg in (_config(preset_spec("smollm2-135m")),
                _config(preset_spec("llama-2-7b"), threads=512, smem_bytes=0)):
        cubin = b.compile_cubin(b.assemble(cfg), arch)
        assert cubin[:4] == b"\x7fELF" and len(cubin) > 10_000


@pytest.mark.parametrize("prefill", [False, True], ids=["rings", "rings-prefilled"])
def test_every_ring_compiles_for_the_oldest_arch(prefill):
    """The LM head's, the layer tiles' and the pairs' rings (rows_ring, and with
    ``ring_prefill`` gemv_stage's prefill) at a real shape, for sm_80 (the knob variants on
    TINY compile for sm_90: tests/study/test_study_space.py). bf16 and int8 programs build
    the very same source (test_one_kernel_runs_bf16_and_int8_programs)."""
    _compiler_or_skip()
    knobs = KernelKnobs(rows_per_warp=2, prefetch=3, lm_rows_per_warp=4, lm_ring=4, ring=4,
                        ring_pairs=True, ring_prefill=prefill)
    cfg = _config(preset_spec("llama-3.2-1b"), kernel=knobs, smem_bytes=196608)
    assert f"kRingPrefill = {'true' if prefill else 'false'};" in b.assemble(cfg)
    cubin = b.compile_cubin(b.assemble(cfg), "sm_80")
    assert cubin[:4] == b"\x7fELF" and len(cubin) > 10_000


def test_no_generic_lambda_in_device_code():
    """NVRTC 13.0 (the GPU image's) refuses a lambda with an ``auto`` parameter in device
    code as a host function ("host functions are not allowed in JIT mode"); newer NVRTC and
    nvcc accept it, so no compile here can catch it. Device dispatch takes functors."""
    root = Path(__file__).resolve().parents[2]
    generic = re.compile(r"\[[^\]]*\]\s*\(\s*(const\s+)?auto\b")
    found = [f"{f.relative_to(root)}:{i}" for d in ("instructions/cuda", "vm/cuda")
             for f in sorted((root / d).iterdir())
             for i, line in enumerate(f.read_text().splitlines(), 1) if generic.search(line)]
    assert found == []


def test_build_cache_hits_and_keys(tmp_path, monkeypatch):
    _compiler_or_skip()
    monkeypatch.setenv("AMK_CACHE", str(tmp_path))
    cfg = _config(TINY_UNTIED)
    first = b.build(cfg, "sm_90")
    again = b.build(cfg, "sm_90")
    assert not first.cached and again.cached and again.key == first.key
    assert first.cubin.parent == tmp_path and (tmp_path / f"{first.key}.json").is_file()
    assert b.build(cfg, "sm_80").key != first.key  # arch is in the key
    other = _config(TINY_UNTIED, threads=128)
    assert b.build(other, "sm_90").key != first.key  # so is the program's specialisation


def test_compiler_errors_carry_the_log():
    _compiler_or_skip()
    with pytest.raises(BuildError) as e:
        b.compile_cubin('extern "C" __global__ void k() { this_is_not_cuda; }', "sm_90")
    assert "this_is_not_cuda" in e.value.log


def test_the_gemv_prologue_arrays_are_sized_from_the_program():
    """gemv_prologue loads a tile's epilogue operands and the normed input into arrays
    sized by cfg::kEpiFloats / cfg::kNormVec: one residual tile of every row needs the
    whole hidden vector, the default tiling a few rows (QKV: a cos and a sin per pair)."""
    spec = preset_spec("smollm2-135m")
    whole = lower(spec, Schedule(tiles=1), get_target("h100"))
    assert b.epilogue_operands(whole) == spec.hidden
    tiled = _config(spec)
    assert 1 <= tiled.epi_floats < spec.hidden and tiled.norm_vec == spec.hidden
    src = b.assemble(tiled)
    assert f"constexpr int kEpiFloats = {tiled.epi_floats};" in src
    assert f"constexpr int kNormVec = {spec.hidden};" in src
    assert f"constexpr int kTraceStamps = {len(b.TRACE_STAMPS)};" in src
    assert tiled.smem_bytes == tiled.epi_offset + (tiled.epi_floats * 4 + 15) // 16 * 16


def test_bulk_stage_is_refused_before_sm_90():
    """``bulk_stage`` needs TMA bulk copies: a build for an older arch says so before it
    compiles anything."""
    knobs = KernelKnobs(bulk_stage=True)
    cfg = _config(preset_spec("llama-3.2-1b"), kernel=knobs, smem_bytes=196608)
    with pytest.raises(BuildError, match=r"bulk_stage = true needs TMA bulk copies .* sm_80 "
                                         r"has none: set bulk_stage = false"):
        b.build(cfg, "sm_80")


def test_the_fusions_are_compiled_in_only_when_the_program_has_them():
    """fuse_down's sums (per dtype) and fuse_o's attn_o and row copies are build constants
    from the program: compiled into every build, their registers spilled the 1B config's
    (BENCHMARKS.md, ninth round)."""
    spec = preset_spec("smollm2-135m")
    flags = {
        "none": _config(spec),
        "down": _config(spec, fuse_down=True),
        "down-int8": _config(spec, {"dtype": "int8"}, fuse_down=True),
        "o": _config(spec, fuse_o=True),
        "both": _config(spec, fuse_o=True, fuse_down=True),
    }
    got = {k: (c.fuse_down_bf16, c.fuse_down_int8, c.fuse_o) for k, c in flags.items()}
    assert got == {"none": (False, False, False), "down": (True, False, False),
                   "down-int8": (False, True, False), "o": (False, False, True),
                   "both": (True, False, True)}
    src = b.assemble(flags["both"])
    assert "constexpr bool kFuseDownBf16 = true;" in src and "constexpr bool kFuseO = true;" in src
    assert "constexpr bool kFuseO = false;" in b.assemble(flags["none"])


def test_down_slot_reaches_the_header_and_the_fuse_down_build():
    """``down_slot = false`` reaches the header and changes the binary of a program with
    fuse_down (its down columns are no longer staged in the slot); each compiles for sm_90
    (the GPU tests run both)."""
    _compiler_or_skip()
    spec = preset_spec("smollm2-135m")
    srcs = [b.assemble(_config(spec, kernel=KernelKnobs(weights_evict_first=True, down_slot=s),
                               fuse_down=True)) for s in (True, False)]
    assert "constexpr bool kDownSlot = true;" in srcs[0]
    assert "constexpr bool kDownSlot = false;" in srcs[1]
    on, off = (b.compile_cubin(src, "sm_90") for src in srcs)
    assert on[:4] == off[:4] == b"\x7fELF" and on != off


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_fused_paths_compile(arch):
    """With the fusions compiled in only where used, the default builds above no longer
    cover them: fuse_o + fuse_down (bf16) and fuse_down (int8) compile on their own."""
    _compiler_or_skip()
    spec = preset_spec("smollm2-135m")
    for cfg in (_config(spec, fuse_o=True, fuse_down=True),
                _config(spec, {"dtype": "int8"}, fuse_down=True, threads=512, smem_bytes=0)):
        assert b.compile_cubin(b.assemble(cfg), arch)[:4] == b"\x7fELF"
