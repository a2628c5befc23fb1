"""Build the megakernel: source assembly, compilation to a cubin, and the build cache.

The CUDA lives in real files (``vm/cuda``, ``instructions/cuda``). A build specialises it
through one generated header, ``amk_config.cuh``: the task encoding (``enc::``, from
vm/encoding.py) and the model/launch constants of a program (``cfg::``, ``KernelConfig``).
The ``#include "..."`` lines are inlined here, so the compiler sees one translation unit.

Compilers, first found wins: NVRTC through ``cuda-bindings`` (no GPU needed), NVRTC through
CuPy, ``nvcc``. Cubins are cached under ``$AMK_CACHE`` (default ``~/.cache/amk-tune``),
keyed by the hash of the assembled source, the options, the arch, the compiler and its
version, and the CuPy version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from amk_tune.errors import BuildError, ScheduleError
from amk_tune.model.spec import ModelSpec
from space.kernel_knobs import KernelKnobs, has_bulk_copies
from vm import encoding
from vm.lowering import WEIGHT_BYTES
from vm.program import Program, Task

ROOT = Path(__file__).resolve().parent.parent
SEARCH = (ROOT / "vm" / "cuda", ROOT / "instructions" / "cuda")
MAIN = ROOT / "vm" / "cuda" / "megakernel.cu"
KERNEL_NAME = "amk_megakernel"
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_120")
OPTIONS = ("-std=c++17",)
MIN_STAGE_BYTES = 16384  # attention scores need a scratch even when the schedule stages 0
# What a trace build stamps per task (ns of %globaltimer, thread 0): the megakernel writes
# the first three; GEMV and attention add three phases of their own (common.cuh: phase()).
TRACE_STAMPS = ("wait_start", "wait_end", "run_end", "phase1", "phase2", "phase3")


@dataclass(frozen=True)
class KernelConfig:
    """What the kernel is specialised on (``cfg::``); launches of one generation share it."""

    threads: int
    stage_bytes: int  # the prefetch ring in shared memory: ``prefetch`` slots
    max_vec: int  # longest input vector of any task (floats)
    head_dim: int
    group: int  # query heads per KV head
    rms_eps: float
    min_blocks_per_sm: int = 1  # __launch_bounds__: registers must let this many blocks fit
    rows_per_warp: int = 1  # kernel knobs (space/kernel_knobs.py)
    unroll: int = 1
    spin_sleep_ns: int = 64
    prefetch: int = 1
    lm_rows_per_warp: int = 1
    lm_unroll: int = 1
    k_split: int = 1
    lm_ring: int = 0
    ring: int = 0
    ring_pairs: bool = False
    ring_prefill: bool = False
    weights_evict_first: bool = False
    bulk_stage: bool = False
    down_slot: bool = False
    epi_floats: int = 1  # most epilogue operands of one GEMV tile (epilogue_operands)
    norm_vec: int = 0  # longest input a GEMV folds an RMSNorm into (the hidden size)
    # The fusions whose code the kernel carries only when the program has them: their
    # registers would otherwise weigh on every build (``fusions_used``).
    fuse_down_bf16: bool = False
    fuse_down_int8: bool = False
    fuse_o: bool = False
    trace: bool = False  # stamp each task's wait and run times (benchmarks/where_time_goes.py)

    @property
    def slot_bytes(self) -> int:
        return self.stage_bytes // self.prefetch // 16 * 16

    @property
    def red_floats(self) -> int:
        return 64 + 3 * self.group

    @property
    def x_offset(self) -> int:
        return self.stage_bytes

    @property
    def red_offset(self) -> int:
        return self.x_offset + _align16(self.max_vec * 4)

    @property
    def epi_offset(self) -> int:
        return self.red_offset + _align16(self.red_floats * 4)

    @property
    def part_floats(self) -> int:
        """k_split's per-warp row sums, two rounds' worth (instructions/cuda/gemv.cuh)."""
        return 2 * (self.threads // 32) * 2 * self.rows_per_warp if self.k_split > 1 else 0

    @property
    def part_offset(self) -> int:
        return self.epi_offset + _align16(self.epi_floats * 4)

    @property
    def lm_ring_bytes(self) -> int:
        """The LM head's cp.async ring: warps x stages x rows x 32 lanes x 16 B."""
        return (self.threads // 32) * self.lm_ring * self.lm_rows_per_warp * 32 * 16

    @property
    def ring_segments(self) -> int:
        """Rows per pair a stage of the layer ring holds: 2 once pairs take it."""
        return 2 if self.ring_pairs else 1

    @property
    def ring_bytes(self) -> int:
        """The layer tiles' cp.async ring, as ``lm_ring_bytes`` (both rows of a pair)."""
        return (self.threads // 32) * self.ring * self.ring_segments * self.rows_per_warp * 512

    @property
    def smem_bytes(self) -> int:
        """Dynamic shared memory of one block."""
        return self.part_offset + _align16(self.part_floats * 4)


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def min_slot_bytes(threads: int, group: int, head_dim: int) -> int:
    """The smallest prefetch slot: an attention task's scratch is its own slot
    (instructions/cuda/attention.cuh), holding one head's P @ V partials (4 floats per
    thread) and a chunk of at least 16 cache rows (K padded by 16 bytes, V, a score per
    query head)."""
    row = (2 * (head_dim // 4) + 1) * 16 + 4 * group
    return _align16(max(16 * threads, 16 * row))


def epilogue_operands(program: Program) -> int:
    """The most epilogue operands one GEMV tile of ``program`` loads in its prologue
    (instructions/cuda/gemv.cuh): a residual add reads one value per row, a QKV tile a
    RoPE cosine and sine per row pair; a silu_down tile keeps its SiLU-mul value per row
    pair there for the down projection after its rows; a tile's row copy (``fuse_o``) adds
    its rows. At least 1 (a shared array of 0 floats is none)."""
    most = 1
    for task in (t for q in program.queues for t in q if t.op == "gemv"):
        rows, kind = task.args["rows"], task.args["epilogue"]["kind"]
        pairs = rows[0][1] - rows[0][0]
        copy = task.args.get("copy")
        copied = copy["r1"] - copy["r0"] if copy else 0
        if kind == "residual":
            most = max(most, pairs * len(rows) + copied)
        elif kind in ("qkv_rope", "qkv_span"):
            most = max(most, 2 * pairs + copied)
        elif kind == "silu_down":
            most = max(most, pairs + copied)
        else:
            most = max(most, copied)
    return most


def fusions_used(program: Program) -> tuple[set[str], bool]:
    """What the kernel needs of fuse_down and fuse_o: the weight dtypes of the GEMV tiles
    with a silu_down epilogue (the gate/up tiles' down projection) or a residual copy (the
    O tiles starting its sums), and whether there is any attn_o task or row copy (attention
    with its O rows, the QKV tiles starting their sums)."""
    down: set[str] = set()
    o = False
    for task in (t for q in program.queues for t in q):
        if task.op == "attn_o":
            o = True
        elif task.op == "gemv":
            epilogue = task.args["epilogue"]
            if epilogue["kind"] == "silu_down" or epilogue.get("copy"):
                down.add(task.args.get("dtype", "bf16"))
            o = o or bool(task.args.get("copy"))
    return down, o


def config_for(program: Program, spec: ModelSpec,
               knobs: KernelKnobs | None = None) -> KernelConfig:
    """The kernel specialisation of ``program``, with the kernel ``knobs`` (default: none).
    Raises ScheduleError for knobs that do not fit the launch (``_check_knobs_fit``)."""
    cfg = _unchecked_config(program, spec, knobs or KernelKnobs())
    _check_knobs_fit(cfg)
    return cfg


def fit_rings(program: Program, spec: ModelSpec, knobs: KernelKnobs) -> KernelKnobs:
    """``knobs`` with each ring at most as deep as ``program``'s prefetch slot holds: its
    depth halved until it fits, the ring off (with ``ring_pairs`` / ``ring_prefill``) when
    not even 2 stages fit. A study reads a ring depth as an upper bound, since the slot
    follows from other knobs and the model; ``config_for`` itself refuses a ring that does
    not fit, so a hand-written knob file means what it says."""
    cfg = _unchecked_config(program, spec, knobs)

    def deepest(depth: int, need: Callable[[KernelConfig], int], field: str) -> int:
        while depth >= 2 and need(dataclasses.replace(cfg, **{field: depth})) > cfg.slot_bytes:
            depth //= 2
        return depth if depth >= 2 else 0

    ring = deepest(knobs.ring, lambda c: c.ring_bytes, "ring")
    lm_ring = deepest(knobs.lm_ring, lambda c: c.lm_ring_bytes, "lm_ring")
    return dataclasses.replace(knobs, ring=ring, lm_ring=lm_ring,
                               ring_pairs=knobs.ring_pairs and ring > 0,
                               ring_prefill=knobs.ring_prefill and (ring or lm_ring) > 0)


def takes_ring(task: Task, cfg: KernelConfig) -> bool:
    """Whether the kernel of ``cfg`` streams GEMV ``task``'s rows through a cp.async ring
    (instructions/cuda/gemv.cuh, ``gemv_tile``): the LM head whenever ``lm_ring`` > 0; a
    layer tile when ``ring`` > 0, it has one row segment or ``ring_pairs`` holds, and its
    rows (over its segments) outgrow the prefetch slot."""
    g = task.instr
    if g.epilogue.kind == "logits_argmax":
        return cfg.lm_ring > 0
    rows = sum(b - a for a, b in g.rows)
    row_bytes = g.src.n * WEIGHT_BYTES[g.dtype]
    return (cfg.ring > 0 and (len(g.rows) == 1 or cfg.ring_pairs)
            and rows * row_bytes > cfg.slot_bytes)


def _unchecked_config(program: Program, spec: ModelSpec, knobs: KernelKnobs) -> KernelConfig:
    max_vec = max(spec.hidden, spec.intermediate, spec.heads * spec.head_dim,
                  spec.group * spec.head_dim)
    fuse_down, fuse_o = fusions_used(program)
    return KernelConfig(
        threads=program.launch.threads,
        stage_bytes=_align16(max(program.launch.smem_bytes, MIN_STAGE_BYTES,
                                 knobs.prefetch * min_slot_bytes(program.launch.threads,
                                                                 spec.group, spec.head_dim))),
        max_vec=max_vec,
        head_dim=spec.head_dim,
        group=spec.group,
        rms_eps=float(spec.rms_eps),
        min_blocks_per_sm=program.launch.blocks_per_sm,
        rows_per_warp=knobs.rows_per_warp,
        unroll=knobs.unroll,
        spin_sleep_ns=knobs.spin_sleep_ns,
        prefetch=knobs.prefetch,
        lm_rows_per_warp=knobs.lm_rows_per_warp,
        lm_unroll=knobs.lm_unroll,
        k_split=knobs.k_split,
        lm_ring=knobs.lm_ring,
        ring=knobs.ring,
        ring_pairs=knobs.ring_pairs,
        ring_prefill=knobs.ring_prefill,
        weights_evict_first=knobs.weights_evict_first,
        bulk_stage=knobs.bulk_stage,
        down_slot=knobs.down_slot,
        epi_floats=epilogue_operands(program),
        norm_vec=spec.hidden,
        fuse_down_bf16="bf16" in fuse_down,
        fuse_down_int8="int8" in fuse_down,
        fuse_o=fuse_o,
    )


def _check_knobs_fit(cfg: KernelConfig) -> None:
    """Kernel knobs that depend on the launch: k_split must divide the block's warps, the
    rings must fit one prefetch slot. Raises ScheduleError (a study prunes the trial)."""
    warps = cfg.threads // 32
    if warps % cfg.k_split:
        raise ScheduleError(f"kernel knob k_split = {cfg.k_split} does not divide the "
                            f"{warps} warps of a {cfg.threads}-thread block: choose a "
                            "divisor of the warps, or more threads")
    for name, stages, rows, per_row, need in (
            ("lm_ring", cfg.lm_ring, "lm_rows_per_warp", 1, cfg.lm_ring_bytes),
            ("ring", cfg.ring, "rows_per_warp", cfg.ring_segments, cfg.ring_bytes)):
        if need > cfg.slot_bytes:
            pairs = " x 2 (ring_pairs)" if per_row == 2 else ""
            raise ScheduleError(
                f"kernel knob {name} = {stages} needs {need} B of a prefetch slot ({warps} "
                f"warps x {stages} stages x {getattr(cfg, rows)} rows{pairs} x 512 B); a slot "
                f"has {cfg.slot_bytes} B: lower {name} or {rows}, or raise smem_bytes or "
                "lower prefetch")


def _f32_literal(x: float) -> str:
    """An exact float32 literal (hex float) of ``x`` rounded to float32."""
    return f"{float(np.float32(x)).hex()}f"


def config_header(cfg: KernelConfig) -> str:
    if cfg.threads % 32 or not 32 <= cfg.threads <= 1024:
        raise BuildError(f"threads = {cfg.threads}: a multiple of 32 from 32 to 1024")
    if cfg.head_dim % 4:
        raise BuildError(f"head_dim = {cfg.head_dim} must be a multiple of 4 (RoPE pairs, "
                         "16-byte KV-cache loads)")
    scale = np.float32(1.0 / math.sqrt(cfg.head_dim))  # as the twin: float64, then float32
    lines = [
        "// GENERATED by vm/build.py: the program's constants. Do not edit.",
        "namespace cfg {",
        f"constexpr int kThreads = {cfg.threads};",
        f"constexpr int kPrefetch = {cfg.prefetch};",
        f"constexpr int kSlotBytes = {cfg.slot_bytes};",
        f"constexpr int kMaxVec = {cfg.max_vec};",
        f"constexpr int kHeadDim = {cfg.head_dim};",
        f"constexpr int kGroup = {cfg.group};",
        f"constexpr int kRedFloats = {cfg.red_floats};",
        f"constexpr int kXOffset = {cfg.x_offset};",
        f"constexpr int kRedOffset = {cfg.red_offset};",
        f"constexpr int kEpiFloats = {cfg.epi_floats};",
        f"constexpr int kNormVec = {cfg.norm_vec};",
        f"constexpr int kEpiOffset = {cfg.epi_offset};",
        f"constexpr float kRmsEps = {_f32_literal(cfg.rms_eps)};",
        f"constexpr float kAttnScale = {_f32_literal(float(scale))};",
        f"constexpr int kMinBlocksPerSm = {cfg.min_blocks_per_sm};",
        f"constexpr int kRowsPerWarp = {cfg.rows_per_warp};",
        f"constexpr int kUnroll = {cfg.unroll};",
        f"constexpr int kLmRowsPerWarp = {cfg.lm_rows_per_warp};",
        f"constexpr int kLmUnroll = {cfg.lm_unroll};",
        f"constexpr int kKSplit = {cfg.k_split};",
        f"constexpr int kLmRing = {cfg.lm_ring};",
        f"constexpr int kRing = {cfg.ring};",
        f"constexpr bool kRingPairs = {'true' if cfg.ring_pairs else 'false'};",
        f"constexpr bool kRingPrefill = {'true' if cfg.ring_prefill else 'false'};",
        f"constexpr bool kBulkStage = {'true' if cfg.bulk_stage else 'false'};",
        f"constexpr bool kWeightsEvictFirst = {'true' if cfg.weights_evict_first else 'false'};",
        f"constexpr bool kFuseDownBf16 = {'true' if cfg.fuse_down_bf16 else 'false'};",
        f"constexpr bool kFuseDownInt8 = {'true' if cfg.fuse_down_int8 else 'false'};",
        "constexpr bool kFuseDown = kFuseDownBf16 || kFuseDownInt8;",
        f"constexpr bool kDownSlot = {'true' if cfg.down_slot else 'false'};",
        f"constexpr bool kFuseO = {'true' if cfg.fuse_o else 'false'};",
        f"constexpr int kPartFloats = {cfg.part_floats};",
        f"constexpr int kPartOffset = {cfg.part_offset};",
        f"constexpr unsigned kSpinSleepNs = {cfg.spin_sleep_ns}u;",
        f"constexpr bool kTrace = {'true' if cfg.trace else 'false'};",
        f"constexpr int kTraceStamps = {len(TRACE_STAMPS)};",
        "}  // namespace cfg",
    ]
    return "\n".join(lines) + "\n"


_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.M)


def assemble(cfg: KernelConfig) -> str:
    """The whole translation unit: megakernel.cu with every quoted include inlined."""
    generated = encoding.header_text() + config_header(cfg)
    seen: set[str] = set()

    def expand(text: str, where: str) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name in seen:
                return ""
            seen.add(name)
            if name == "amk_config.cuh":
                return generated
            for d in SEARCH:
                if (d / name).is_file():
                    return f"// ---- {name}\n" + expand((d / name).read_text(), name)
            raise BuildError(f'{where}: #include "{name}" not found in {[str(d) for d in SEARCH]}')

        return _INCLUDE.sub(one, text).replace("#pragma once\n", "")

    return expand(MAIN.read_text(), MAIN.name)


# -- compilers -------------------------------------------------------------------------
def _nvrtc_bindings():
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]

        err, major, minor = nvrtc.nvrtcVersion()
        if int(err) != 0:
            return None
        return nvrtc, f"nvrtc-bindings {major}.{minor}"
    except Exception:
        return None


def compiler() -> str:
    """The compiler a build would use now, with its version (part of the cache key)."""
    found = _nvrtc_bindings()
    if found:
        return found[1]
    nvcc = shutil.which("nvcc")
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        release = re.search(r"V(\d+\.\d+\.\d+)", out)
        return f"nvcc {release.group(1) if release else '?'}"
    raise BuildError("no CUDA compiler: pip install cuda-bindings nvidia-cuda-nvrtc "
                     "(NVRTC), or put nvcc on PATH")


def _compile_nvrtc(nvrtc, source: str, arch: str, options: tuple[str, ...]) -> bytes:
    _, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"megakernel.cu", 0, [], [])
    opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
    try:
        (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        text = log.decode(errors="replace").rstrip("\x00 \n")
        if int(res) != 0:
            raise BuildError(f"NVRTC failed to compile the megakernel for {arch}", text)
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        return cubin
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _compile_nvcc(source: str, arch: str, options: tuple[str, ...]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "megakernel.cu", Path(tmp) / "megakernel.cubin"
        src.write_text(source)
        cmd = ["nvcc", "-cubin", f"-arch={arch}", *options, "-o", str(out), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"nvcc failed to compile the megakernel for {arch}",
                             (r.stdout + r.stderr).strip())
        return out.read_bytes()


def compile_cubin(source: str, arch: str, options: tuple[str, ...] = OPTIONS) -> bytes:
    """A cubin for ``arch`` (e.g. ``sm_90``); needs no GPU. BuildError carries the log."""
    found = _nvrtc_bindings()
    if found:
        return _compile_nvrtc(found[0], source, arch, options)
    if shutil.which("nvcc"):
        return _compile_nvcc(source, arch, options)
    compiler()  # raises the "no compiler" error
    raise AssertionError


# -- cache -----------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("AMK_CACHE") or Path.home() / ".cache" / "amk-tune")


def _cupy_version() -> str:
    try:
        import cupy

        return cupy.__version__
    except ImportError:
        return "none"


@dataclass(frozen=True)
class Built:
    cubin: Path
    key: str
    arch: str
    config: KernelConfig
    cached: bool  # True when the cubin came from the cache


def build(cfg: KernelConfig, arch: str, options: tuple[str, ...] = OPTIONS) -> Built:
    """Compile (or find in the cache) the megakernel specialised for ``cfg`` on ``arch``."""
    if cfg.bulk_stage and not has_bulk_copies(arch):
        raise BuildError(f"kernel knob bulk_stage = true needs TMA bulk copies (sm_90 or newer); "
                         f"{arch} has none: set bulk_stage = false")
    source = assemble(cfg)
    meta = {"arch": arch, "options": list(options), "compiler": compiler(),
            "cupy": _cupy_version(), "source_sha256": hashlib.sha256(source.encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    d = cache_dir()
    path = d / f"{key}.cubin"
    if path.is_file():
        return Built(path, key, arch, cfg, True)
    cubin = compile_cubin(source, arch, options)
    d.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(cubin)
    os.replace(tmp, path)  # atomic: a concurrent build never sees half a cubin
    (d / f"{key}.json").write_text(json.dumps({**meta, "config": asdict(cfg)}, indent=1))
    return Built(path, key, arch, cfg, False)
