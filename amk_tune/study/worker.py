"""The trial worker: a spawned subprocess that owns the device state of a study, and the
parent-side watchdog that kills and restarts it.

The worker loads the weights once (uploaded to the GPU once), computes the HF reference once
(kept on disk, so a restarted worker reads it back) and, the first time only, times the torch
baselines in its own process on the same weights. Then it evaluates one trial per request:
build, oracle, bench (``backend_gpu``), or CPU oracle + cost model (``backend_sim``): the
same worker, pipe and watchdog either way.

Protocol: plain dicts over a ``multiprocessing`` pipe.

    worker -> parent, once:  {"kind": "ready", ...backend info} | {"kind": "error", "error"}
    parent -> worker:        {"kind": "trial", "number", "schedule", "kernel_knobs", ...}
    worker -> parent:        {"kind": "result", "number", "ok": True, ...} |
                             {"kind": "result", "number", "ok": False, "error", "fatal"}
    parent -> worker:        {"kind": "stop"}

A result with ``fatal`` means the worker exits after sending it (its CUDA context may be
gone). A worker that does not answer within the trial timeout is killed; one that dies is
reaped; either way the trial fails with the reason and the next trial starts a fresh worker.

Test hook: ``AMK_TEST_FAULT="hang:3,crash:5,oracle:7"`` makes the worker hang on trial 3,
die of SIGSEGV on trial 5, and corrupt the logits of trial 7 (an oracle failure), so CI can
prove the watchdog and the infeasible path without a GPU; ``slow:2`` makes trial 2 take
``SLOW_S`` longer, pruned or not (the parent's objective waits: tests that need trials to
last, such as concurrent workers).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from amk_tune.errors import AmkError, StudyError, TrialFailed

FAULT_ENV = "AMK_TEST_FAULT"
FAULTS = ("hang", "crash", "oracle", "slow")
SLOW_S = 2.0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to start (plain data: it crosses the process boundary)."""

    backend: str  # "gpu" | "simulated"
    model: str  # a load_model source
    layers: int | None
    dtype: str  # the weight format prepared at start (trials may ask for others)
    target: str  # target profile name
    prompt_len: int  # the oracle's prompt: one launch of this many steps fills the cache
    max_steps: int  # the largest steps_per_launch a trial may ask for
    iters: int  # timed launches per trial (and per baseline)
    cache_dir: str  # where the HF reference survives a worker restart
    measure_baselines: bool = True
    weights_seed: int = 0
    quant_group: int = 0


def parse_faults(text: str) -> dict[int, str]:
    """``"hang:3,crash:5"`` -> {3: "hang", 5: "crash"}; AmkError naming a bad entry."""
    faults: dict[int, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, _, number = item.partition(":")
        if kind not in FAULTS or not number.isdigit():
            raise AmkError(f"{FAULT_ENV} entry {item!r}: write KIND:TRIAL with KIND one of "
                           f"{FAULTS}, e.g. hang:3")
        faults[int(number)] = kind
    return faults


def _make_backend(spec: WorkerSpec):
    if spec.backend == "gpu":
        from amk_tune.study.backend_gpu import GpuBackend

        return GpuBackend(spec)
    from amk_tune.study.backend_sim import SimBackend

    return SimBackend(spec)


def worker_main(conn, spec: WorkerSpec) -> None:
    """The worker process: start the backend, then answer trial requests until told to stop."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        faults = parse_faults(os.environ.get(FAULT_ENV, ""))
        backend = _make_backend(spec)
        conn.send({"kind": "ready", **backend.info()})
    except Exception as e:  # report why, whatever it is: the parent prints it
        conn.send({"kind": "error", "error": f"{type(e).__name__}: {e}"})
        return
    while True:
        msg = conn.recv()
        if msg.get("kind") != "trial":
            return
        fault = faults.get(int(msg["number"]))
        if fault == "hang":
            time.sleep(10**6)
        if fault == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            result = backend.evaluate(msg, corrupt_logits=fault == "oracle")
        except Exception as e:
            result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                      "fatal": backend.is_fatal(e)}
        conn.send({"kind": "result", "number": msg["number"], **result})
        if result.get("fatal"):
            return


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Worker:
    """The parent's handle on the worker process: start, evaluate with a watchdog, restart.

    ``info`` is the first start's ready message (device, weights hash, baselines); later
    starts (after a hang or crash) do not time the baselines again.
    """

    def __init__(self, spec: WorkerSpec, *, trial_timeout_s: float,
                 start_timeout_s: float = 900.0) -> None:
        self.spec = spec
        self.trial_timeout_s = trial_timeout_s
        self.start_timeout_s = start_timeout_s
        self.info: dict[str, Any] | None = None
        self.starts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        # One trial at a time on the worker (and its GPU): a study with several trials in
        # flight (StudyOptions.jobs) prepares the next while this one runs.
        self._busy = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start a worker and wait for it to be ready; StudyError if it cannot start."""
        spec = self.spec if self.info is None else dataclasses.replace(
            self.spec, measure_baselines=False)
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, args=(child, spec), daemon=True,
                                 name="amk-tune-worker")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        msg = self._receive(self.start_timeout_s, "start")
        if msg.get("kind") != "ready":
            self.kill()
            raise StudyError(f"the {spec.backend} worker could not start: {msg.get('error')}")
        if self.info is None:
            self.info = msg
        return msg

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def kill(self) -> str:
        """Kill the worker (if alive) and reap it; returns how it ended."""
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return "not running"
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        return _exit_reason(proc.exitcode)

    def close(self) -> None:
        """Ask the worker to stop, then make sure it has."""
        if self.alive() and self._conn is not None:
            try:
                self._conn.send({"kind": "stop"})
                self._proc.join(10)
            except (OSError, BrokenPipeError):
                pass
        self.kill()

    # -- trials ------------------------------------------------------------------------
    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one trial and wait for its result under the watchdog. TrialFailed (worker
        killed or reaped, so the next call starts a fresh one) when it hangs or dies; a
        result with ``ok: False`` when the worker itself reported the failure. Callers in
        several threads take turns: one request and its answer at a time."""
        with self._busy:
            if not self.alive():
                self.kill()
                self.start()
            self._conn.send({"kind": "trial", **request})
            msg = self._receive(self.trial_timeout_s, f"trial {request['number']}")
            if msg.get("number") != request["number"]:  # never expected: answers are in order
                how = self.kill()
                raise TrialFailed(f"trial {request['number']}: the worker answered for trial "
                                  f"{msg.get('number')!r}; killed it ({how})")
            if msg.get("fatal"):
                self._proc.join(30)
                self.kill()
            return msg

    def _receive(self, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                how = self.kill()
                raise TrialFailed(
                    f"{what}: no answer from the worker within {timeout_s:.0f} s (a hung kernel "
                    f"or worker); killed it ({how}), a fresh worker takes the next trial")
            if self._conn.poll(min(left, 1.0)):
                try:
                    return self._conn.recv()
                except (EOFError, OSError):
                    pass  # the pipe closed: the worker is gone
            elif self._proc.is_alive():
                continue
            self._proc.join(10)
            how = self.kill()
            raise TrialFailed(f"{what}: the worker died ({how}), e.g. a crashed kernel; a fresh "
                              "worker takes the next trial")
