"""``amk-tune doctor``: what this machine can do, and how to fix what it cannot."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

DEFAULT_STORAGE_DIR = Path("studies")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, torch, CuPy, the GPU, compilers, weights")
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cupy() -> str:
    for dist in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x"):
        v = _version(dist)
        if v:
            return f"{dist} {v}"
    return "not installed (GPU builds need it: pip install 'amk-tune[gpu]')"


def _gpu() -> str:
    from amk_tune.device import live_gpu, live_target_name

    gpu = live_gpu()
    if gpu is None:
        return "none (use --simulate for studies; generate runs with --device cpu)"
    profile = live_target_name() or "no profile: pass --gpu NAME"
    mem = gpu.memory_bytes / 2**30
    return f"{gpu.name}, {gpu.arch}, {gpu.sms} SMs, {mem:.0f} GiB (profile: {profile})"


def _nvrtc() -> str:
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]

        _, major, minor = nvrtc.nvrtcVersion()
        return f"cuda-bindings NVRTC {major}.{minor}"
    except Exception:
        return "not available (pip install cuda-bindings nvidia-cuda-nvrtc)"


def _nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        return "not found"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    release = next((line.strip() for line in out.splitlines() if "release" in line), "")
    return f"{path} ({release})"


def _weights() -> str:
    from amk_tune.errors import WeightsNotFound
    from amk_tune.model.loaders import smollm2_gguf_path

    try:
        return f"smollm2-135m-instruct: {smollm2_gguf_path()}"
    except WeightsNotFound as e:
        return f"smollm2-135m-instruct: missing ({e})"


def _storage() -> str:
    d = DEFAULT_STORAGE_DIR.resolve()
    writable = os.access(d if d.exists() else d.parent, os.W_OK)
    return f"sqlite:///{DEFAULT_STORAGE_DIR}/amk.db ({'writable' if writable else 'NOT writable'})"


def run(args: argparse.Namespace) -> int:
    torch_v = _version("torch") or "not installed"
    rows = [
        ("python", f"{platform.python_version()} ({platform.machine()})"),
        ("amk-tune", _version("amk-tune") or "not installed (pip install -e .)"),
        ("torch", torch_v),
        ("transformers", _version("transformers") or "not installed"),
        ("optuna", _version("optuna") or "not installed"),
        ("cupy", _cupy()),
        ("gpu", _gpu() if importlib.util.find_spec("torch") else "unknown (no torch)"),
        ("nvrtc", _nvrtc()),
        ("nvcc", _nvcc()),
        ("weights", _weights()),
        ("storage", _storage()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
